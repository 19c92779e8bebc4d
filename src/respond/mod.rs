//! Responding: an [`Outcome`] said to the caller. What every front door
//! says the same way lives here (which identity headers are set or removed,
//! the deny headers, the problem+json body); each front door's wire format
//! is one file ([`envoy`] for the gRPC `CheckResponse`).
//!
//! The deny table itself (status, challenge, label per reason) is
//! [`crate::decision::verdict`]; this module only renders it.

pub mod envoy;
pub mod explanation;
pub mod http;

use crate::authn::Identity;
use crate::config::HeadersConfig;
use crate::decision::verdict::DenyReason;
use crate::decision::Outcome;

/// Headers for the upstream on allow, as name/value pairs and names to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamHeaders {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

/// Renders outcomes; built once from config, swapped with it on reload.
#[derive(Debug, Clone)]
pub struct Responder {
    headers: HeadersConfig,
    realm: String,
    /// Every other spelling of our identity headers (and of `authorization`
    /// when it is stripped) that a client could send: removed on allow.
    twins: Vec<String>,
}

/// Separators beyond this many are not expanded (2^n spellings); such a
/// header keeps its all-dash and all-underscore twins.
const MAX_EXPANDED_SEPARATORS: u32 = 6;

/// The spellings of `name` that upstreams may read as `name`: each '-' as
/// '-' or '_' (CGI, WSGI, PHP, nginx `underscores_in_headers` map '_' to
/// '-'), lower-case (Envoy compares header names case-insensitively, so
/// removing the lower-case name removes every case variant). `name` itself
/// is not included.
pub fn header_twins(name: &str) -> Vec<String> {
    let name = name.to_ascii_lowercase();
    let seps: Vec<usize> = name.match_indices(['-', '_']).map(|(i, _)| i).collect();
    let n = u32::try_from(seps.len()).unwrap_or(u32::MAX);
    let mut out: Vec<String> = if n <= MAX_EXPANDED_SEPARATORS {
        (0u32..1 << n)
            .map(|mask| {
                let mut b = name.clone().into_bytes();
                for (bit, &i) in seps.iter().enumerate() {
                    b[i] = if mask & (1 << bit) != 0 { b'_' } else { b'-' };
                }
                String::from_utf8(b).unwrap_or_default()
            })
            .collect()
    } else {
        vec![name.replace('_', "-"), name.replace('-', "_")]
    };
    out.retain(|v| *v != name && !v.is_empty());
    out.sort();
    out.dedup();
    out
}

impl Responder {
    pub fn new(headers: HeadersConfig, realm: String) -> Responder {
        let mut owned = vec![
            headers.client_id.clone(),
            headers.scopes.clone(),
            headers.subject.clone(),
        ];
        if headers.strip_authorization {
            owned.push("authorization".into());
        }
        let twins = owned.iter().flat_map(|n| header_twins(n)).collect();
        Responder { headers, realm, twins }
    }

    /// What the upstream learns. Every identity header we own is either set
    /// (overwriting the client's) or removed, so a client cannot smuggle one.
    /// `identity` is `None` on public routes.
    pub fn upstream_headers(&self, identity: Option<&Identity>) -> UpstreamHeaders {
        let h = &self.headers;
        let scopes = identity.map(|i| i.scopes.join(" ")).filter(|s| !s.is_empty());
        let values = [
            (
                &h.client_id,
                identity.and_then(|i| i.client_id.as_deref().map(str::to_owned)),
            ),
            (&h.scopes, scopes),
            (
                &h.subject,
                identity.and_then(|i| i.subject.as_deref().map(str::to_owned)),
            ),
        ];
        let mut out = UpstreamHeaders::default();
        for (name, value) in values {
            match value {
                Some(v) if is_header_value_safe(&v) => out.set.push((name.clone(), v)),
                _ => out.remove.push(name.clone()),
            }
        }
        if h.strip_authorization {
            out.remove.push("authorization".into());
        }
        out.remove.extend(self.twins.iter().cloned());
        out
    }

