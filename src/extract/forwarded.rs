//! HTTP front doors → [`AuthzRequest`]: a proxy's forward-auth call (nginx
//! `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`), which
//! describes the original request in `X-Forwarded-*` / `X-Original-*`
//! headers, and Envoy's `http_service` ext_authz, which replays the
//! original method and headers on `<envoy_path_prefix><original path>`.
//!
//! Those headers say what the request was, so they are believed only from
//! `trusted_proxies`: anyone else gets 400, never an allow. Repeated or
//! disagreeing copies are 400 too, rather than picking one.

use super::credential::{parse_authorization, Credential, CredentialProblem};
use super::headers::Headers;
use super::refusal::RequestProblem;
use super::AuthzRequest;
use axum::http::HeaderMap;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};

/// `[forward_auth]`: the HTTP front door. Off unless `addr` is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardAuthConfig {
    /// Listener for `/forward-auth` and Envoy's `http_service` calls.
    pub addr: Option<SocketAddr>,
    /// Peers whose forwarded headers are believed (CIDRs). Default: loopback.
    pub trusted_proxies: Vec<IpNet>,
    /// Envoy `http_service` `path_prefix`: a call to `<prefix>/date` asks
    /// about `/date`.
    pub envoy_path_prefix: String,
    /// Where the original method is (first present wins; all present must agree).
    pub method_headers: Vec<String>,
    /// Where the original path and query are.
    pub uri_headers: Vec<String>,
    /// Where the original host is; `host` itself when none is present.
    pub host_headers: Vec<String>,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        ForwardAuthConfig {
            addr: None,
            trusted_proxies: vec![
                IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(127, 0, 0, 0), 8)),
                IpNet::V6(ipnet::Ipv6Net::new_assert(std::net::Ipv6Addr::LOCALHOST, 128)),
            ],
            envoy_path_prefix: "/ext-authz".into(),
            method_headers: vec!["x-forwarded-method".into(), "x-original-method".into()],
            uri_headers: vec!["x-forwarded-uri".into(), "x-original-uri".into()],
            host_headers: vec!["x-forwarded-host".into()],
        }
    }
}

/// The forward-auth endpoint for nginx, Caddy and Traefik.
pub const FORWARD_AUTH_PATH: &str = "/forward-auth";

impl ForwardAuthConfig {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    pub fn validate(&self) -> Result<(), String> {
        let p = &self.envoy_path_prefix;
        if !p.starts_with('/') || p.len() < 2 || p.ends_with('/') || p == FORWARD_AUTH_PATH {
            return Err(format!(
                "envoy_path_prefix must look like \"/ext-authz\" (a leading '/', no trailing '/', not {FORWARD_AUTH_PATH}); got {p:?}"
            ));
        }
        if self.addr.is_some() && self.trusted_proxies.is_empty() {
            return Err("trusted_proxies is empty: every forward-auth call would be refused".into());
        }
        for (key, names) in [
            ("method_headers", &self.method_headers),
            ("uri_headers", &self.uri_headers),
            ("host_headers", &self.host_headers),
        ] {
            if key != "host_headers" && names.is_empty() {
                return Err(format!("{key} must name at least one header"));
            }
            if let Some(bad) = names.iter().find(|n| {
                n.is_empty()
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            }) {
                return Err(format!("{key}: {bad:?} is not a lower-case header name"));
            }
        }
        Ok(())
    }
}

/// Why a forward-auth call cannot describe a request (all 400).
const UNTRUSTED: RequestProblem = RequestProblem::ForwardedUntrusted;
const CONFLICTING: RequestProblem = RequestProblem::ForwardedConflict;
const MISSING: RequestProblem = RequestProblem::ForwardedMissing;
const NOT_TEXT: RequestProblem = RequestProblem::ForwardedNotText;

