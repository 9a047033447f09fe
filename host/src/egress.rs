//! Outbound HTTP allowlists: the patterns an admin (a tenant's ceiling) and a tenant (its
//! allowlist, within the ceiling) set, how a request is matched against them, and which
//! resolved addresses a request may reach.
//!
//! Pure policy: no I/O. The runtime's `wasi:http` hooks (`runtime::network`) ask it before
//! they connect, after resolving the host themselves, so a name that resolves to a private
//! address (SSRF, DNS rebinding) is refused unless a pattern names that address literally.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One allowlist entry: `"api.example.com"`, `"*.example.com:8443"`, `"127.0.0.1:8080"`, or
/// `{"host": "api.example.com", "ports": [443], "schemes": ["https"], "methods": ["GET"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PatternInput", into = "PatternOutput")]
pub struct EgressPattern {
    host: Host,
    /// `None`: any port.
    ports: Option<Vec<u16>>,
    /// `None`: http and https.
    schemes: Option<Vec<String>>,
    /// `None`: any method. Upper case.
    methods: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// A DNS name, lower case.
    Name(String),
    /// `*.suffix`: any name ending in `.suffix` (not `suffix` itself).
    Wildcard(String),
    /// An address, which names itself explicitly (private ones included).
    Address(IpAddr),
}

impl Host {
    fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_ascii_lowercase();
        let unbracketed = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(&text);
        if let Ok(address) = unbracketed.parse::<IpAddr>() {
            return Ok(Self::Address(address));
        }
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!(
                "`{text}` is not a host name, `*.domain` or an IP address"
            ));
        }
        Ok(if wildcard {
            Self::Wildcard(name.to_owned())
        } else {
            Self::Name(name.to_owned())
        })
    }

    fn matches(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        match self {
            Self::Name(name) => *name == host,
            Self::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            Self::Address(address) => host.parse::<IpAddr>().is_ok_and(|h| h == *address),
        }
    }

    /// Whether every host `other` matches, this matches too.
    fn covers(&self, other: &Host) -> bool {
        match (self, other) {
            (Self::Wildcard(suffix), Self::Name(name) | Self::Wildcard(name)) => {
                name == suffix && matches!(other, Self::Wildcard(_))
                    || name
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|head| head.len() > 1 && head.ends_with('.'))
            }
            _ => self == other,
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Name(name) => name.clone(),
            Self::Wildcard(suffix) => format!("*.{suffix}"),
            Self::Address(IpAddr::V6(address)) => format!("[{address}]"),
            Self::Address(address) => address.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PatternInput {
    Text(String),
    Object {
        host: String,
        #[serde(default)]
        ports: Option<Vec<u16>>,
        #[serde(default)]
        schemes: Option<Vec<String>>,
        #[serde(default)]
        methods: Option<Vec<String>>,
    },
}

#[derive(Serialize)]
struct PatternOutput {
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ports: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    schemes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<Vec<String>>,
}

impl From<EgressPattern> for PatternOutput {
    fn from(pattern: EgressPattern) -> Self {
        Self {
            host: pattern.host.text(),
            ports: pattern.ports,
            schemes: pattern.schemes,
            methods: pattern.methods,
        }
    }
}

impl TryFrom<PatternInput> for EgressPattern {
    type Error = String;

    fn try_from(input: PatternInput) -> Result<Self, String> {
        match input {
            PatternInput::Text(text) => Self::parse(&text),
            PatternInput::Object {
                host,
                ports,
                schemes,
                methods,
            } => {
                let schemes = schemes
                    .map(|schemes| {
                        schemes
                            .into_iter()
                            .map(|s| {
                                let s = s.to_ascii_lowercase();
                                match s.as_str() {
                                    "http" | "https" => Ok(s),
                                    _ => Err(format!("scheme `{s}` is not http or https")),
                                }
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?;
                let methods = methods
                    .map(|methods| {
                        methods
                            .into_iter()
                            .map(|m| {
                                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                                    Err(format!("`{m}` is not an HTTP method"))
                                } else {
                                    Ok(m.to_ascii_uppercase())
                                }
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()?;
                if ports
                    .as_ref()
                    .is_some_and(|p| p.is_empty() || p.contains(&0))
                    || schemes.as_ref().is_some_and(Vec::is_empty)
                    || methods.as_ref().is_some_and(Vec::is_empty)
                {
                    return Err(
                        "`ports`, `schemes` and `methods` must be omitted (any) or non-empty"
                            .into(),
                    );
                }
                Ok(Self {
                    host: Host::parse(&host)?,
                    ports,
                    schemes,
                    methods,
                })
            }
        }
    }
}

/// The parts of an outgoing request a pattern is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The host as the guest wrote it.
    pub host: &'a str,
    /// The port, the scheme's default when none was written.
    pub port: u16,
    /// The method, upper case.
    pub method: &'a str,
}

impl EgressPattern {
    /// Parses the string form `host[:port]` (`[v6]:port` for IPv6 with a port).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (host, port) = match text.rsplit_once(':') {
            // An IPv6 address without brackets has colons but no port.
            Some((host, port))
                if !host.contains(':') || (host.starts_with('[') && host.ends_with(']')) =>
            {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("`{port}` in `{text}` is not a port"))?;
                (host, Some(vec![port]))
            }
            _ => (text, None),
        };
        Ok(Self {
            host: Host::parse(host)?,
            ports: port,
            schemes: None,
            methods: None,
        })
    }

    /// Whether a request to `destination` matches this pattern.
    pub fn matches(&self, destination: &Destination<'_>) -> bool {
        self.host.matches(destination.host)
            && self
                .ports
                .as_ref()
                .is_none_or(|ports| ports.contains(&destination.port))
            && self
                .schemes
                .as_ref()
                .is_none_or(|schemes| schemes.iter().any(|s| s == destination.scheme))
            && self
                .methods
                .as_ref()
                .is_none_or(|methods| methods.iter().any(|m| m == destination.method))
    }

    /// Whether every request this pattern matches, `self` matches too.
    pub fn covers(&self, other: &EgressPattern) -> bool {
        fn subset<T: PartialEq>(outer: &Option<Vec<T>>, inner: &Option<Vec<T>>) -> bool {
            match (outer, inner) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(outer), Some(inner)) => inner.iter().all(|i| outer.contains(i)),
            }
        }
        self.host.covers(&other.host)
            && subset(&self.ports, &other.ports)
            && subset(&self.schemes, &other.schemes)
            && subset(&self.methods, &other.methods)
    }

    /// Whether this pattern names `address` literally (the only way to reach a private one).
    pub fn names_address(&self, address: IpAddr) -> bool {
        self.host == Host::Address(address)
    }
}

/// Whether `address` is one a task may reach only through a pattern naming it: loopback,
/// private, link-local, unspecified, shared (CGNAT), multicast, documentation or broadcast.
pub fn is_internal(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
                || a >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// A tenant's outbound HTTP policy: a request must match its allowlist and its ceiling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Set by the tenant, within the ceiling.
    pub allow: Vec<EgressPattern>,
    /// Set by the admin.
    pub ceiling: Vec<EgressPattern>,
}

/// Why a request was refused before any connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No allowlist pattern matches.
    #[error("{method} {scheme}://{host}:{port} is not on this tenant's egress allowlist")]
    NotAllowed {
        /// The method.
        method: String,
        /// The scheme.
        scheme: String,
        /// The host.
        host: String,
        /// The port.
        port: u16,
    },
    /// The host resolved to an internal address no pattern names.
    #[error(
        "{host} resolves to {address}, an internal address; only a pattern naming {address} itself allows it"
    )]
    InternalAddress {
        /// The host.
        host: String,
        /// The address.
        address: IpAddr,
    },
}

