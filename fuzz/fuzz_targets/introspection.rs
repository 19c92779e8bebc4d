//! Introspection answers: parsing arbitrary bytes never panics, and nothing
//! but a JSON boolean `true` in `active` counts as active.
#![no_main]
use hydra_authz::authn::Introspection;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = Introspection::parse(data) {
        if i.active {
            let v: serde_json::Value = serde_json::from_slice(data).expect("parsed before");
            assert_eq!(v.get("active"), Some(&serde_json::Value::Bool(true)));
        }
        let _ = i.identity();
    }
});