/// A `/forward-auth` call: the original request from the forwarded headers.
pub fn from_forward_auth(cfg: &ForwardAuthConfig, peer_trusted: bool, headers: &HeaderMap) -> AuthzRequest {
    if !peer_trusted {
        return refused(UNTRUSTED);
    }
    let facts = (|| -> Result<_, RequestProblem> {
        let method = one_of(headers, &cfg.method_headers)?.ok_or(MISSING)?;
        let uri = one_of(headers, &cfg.uri_headers)?.ok_or(MISSING)?;
        let host = match one_of(headers, &cfg.host_headers)? {
            Some(h) => {
                // nginx's convention (X-Original-URI, the host in Host):
                // nginx passes the client's headers to the auth subrequest,
                // so an X-Forwarded-Host the proxy did not set is the
                // client's, naming another host's rules. It must agree
                // with Host (the nginx kit sets both). Whatever else came
                // along: a client can add an X-Forwarded-Uri too.
                if headers.contains_key("x-original-uri") {
                    let real = single(headers, "host")?.unwrap_or_default();
                    if !same_host(real, h) {
                        return Err(CONFLICTING);
                    }
                }
                h
            }
            None => single(headers, "host")?.unwrap_or_default(),
        };
        Ok((method, host, uri))
    })();
    match facts {
        Ok((method, host, uri)) => from_http(method, host, uri, headers),
        Err(why) => refused(why),
    }
}

/// An Envoy `http_service` call: `path_and_query` is what followed the
/// prefix; method and host are the original request's own.
pub fn from_envoy_http(method: &str, path_and_query: &str, peer_trusted: bool, headers: &HeaderMap) -> AuthzRequest {
    if !peer_trusted {
        return refused(UNTRUSTED);
    }
    // As is: an empty or query-only target is refused by path
    // normalisation, as on the gRPC door, never read as "/".
    match single(headers, "host") {
        Ok(host) => from_http(method, host.unwrap_or_default(), path_and_query, headers),
        Err(why) => refused(why),
    }
}

/// The shared part: the same canonical forms, limits and credential rules
/// as a gRPC Check (`envoy.rs`).
fn from_http(method: &str, host: &str, uri: &str, headers: &HeaderMap) -> AuthzRequest {
    // Behind nginx, Caddy or Traefik nothing normalises the target before
    // us and the upstream gets it raw: a fragment would hide what follows
    // it from the rules (`/public#/../admin`). A real request target has
    // none (RFC 9112 §3.2). (A leading `//` is refused for every door by
    // `with_target`.)
    if uri.contains('#') {
        return refused(RequestProblem::FragmentInTarget);
    }
    let too_large = super::header_limits(headers.iter().map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())));
    let credential = credential(headers, uri);
    // As Envoy hands them over: lower-case names, repeats joined. Values
    // that are not text are kept as bytes: absent to a lookup, refused where
    // a token may be read from them.
    let lines: Vec<(&[u8], &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes()))
        .collect();
    let joined = Headers::joining(lines.iter().copied());
    AuthzRequest {
        too_large,
        credential,
        headers: joined,
        ..AuthzRequest::with_target(method, host, uri)
    }
}

/// The `authorization` header(s), joined with ',' as Envoy joins repeated
/// headers, so two of them are two credentials (400), never the first one.
fn credential(headers: &HeaderMap, uri: &str) -> Credential {
    let mut values = headers.get_all("authorization").iter();
    let Some(first) = values.next() else {
        return Credential::Missing;
    };
    if values.next().is_some() {
        return Credential::Malformed(CredentialProblem::RepeatedHeader);
    }
    let Ok(text) = first.to_str() else {
        return Credential::Malformed(CredentialProblem::NotText);
    };
    let credential = parse_authorization(Some(text));
    if credential != Credential::Missing && super::query_has_access_token(uri) {
        return Credential::Malformed(CredentialProblem::HeaderAndQuery);
    }
    credential
}

/// The value of the first of `names` present; every other present one must
/// carry the same value (nginx kits send both conventions).
fn one_of<'h>(headers: &'h HeaderMap, names: &[String]) -> Result<Option<&'h str>, RequestProblem> {
    let mut found: Option<&str> = None;
    for name in names {
        if let Some(v) = single(headers, name)? {
            match found {
                Some(earlier) if earlier != v => return Err(CONFLICTING),
                Some(_) => {}
                None => found = Some(v),
            }
        }
    }
    Ok(found)
}