    /// Client-facing headers of a deny.
    pub fn deny_headers(&self, reason: &DenyReason) -> Vec<(String, String)> {
        let mut out = vec![
            ("content-type".to_owned(), "application/problem+json".to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        if let Some(challenge) = reason.www_authenticate(&self.realm) {
            out.push(("www-authenticate".to_owned(), challenge));
        }
        out
    }

    pub fn problem_body(reason: &DenyReason) -> String {
        serde_json::json!({
            "type": format!("urn:hydra-authz:problem:{}", reason.label()),
            "title": reason.title(),
            "status": reason.http_status(),
            "detail": reason.detail(),
        })
        .to_string()
    }
}

impl Responder {
    /// The identity the upstream may learn from this outcome: none on
    /// public routes, even when the caller sent a valid token.
    pub fn identity_of<'a>(&self, o: &'a Outcome) -> Option<&'a Identity> {
        if o.public {
            None
        } else {
            o.identity.as_deref()
        }
    }
}

/// Values come from the introspection answer; refuse anything that is not a
/// plain visible-ASCII header value rather than let Envoy reject the response.
pub(crate) fn is_header_value_safe(v: &str) -> bool {
    !v.is_empty() && v.len() <= 4096 && v.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn responder() -> Responder {
        Responder::new(HeadersConfig::default(), "api".into())
    }

    fn reader() -> Identity {
        Identity {
            client_id: Some("reader".into()),
            subject: Some("reader".into()),
            scopes: vec!["read_date".into(), "x".into()].into(),
            ..Default::default()
        }
    }

    #[test]
    fn absent_values_and_public_routes_remove_headers() {
        let anon = Identity {
            client_id: Some("c".into()),
            ..Default::default()
        };
        let h = responder().upstream_headers(Some(&anon));
        assert_eq!(h.set, vec![("x-client-id".into(), "c".into())]);
        assert_eq!(h.remove[..2], ["x-scopes".to_string(), "x-subject".to_string()]);
        let public = responder().upstream_headers(None);
        assert!(public.set.is_empty());
        assert_eq!(public.remove[..3], ["x-client-id", "x-scopes", "x-subject"]);
        for twin in ["x_client_id", "x-client_id", "x_client-id", "x_scopes", "x_subject"] {
            assert!(h.remove.iter().any(|r| r == twin), "allow removes {twin}");
            assert!(public.remove.iter().any(|r| r == twin), "public removes {twin}");
        }
    }

    #[test]
    fn unsafe_identity_values_are_removed_not_forwarded() {
        let evil = Identity {
            client_id: Some("a\r\nx-admin: 1".into()),
            ..Default::default()
        };
        assert!(responder()
            .upstream_headers(Some(&evil))
            .remove
            .contains(&"x-client-id".to_string()));
    }

    #[test]
    fn twins_cover_every_separator_spelling() {
        assert_eq!(
            header_twins("X-Client-Id"),
            ["x-client_id", "x_client-id", "x_client_id"]
        );
        assert_eq!(header_twins("x-tenant"), ["x_tenant"]);
        assert!(header_twins("authorization").is_empty());
        assert_eq!(header_twins("x_user"), ["x-user"]);
        let long = header_twins("a-b-c-d-e-f-g-h");
        assert_eq!(
            long,
            ["a-b-c-d-e-f-g-h".replace('-', "_")],
            "beyond 6 separators: the all-underscore twin"
        );
        assert_eq!(header_twins("a-b-c-d-e-f-g").len(), 63);
    }

    #[test]
    fn strip_authorization_when_configured() {
        let cfg = HeadersConfig {
            strip_authorization: true,
            ..Default::default()
        };
        let h = Responder::new(cfg, "r".into()).upstream_headers(Some(&reader()));
        assert!(h.remove.contains(&"authorization".to_string()));
    }
}
