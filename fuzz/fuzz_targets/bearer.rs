//! Authorization header parsing: never panics; an accepted token is one
//! RFC 6750 b64token of bounded length, taken from the input.
#![no_main]
use hydra_authz::extract::credential::{parse_authorization, Credential, MAX_TOKEN_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    if let Credential::Bearer(t) = parse_authorization(Some(data)) {
        let t = t.expose();
        assert!(!t.is_empty() && t.len() <= MAX_TOKEN_LEN);
        assert!(data.contains(t));
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')));
    }
});