/// Whether two Host values name the same host (case, port and a trailing
/// dot aside); an invalid one agrees only with itself.
fn same_host(a: &str, b: &str) -> bool {
    match (super::canonical::host(a), super::canonical::host(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn single<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, RequestProblem> {
    let mut values = headers.get_all(name).iter();
    let Some(v) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(CONFLICTING);
    }
    v.to_str().map(Some).map_err(|_| NOT_TEXT)
}

fn refused(why: RequestProblem) -> AuthzRequest {
    AuthzRequest {
        malformed: Some(why),
        method: "-".into(),
        host: "-".into(),
        path: "-".into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn cfg() -> ForwardAuthConfig {
        ForwardAuthConfig::default()
    }

    #[test]
    fn forwarded_headers_rebuild_the_request() {
        let r = from_forward_auth(
            &cfg(),
            true,
            &headers(&[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/date?x=1"),
                ("x-forwarded-host", "API.example.com:8443"),
                ("authorization", "Bearer t0k"),
            ]),
        );
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.path.as_str(), r.malformed),
            ("GET", "api.example.com", "/date", None)
        );
        assert!(matches!(r.credential, Credential::Bearer(ref t) if t.expose() == "t0k"));
    }

    #[test]
    fn nginx_names_and_host_fallback() {
        let r = from_forward_auth(
            &cfg(),
            true,
            &headers(&[
                ("x-original-method", "POST"),
                ("x-original-uri", "/echo"),
                ("host", "api.local"),
            ]),
        );
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.path.as_str()),
            ("POST", "api.local", "/echo")
        );
        assert_eq!(r.credential, Credential::Missing);
        // nginx's convention, and an X-Forwarded-Host nginx did not set
        // (the client's, passed through to the subrequest): it must not
        // name another host's rules, even beside an X-Forwarded-Uri the
        // client added. Agreeing (the kit sets both), it counts; without
        // X-Original-URI (Traefik's, Caddy's way) X-Forwarded-Host decides.
        let nginx = |xfh: &str, more: &[(&'static str, &'static str)]| {
            let mut pairs = vec![
                ("x-original-method", "GET"),
                ("x-original-uri", "/admin"),
                ("host", "admin.example.com"),
                ("x-forwarded-host", xfh),
            ];
            pairs.extend_from_slice(more);
            from_forward_auth(&cfg(), true, &headers(&pairs))
        };
        let r = nginx("public.example.com", &[]);
        assert_eq!(r.malformed, Some(RequestProblem::ForwardedConflict), "{r:?}");
        let r = nginx("Admin.Example.com.", &[]);
        assert_eq!((r.malformed, r.host.as_str()), (None, "admin.example.com"));
        let r = nginx(
            "public.example.com",
            &[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/admin")],
        );
        assert_eq!(r.malformed, Some(RequestProblem::ForwardedConflict), "{r:?}");
        let r = from_forward_auth(
            &cfg(),
            true,
            &headers(&[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/admin"),
                ("x-forwarded-host", "public.example.com"),
                ("host", "hydra-authz:9194"),
            ]),
        );
        assert_eq!((r.malformed, r.host.as_str()), (None, "public.example.com"));
    }

    #[test]
    fn untrusted_missing_repeated_or_disagreeing_is_refused() {
        let ok = [("x-forwarded-method", "GET"), ("x-forwarded-uri", "/date")];
        assert_eq!(
            from_forward_auth(&cfg(), false, &headers(&ok)).malformed,
            Some(UNTRUSTED)
        );
        for (case, want) in [
            (vec![("x-forwarded-method", "GET")], MISSING),
            (
                vec![
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-method", "POST"),
                    ("x-forwarded-uri", "/"),
                ],
                CONFLICTING,
            ),
            (
                vec![
                    ("x-forwarded-method", "GET"),
                    ("x-original-method", "POST"),
                    ("x-forwarded-uri", "/"),
                ],
                CONFLICTING,
            ),
            (
                vec![
                    ("x-forwarded-method", "GET"),
                    ("x-forwarded-uri", "/date"),
                    ("x-original-uri", "/admin"),
                ],
                CONFLICTING,
            ),
        ] {
            assert_eq!(
                from_forward_auth(&cfg(), true, &headers(&case)).malformed,
                Some(want),
                "{case:?}"
            );
        }
        let agreeing = [
            ("x-forwarded-method", "GET"),
            ("x-original-method", "GET"),
            ("x-forwarded-uri", "/date"),
            ("x-original-uri", "/date"),
        ];
        assert_eq!(from_forward_auth(&cfg(), true, &headers(&agreeing)).malformed, None);
    }

    #[test]
    fn the_same_refusals_as_a_grpc_check() {
        let r = from_forward_auth(
            &cfg(),
            true,
            &headers(&[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/date/../admin")]),
        );
        assert!(r.path_error.is_some(), "dot segments");
        let r = from_forward_auth(
            &cfg(),
            true,
            &headers(&[("x-forwarded-method", "get"), ("x-forwarded-uri", "/date")]),
        );
        assert!(r.malformed.is_some(), "lower-case method");
        let two = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/date"),
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b"),
        ]);
        assert!(matches!(
            from_forward_auth(&cfg(), true, &two).credential,
            Credential::Malformed(_)
        ));
        let query = headers(&[
            ("x-forwarded-method", "GET"),
            ("x-forwarded-uri", "/date?access_token=x"),
            ("authorization", "Bearer a"),
        ]);
        assert!(matches!(
            from_forward_auth(&cfg(), true, &query).credential,
            Credential::Malformed(_)
        ));
    }

    #[test]
    fn envoy_http_service_path_after_the_prefix() {
        let h = headers(&[("host", "api.local"), ("authorization", "Bearer t")]);
        let r = from_envoy_http("GET", "/date?q=1", true, &h);
        assert_eq!(
            (r.method.as_str(), r.host.as_str(), r.path.as_str()),
            ("GET", "api.local", "/date")
        );
        assert!(
            from_envoy_http("GET", "", true, &h).path_error.is_some(),
            "no path is not \"/\""
        );
        assert!(from_envoy_http("GET", "?x", true, &h).path_error.is_some());
        for hostile in ["/public#/../admin", "//x/admin"] {
            let r = from_forward_auth(
                &cfg(),
                true,
                &headers(&[("x-forwarded-method", "GET"), ("x-forwarded-uri", hostile)]),
            );
            assert!(r.malformed.is_some(), "{hostile}");
            assert!(
                from_envoy_http("GET", hostile, true, &h).malformed.is_some(),
                "{hostile}"
            );
        }
        assert_eq!(from_envoy_http("GET", "/date", false, &h).malformed, Some(UNTRUSTED));
        // The same canonical forms as the gRPC door (`with_target`): a name
        // in brackets is no host, and a leading `//` is refused there.
        let bracketed = from_forward_auth(
            &cfg(),
            true,
            &headers(&[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/admin"),
                ("x-forwarded-host", "[status.example.com]"),
            ]),
        );
        assert_eq!(bracketed.malformed, Some(RequestProblem::HostInvalid));
        let r = from_envoy_http("GET", "//x/admin?q=1", true, &h);
        assert_eq!(r.malformed, Some(RequestProblem::AuthorityLikeTarget));
        assert_eq!(r.path, "//x/admin", "logged as sent, not as /x/admin");
    }

    #[test]
    fn trusted_proxies_default_to_loopback() {
        let c = cfg();
        assert!(c.trusts("127.0.0.1".parse().expect("ip")));
        assert!(c.trusts("127.9.9.9".parse().expect("ip")));
        assert!(c.trusts("::1".parse().expect("ip")));
        assert!(c.trusts("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(!c.trusts("10.0.0.1".parse().expect("ip")));
        assert!(!c.trusts("::ffff:10.0.0.1".parse().expect("ip")));
    }

    #[test]
    fn validation() {
        assert!(cfg().validate().is_ok());
        for prefix in ["", "/", "ext", "/ext/", "/forward-auth"] {
            let c = ForwardAuthConfig {
                envoy_path_prefix: prefix.into(),
                ..cfg()
            };
            assert!(c.validate().is_err(), "{prefix:?}");
        }
        let c = ForwardAuthConfig {
            method_headers: vec!["X-Method".into()],
            ..cfg()
        };
        assert!(c.validate().is_err());
    }
}
