//! Secrets: values a tenant stores for its tasks (API keys), encrypted at rest with
//! XChaCha20-Poly1305 under a key derived from the nodes' `HATCHERY_SECRET_KEY`, bound to their
//! tenant and name, and never shown again.
//!
//! A task of a permitted workflow reads them as environment variables, or has the host put one
//! into an outgoing request's header (`{{secret:NAME}}`) without ever seeing it; their values
//! are redacted from what the API shows of logs, errors and outputs.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

/// Longest secret name; names are environment variable names.
pub const MAX_NAME_LEN: usize = 128;
/// Largest secret value.
pub const MAX_VALUE_LEN: usize = 16 << 10;

/// Whether `name` can be a secret: an environment variable name, `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= MAX_NAME_LEN
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Encrypts and decrypts secrets.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(…)")
    }
}

/// A sealed secret as stored: a random nonce and the ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// 24 random bytes.
    pub nonce: Vec<u8>,
    /// The value, encrypted and authenticated.
    pub ciphertext: Vec<u8>,
}

/// Associated data: a sealed value opens only as the secret of the tenant and name it was
/// sealed for (a row copied to another name or tenant does not decrypt).
fn binding(tenant: Uuid, name: &str) -> Vec<u8> {
    let mut aad = tenant.as_bytes().to_vec();
    aad.extend_from_slice(name.as_bytes());
    aad
}

impl SecretBox {
    /// The box keyed from the fleet's secret (a domain-separated hash of it).
    pub fn derive(secret: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"hatchery secrets key v1\0");
        hash.update(secret.as_bytes());
        let key: [u8; 32] = hash.finalize().into();
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Seals `value` as secret `name` of `tenant`.
    pub fn seal(&self, tenant: Uuid, name: &str, value: &str) -> Result<Sealed, String> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let aad = binding(tenant, name);
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| "encryption failed".to_owned())?;
        Ok(Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// The value of `sealed`, if this key sealed it as secret `name` of `tenant`.
    pub fn open(&self, tenant: Uuid, name: &str, sealed: &Sealed) -> Option<String> {
        if sealed.nonce.len() != 24 {
            return None;
        }
        let aad = binding(tenant, name);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

/// The secrets one attempt may use: (name, value), for its environment, header placeholders
/// and redaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSecrets(pub Vec<(String, String)>);

/// What replaces a secret's value wherever it would be shown.
pub fn redaction(name: &str) -> String {
    format!("[secret {name}]")
}

impl TaskSecrets {
    /// `text` with every secret value (as written, and as escaped inside a JSON string)
    /// replaced by its redaction. Longer values first, so one that contains another goes whole.
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<&(String, String)> = self
            .0
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .collect();
        secrets.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
        let mut text = text.to_owned();
        for (name, value) in secrets {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), &redaction(name));
            }
            let escaped = serde_json::to_string(value).unwrap_or_default();
            let escaped = escaped.trim_matches('"');
            if escaped != value && text.contains(escaped) {
                text = text.replace(escaped, &redaction(name));
            }
        }
        text
    }

    /// `header` with each `{{secret:NAME}}` replaced by the value; `Err(name)` for a name
    /// this attempt may not read.
    pub fn substitute(&self, header: &str) -> Result<String, String> {
        let mut out = String::with_capacity(header.len());
        let mut rest = header;
        while let Some(start) = rest.find("{{secret:") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "{{secret:".len()..];
            let Some(end) = after.find("}}") else {
                out.push_str(&rest[start..]);
                return Ok(out);
            };
            let name = &after[..end];
            let value = self
                .0
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v)
                .ok_or_else(|| name.to_owned())?;
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_tenant_and_name() {
        let keys = SecretBox::derive("the fleet's secret");
        let tenant = Uuid::now_v7();
        let sealed = keys
            .seal(tenant, "STRIPE_KEY", "sk_live_123")
            .expect("seals");
        assert!(!sealed.ciphertext.windows(11).any(|w| w == b"sk_live_123"));
        assert_eq!(
            keys.open(tenant, "STRIPE_KEY", &sealed).as_deref(),
            Some("sk_live_123")
        );
        assert_eq!(
            SecretBox::derive("another").open(tenant, "STRIPE_KEY", &sealed),
            None
        );
        assert_eq!(keys.open(Uuid::now_v7(), "STRIPE_KEY", &sealed), None);
        assert_eq!(keys.open(tenant, "OTHER", &sealed), None);
        let again = keys
            .seal(tenant, "STRIPE_KEY", "sk_live_123")
            .expect("seals");
        assert_ne!(again.nonce, sealed.nonce, "a fresh nonce each time");
    }

    #[test]
    fn names_are_environment_variable_names() {
        for good in ["STRIPE_KEY", "_x", "a1"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "É"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn values_are_redacted_raw_and_json_escaped_and_placeholders_filled() {
        let secrets = TaskSecrets(vec![
            ("TOKEN".into(), "abc\"def".into()),
            ("SHORT".into(), "ab".into()),
        ]);
        assert_eq!(
            secrets.redact(r#"raw abc"def, json {"t":"abc\"def"}, ab"#),
            r#"raw [secret TOKEN], json {"t":"[secret TOKEN]"}, [secret SHORT]"#
        );
        assert_eq!(
            secrets.substitute("Bearer {{secret:SHORT}}!").as_deref(),
            Ok("Bearer ab!")
        );
        assert_eq!(
            secrets.substitute("{{secret:NOPE}}"),
            Err("NOPE".to_owned())
        );
        assert_eq!(
            secrets.substitute("no placeholder").as_deref(),
            Ok("no placeholder")
        );
    }
}
