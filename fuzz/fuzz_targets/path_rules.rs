//! Path normalization and rule matching: never panics; accepted paths are
//! canonical; a path matches a literal rule only if it equals it, and a
//! `/admin/**` rule only below `/admin/`.
#![no_main]
use hydra_authz::config::RuleConfig;
use hydra_authz::extract::path::normalize;
use hydra_authz::decision::rules::RuleSet;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| {
        let r = |id: &str, path: &str| RuleConfig {
            id: id.into(),
            path: path.into(),
            ..Default::default()
        };
        RuleSet::compile(&[r("date", "/date"), r("item", "/items/{id}"), r("admin", "/admin/**")]).expect("rules")
    })
}

fuzz_target!(|data: &str| {
    let Ok(p) = normalize(data) else { return };
    assert_eq!(normalize(&p).as_deref(), Ok(p.as_str()), "idempotent");
    assert!(!p.contains("//") && !p.contains('\\') && !p.contains(';'));
    // One spelling per path: what a URL may not hold raw is escaped.
    assert!(p.bytes().all(|b| b.is_ascii_graphic()), "raw byte in {p:?}");
    assert!(!p.contains(['"', '<', '>', '[', ']', '^', '`', '{', '|', '}']), "{p:?}");
    assert!(p.split('/').all(|s| s != "." && s != ".."));
    match rules().find("GET", "h", &p).map(|r| &*r.id) {
        Some("date") => assert_eq!(p, "/date"),
        Some("item") => {
            let rest = p.strip_prefix("/items/").expect("under /items/");
            assert!(!rest.is_empty() && !rest.contains('/'));
        }
        Some("admin") => assert!(p.starts_with("/admin/")),
        _ => {}
    }
});