impl EgressPolicy {
    /// Whether nothing at all is allowed.
    pub fn is_closed(&self) -> bool {
        self.allow.is_empty() || self.ceiling.is_empty()
    }

    /// The allowlist patterns that match `destination` (empty: refused), the ceiling applied.
    pub fn check(&self, destination: &Destination<'_>) -> Result<Vec<&EgressPattern>, Refusal> {
        let within_ceiling = self.ceiling.iter().any(|c| c.matches(destination));
        let matching: Vec<&EgressPattern> = self
            .allow
            .iter()
            .filter(|p| p.matches(destination))
            .collect();
        if !within_ceiling || matching.is_empty() {
            return Err(Refusal::NotAllowed {
                method: destination.method.to_owned(),
                scheme: destination.scheme.to_owned(),
                host: destination.host.to_owned(),
                port: destination.port,
            });
        }
        Ok(matching)
    }

    /// Checks a resolved address of a destination whose matching patterns are `matching`.
    pub fn check_address(
        host: &str,
        address: IpAddr,
        matching: &[&EgressPattern],
    ) -> Result<(), Refusal> {
        if is_internal(address) && !matching.iter().any(|p| p.names_address(address)) {
            return Err(Refusal::InternalAddress {
                host: host.to_owned(),
                address,
            });
        }
        Ok(())
    }

