//! Introspection answers: parsing arbitrary bytes never panics, and nothing
//! but a JSON boolean `true` in the top-level `active` counts as active.
#![no_main]
use hydra_authz::authn::Introspection;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = Introspection::parse(data) {
        if i.active {
            // The reference reads the top-level object with each value kept
            // raw, so it judges `active` alone: a field we ignore may hold a
            // number too large for serde_json::Value, which is still JSON.
            let top: HashMap<String, &RawValue> = serde_json::from_slice(data).expect("an object, parsed before");
            assert_eq!(top.get("active").map(|v| v.get()), Some("true"));
        }
        let _ = i.identity();
    }
});
