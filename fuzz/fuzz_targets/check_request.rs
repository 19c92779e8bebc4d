//! Any protobuf bytes Envoy (or anyone reaching the port) might send:
//! decoding and extraction never panic.
#![no_main]
use envoy_types::pb::envoy::service::auth::v3::CheckRequest;
use hydra_authz::extract::AuthzRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = CheckRequest::decode(data) {
        let r = AuthzRequest::from_check(req);
        assert!(r.path_error.is_some() || r.path.is_empty() || r.path.starts_with('/'));
    }
});