    /// The first tenant pattern that no ceiling pattern covers, if any.
    pub fn outside_ceiling<'a>(
        allow: &'a [EgressPattern],
        ceiling: &[EgressPattern],
    ) -> Option<&'a EgressPattern> {
        allow
            .iter()
            .find(|pattern| !ceiling.iter().any(|c| c.covers(pattern)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(json: &str) -> EgressPattern {
        serde_json::from_str(json).expect("valid pattern")
    }

    fn to(
        scheme: &'static str,
        host: &'static str,
        port: u16,
        method: &'static str,
    ) -> Destination<'static> {
        Destination {
            scheme,
            host,
            port,
            method,
        }
    }

    #[test]
    fn strings_and_objects_parse_and_print_back() {
        assert_eq!(
            serde_json::to_value(pattern(r#""*.Example.com:8443""#)).expect("json"),
            serde_json::json!({"host": "*.example.com", "ports": [8443]})
        );
        assert_eq!(
            serde_json::to_value(pattern(r#""[::1]:8080""#)).expect("json"),
            serde_json::json!({"host": "[::1]", "ports": [8080]})
        );
        assert_eq!(
            serde_json::to_value(pattern(
                r#"{"host": "api.example.com", "schemes": ["HTTPS"], "methods": ["get"]}"#
            ))
            .expect("json"),
            serde_json::json!({"host": "api.example.com", "schemes": ["https"], "methods": ["GET"]})
        );
        for bad in [
            r#""""#,
            r#""exa mple.com""#,
            r#""example.com:0""#,
            r#""example.com:http""#,
            r#"{"host": "a.com", "schemes": ["ftp"]}"#,
            r#"{"host": "a.com", "ports": []}"#,
            r#"{"host": "a.com", "methods": ["G T"]}"#,
            r#"{"hots": "a.com"}"#,
        ] {
            assert!(serde_json::from_str::<EgressPattern>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn requests_match_host_port_scheme_and_method() {
        let api = pattern(r#"{"host": "api.example.com", "methods": ["GET"]}"#);
        assert!(api.matches(&to("https", "API.example.com", 443, "GET")));
        assert!(!api.matches(&to("https", "api.example.com", 443, "POST")));
        assert!(!api.matches(&to("https", "evil-api.example.com", 443, "GET")));
        let wild = pattern(r#""*.example.com:8443""#);
        assert!(wild.matches(&to("https", "a.b.example.com", 8443, "PUT")));
        assert!(!wild.matches(&to("https", "example.com", 8443, "PUT")));
        assert!(!wild.matches(&to("https", "notexample.com", 8443, "PUT")));
        assert!(!wild.matches(&to("https", "a.example.com", 443, "PUT")));
        let local = pattern(r#""127.0.0.1:8080""#);
        assert!(local.matches(&to("http", "127.0.0.1", 8080, "GET")));
        assert!(local.names_address("127.0.0.1".parse().expect("ip")));
        assert!(!api.names_address("127.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn a_ceiling_covers_only_what_it_allows_at_least() {
        let ceiling = [
            pattern(r#""*.example.com""#),
            pattern(r#"{"host": "pay.io", "ports": [443], "methods": ["POST", "GET"]}"#),
        ];
        for inside in [
            r#""api.example.com""#,
            r#""*.eu.example.com:8443""#,
            r#"{"host": "pay.io", "ports": [443], "methods": ["POST"]}"#,
        ] {
            assert_eq!(
                EgressPolicy::outside_ceiling(&[pattern(inside)], &ceiling),
                None,
                "{inside}"
            );
        }
        for outside in [
            r#""example.com""#,
            r#""pay.io""#,
            r#"{"host": "pay.io", "ports": [443]}"#,
            r#"{"host": "pay.io", "ports": [443], "methods": ["DELETE"]}"#,
            r#""127.0.0.1""#,
        ] {
            assert!(
                EgressPolicy::outside_ceiling(&[pattern(outside)], &ceiling).is_some(),
                "{outside}"
            );
        }
    }

    #[test]
    fn internal_addresses_are_refused_unless_named() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(internal.parse().expect("ip")), "{internal}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_internal(public.parse().expect("ip")), "{public}");
        }
        let named = pattern(r#""127.0.0.1:8080""#);
        let by_name = pattern(r#""localtest.me:8080""#);
        let loopback: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!(EgressPolicy::check_address("127.0.0.1", loopback, &[&named]).is_ok());
        assert!(EgressPolicy::check_address("localtest.me", loopback, &[&by_name]).is_err());
    }

    #[test]
    fn a_request_needs_both_the_allowlist_and_the_ceiling() {
        let policy = EgressPolicy {
            allow: vec![pattern(r#""api.example.com""#)],
            ceiling: vec![pattern(r#""*.example.com""#)],
        };
        assert!(
            policy
                .check(&to("https", "api.example.com", 443, "GET"))
                .is_ok()
        );
        assert!(
            policy
                .check(&to("https", "www.example.com", 443, "GET"))
                .is_err()
        );
        let lowered = EgressPolicy {
            ceiling: vec![pattern(r#""www.example.com""#)],
            ..policy
        };
        assert!(
            lowered
                .check(&to("https", "api.example.com", 443, "GET"))
                .is_err()
        );
        assert!(EgressPolicy::default().is_closed());
    }
}
