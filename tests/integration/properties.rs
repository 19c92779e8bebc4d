//! Property tests for path normalization and rule matching: a path never
//! matches a rule whose pattern it does not satisfy after normalization.

use hydra_authz::config::RuleConfig;
use hydra_authz::decision::rules::RuleSet;
use hydra_authz::extract::path::normalize;
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_~-]{1,6}",
        Just(".".to_string()),
        Just("..".to_string()),
        Just("".to_string()),
        Just("%2e%2e".to_string()),
        Just("%2F".to_string()),
        Just("%64ate".to_string()),
        Just("a;b".to_string()),
        Just("%00".to_string()),
        Just("x\\y".to_string()),
        Just("42%3Apublish".to_string()),
        Just("%40me".to_string()),
        Just("a%2cb%3f".to_string()),
        // Raw where a URL may not hold them, and their escapes.
        Just("st\u{e4}dte".to_string()),
        Just("st%c3%a4dte".to_string()),
        Just("a|b".to_string()),
        Just("a%7Cb".to_string()),
        Just("[x]".to_string()),
    ]
}

fn raw_path() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 0..6).prop_map(|s| format!("/{}", s.join("/")))
}

fn literal_pattern() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z0-9_-]{1,5}", 1..5)
}

fn rules(pattern: &str) -> RuleSet {
    RuleSet::compile(&[RuleConfig {
        id: "r".into(),
        path: pattern.into(),
        ..Default::default()
    }])
    .expect("compiles")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Accepted paths are canonical: idempotent, no empty, dot, or parameter segments, no backslashes.
    #[test]
    fn normalized_paths_are_canonical(raw in raw_path()) {
        if let Ok(p) = normalize(&raw) {
            prop_assert_eq!(normalize(&p), Ok(p.clone()));
            prop_assert!(p.starts_with('/'));
            prop_assert!(!p.contains("//"));
            prop_assert!(!p.contains('\\') && !p.contains(';'));
            prop_assert!(p.split('/').all(|s| s != "." && s != ".."));
            // One spelling: nothing a URL may not hold raw.
            prop_assert!(p.bytes().all(|b| b.is_ascii_graphic()), "{}", p);
            prop_assert!(!p.contains(['"', '<', '>', '[', ']', '^', '`', '{', '|', '}']), "{}", p);
        }
    }

    /// A rule written escaped meets the raw spelling of its path too.
    #[test]
    fn escaped_rules_meet_raw_spellings(raw in raw_path()) {
        let set = rules("/**/st%C3%A4dte/**");
        if let Ok(p) = normalize(&raw) {
            let spelt = raw.contains("st\u{e4}dte/") || raw.contains("st%c3%a4dte/");
            if spelt && !p.ends_with("dte") {
                prop_assert!(set.find("GET", "h", &p).is_some(), "{} from {}", p, raw);
            }
        }
    }

    /// A literal rule matches exactly the one normalized path it spells.
    #[test]
    fn literal_rules_match_only_their_path(pattern in literal_pattern(), raw in raw_path()) {
        let pattern = format!("/{}", pattern.join("/"));
        let set = rules(&pattern);
        if let Ok(p) = normalize(&raw) {
            prop_assert_eq!(set.find("GET", "h", &p).is_some(), p == pattern, "{} vs {}", p, pattern);
        }
        prop_assert!(set.find("GET", "h", &pattern).is_some());
    }

    /// `{param}` and `*` match exactly one non-empty segment; all other segments literally.
    #[test]
    fn segment_wildcards_match_one_segment(pattern in literal_pattern(), at in 0usize..4, star in any::<bool>(), raw in raw_path()) {
        let at = at % pattern.len();
        let mut parts = pattern.clone();
        parts[at] = if star { "*".into() } else { "{id}".into() };
        let set = rules(&format!("/{}", parts.join("/")));
        if let Ok(p) = normalize(&raw) {
            let segs: Vec<&str> = p.trim_start_matches('/').split('/').collect();
            let expected = segs.len() == parts.len()
                && segs.iter().zip(&parts).enumerate().all(|(i, (s, want))| if i == at { !s.is_empty() } else { s == want });
            prop_assert_eq!(set.find("GET", "h", &p).is_some(), expected, "{} vs {:?}", p, parts);
        }
    }

    /// `/prefix/**` matches everything below the prefix, nothing else (not the bare prefix).
    #[test]
    fn double_star_stays_under_its_prefix(prefix in literal_pattern(), raw in raw_path()) {
        let base = format!("/{}", prefix.join("/"));
        let set = rules(&format!("{base}/**"));
        if let Ok(p) = normalize(&raw) {
            let inside = p.starts_with(&format!("{base}/"));
            prop_assert_eq!(set.find("GET", "h", &p).is_some(), inside, "{} vs {}/**", p, base);
        }
    }
}
