//! Any protobuf bytes Envoy (or anyone reaching the port) might send:
//! decoding (as the server decodes them: our view of the CheckRequest) and
//! extraction never panic.
#![no_main]
use hydra_authz::extract::envoy_wire::CheckRequest;
use hydra_authz::extract::AuthzRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CheckRequest::decode(data) {
        let r = AuthzRequest::from_wire(req);
        assert!(r.path_error.is_some() || r.path.is_empty() || r.path.starts_with('/'));
        // Text or not, the headers were all counted against the limits.
        assert!(r.too_large.is_some() || r.headers.len() <= hydra_authz::extract::MAX_HEADERS);
    }
});
