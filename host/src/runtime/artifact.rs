//! Compiled components shared between nodes through the database, sealed with a key only the
//! nodes hold.
//!
//! `Component::deserialize` runs whatever machine code it is given, so a node must never load
//! an artifact it cannot prove a node made. Each shared artifact carries an HMAC-SHA256 over the
//! module's digest, the engine fingerprint and the artifact, keyed by a secret from the nodes'
//! environment (`HATCHERY_SECRET_KEY`): a row written by anyone else, or torn, is compiled from
//! the module's bytes instead. Without a key nothing is shared and every node compiles.

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use super::cache::Digest;

/// Identifies the layout below; bumped if it changes.
const MAGIC: &[u8; 8] = b"hchart01";
const MAC_LEN: usize = 32;

/// The key that seals and opens shared artifacts.
#[derive(Clone)]
pub struct ArtifactKey([u8; 32]);

impl std::fmt::Debug for ArtifactKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ArtifactKey(…)")
    }
}

impl ArtifactKey {
    /// The artifact key derived from the node's secret (a domain-separated hash, so the same
    /// secret can key other things without their MACs ever standing for an artifact's).
    pub fn derive(secret: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"hatchery compiled-artifact key v1\0");
        hash.update(secret.as_bytes());
        Self(hash.finalize().into())
    }

    fn mac(&self, digest: Digest, engine: u64, artifact: &[u8]) -> Hmac<Sha256> {
        // A 32-byte key is always a valid HMAC key.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(&digest.0);
        mac.update(&engine.to_le_bytes());
        mac.update(artifact);
        mac
    }

    /// `artifact` sealed for module `digest` compiled by engine `engine`.
    pub(crate) fn seal(&self, digest: Digest, engine: u64, artifact: &[u8]) -> Vec<u8> {
        let tag = self.mac(digest, engine, artifact).finalize().into_bytes();
        let mut sealed = Vec::with_capacity(MAGIC.len() + MAC_LEN + artifact.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(&tag);
        sealed.extend_from_slice(artifact);
        sealed
    }

    /// The artifact inside `sealed`, if this key sealed it for this module and engine.
    pub(crate) fn open<'a>(
        &self,
        digest: Digest,
        engine: u64,
        sealed: &'a [u8],
    ) -> Option<&'a [u8]> {
        let rest = sealed.strip_prefix(MAGIC.as_slice())?;
        let (tag, artifact) = rest.split_at_checked(MAC_LEN)?;
        // Constant-time comparison.
        self.mac(digest, engine, artifact).verify_slice(tag).ok()?;
        Some(artifact)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_key_module_and_engine_open_a_sealed_artifact() {
        let key = ArtifactKey::derive("a secret of the fleet");
        let digest = Digest::of(b"module");
        let sealed = key.seal(digest, 7, b"machine code");
        assert_eq!(key.open(digest, 7, &sealed), Some(&b"machine code"[..]));
        assert_eq!(
            ArtifactKey::derive("another").open(digest, 7, &sealed),
            None
        );
        assert_eq!(key.open(Digest::of(b"other"), 7, &sealed), None);
        assert_eq!(key.open(digest, 8, &sealed), None);
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open(digest, 7, &tampered), None);
        assert_eq!(key.open(digest, 7, &sealed[..20]), None);
        assert_eq!(key.open(digest, 7, b""), None);
    }
}
