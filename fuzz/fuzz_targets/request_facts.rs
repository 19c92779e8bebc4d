//! The canonical forms and caller-chosen values of the hardening work:
//! methods, hosts, `grpc-timeout`, JWT headers and escaped log values.
//! Never panics; what is accepted is in the documented form.
#![no_main]
use hydra_authz::authn::jwt::looks_like_jwt;
use hydra_authz::authn::resilience::{caller_deadline, parse_grpc_timeout};
use hydra_authz::extract::canonical;
use hydra_authz::telemetry::Escaped;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Ok(m) = canonical::method(data) {
        assert!(!m.is_empty() && m.len() <= 64);
        assert!(!m.bytes().any(|b| b.is_ascii_lowercase() || b.is_ascii_control() || b == b' '));
    }
    if let Ok(h) = canonical::host(data) {
        assert!(!h.bytes().any(|b| b.is_ascii_uppercase() || b.is_ascii_control() || b == b' ' || b == b'/'));
        assert!(!h.ends_with('.'));
    }
    let shown = canonical::shown(data);
    assert!(shown.bytes().all(|b| b.is_ascii_graphic()));
    if let Some(d) = parse_grpc_timeout(data) {
        assert!(d <= std::time::Duration::from_secs(99_999_999 * 3600));
    }
    let _ = caller_deadline(Some(data));
    let _ = looks_like_jwt(data);
    let escaped = Escaped(data).to_string();
    assert!(!escaped.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'));
});
