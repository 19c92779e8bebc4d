//! Any protobuf bytes Envoy (or anyone reaching the port) might send:
//! decoding (as the server decodes them: our view of the CheckRequest) and
//! extraction never panic, and bytes that are not text where a decision
//! reads text are refused, never guessed at.
#![no_main]
use hydra_authz::extract::envoy_wire::CheckRequest;
use hydra_authz::extract::AuthzRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CheckRequest::decode(data) {
        let not_text = req
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref())
            .is_some_and(|h| [&h.method, &h.host, &h.path].iter().any(|b| std::str::from_utf8(b).is_err()));
        let r = AuthzRequest::from_wire(req);
        assert!(r.path_error.is_some() || r.path.is_empty() || r.path.starts_with('/'));
        if not_text {
            assert_eq!(r.malformed.map(|m| m.label()), Some("not_text"));
        }
        // An oversized request keeps none of its headers.
        assert!(r.too_large.is_none() || r.headers.is_empty());
    }
});
