//! Which scopes does this route need? Asked in a fixed order: Envoy per-route
//! `context_extensions`, then route metadata (`hydra_authz` namespace), then
//! our own `[[rules]]`. The first source that speaks decides.

use super::rules::{RuleSet, SlashForms};
use crate::extract::refusal::PathProblem;
use crate::extract::AuthzRequest;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Rule id reported when per-route `context_extensions` decided.
pub const FROM_CONTEXT_EXTENSIONS: &str = "context_extensions";
/// Rule id reported when route metadata decided.
pub const FROM_ROUTE_METADATA: &str = "route_metadata";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// A `[[rules]]` id, or one of the `FROM_*` constants.
    pub rule_id: Arc<str>,
    pub public: bool,
    /// All required; empty means any active token will do.
    pub scopes: Arc<[String]>,
    /// When non-empty, one of these sets must also be granted in full.
    pub any_of: Arc<[Vec<String>]>,
    /// No token: allowed anonymously. A token: verified as usual.
    pub optional: bool,
    /// Where the token may be; empty: the `Authorization` header only.
    pub token_from: std::sync::Arc<[crate::extract::sources::TokenSource]>,
    /// Claim conditions the token must meet (rules only).
    pub conditions: std::sync::Arc<super::conditions::Conditions>,
}

impl RoutePolicy {
    /// What this policy asks for, in words (explanations).
    pub fn describe(&self) -> String {
        let optional = if self.optional { "token optional; if given " } else { "" };
        if self.public {
            "public".to_owned()
        } else if self.any_of.is_empty() {
            format!("{optional}requires scopes {:?}", self.scopes)
        } else {
            format!(
                "{optional}requires scopes {:?} and one of the alternative sets {:?}",
                self.scopes, self.any_of
            )
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Policy(RoutePolicy),
    /// Nothing describes this route: default deny.
    NoRule,
    /// A public or optional subtree matched the path with its trailing `/`,
    /// but no rule covers the bare form a router may serve it as
    /// ([`SlashForms::Unruled`]): default deny, as for the bare path.
    NoRuleForBareForm,
    /// The route carries policy we cannot read; deny rather than guess.
    Misconfigured(String),
    /// Two spellings a router may serve as one fall under different
    /// non-public rules: with and without the trailing `/`
    /// ([`RuleSet::trailing_slash`]), or in lower case
    /// ([`RuleSet::letter_case`]). Refused, not guessed.
    Ambiguous(PathProblem),
}

pub fn resolve(req: &AuthzRequest, rules: &RuleSet) -> Resolution {
    if let Some(r) = from_context_extensions(req) {
        return r;
    }
    if let Some(r) = req.route_metadata.as_ref().and_then(from_metadata) {
        return r;
    }
    let mut found = rules.find(&req.method, &req.host, &req.path);
    match rules.trailing_slash(&req.method, &req.host, &req.path, found) {
        SlashForms::Agree => {}
        SlashForms::Stricter(rule) => found = Some(rule),
        SlashForms::Unruled => return Resolution::NoRuleForBareForm,
        SlashForms::Ambiguous => return Resolution::Ambiguous(PathProblem::AmbiguousTrailingSlash),
    }
    match rules.letter_case(&req.method, &req.host, &req.path, found) {
        SlashForms::Agree | SlashForms::Unruled => {}
        SlashForms::Stricter(rule) => found = Some(rule),
        SlashForms::Ambiguous => return Resolution::Ambiguous(PathProblem::AmbiguousLetterCase),
    }
    match found {
        Some(rule) => Resolution::Policy(RoutePolicy {
            rule_id: rule.id.clone(),
            public: rule.public,
            scopes: rule.scopes.clone(),
            any_of: rule.any_of.clone(),
            optional: rule.optional,
            conditions: rule.conditions.clone(),
            token_from: rule.token_from.clone(),
        }),
        None => Resolution::NoRule,
    }
}

fn from_context_extensions(req: &AuthzRequest) -> Option<Resolution> {
    let ext = &req.context_extensions;
    let public = match ext.get("public").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Some(Resolution::Misconfigured(format!(
                "context_extensions public must be \"true\" or \"false\", got {other:?}"
            )))
        }
    };
    let scopes = ext.get("required_scopes");
    if !public && scopes.is_none() {
        return None;
    }
    let scopes = match scopes.map(|s| scope_list(s)) {
        None => Vec::new(),
        Some(Some(list)) => list,
        Some(None) => {
            return Some(Resolution::Misconfigured(
                "context_extensions required_scopes must be scope tokens separated by spaces".into(),
            ))
        }
    };
    Some(policy(FROM_CONTEXT_EXTENSIONS, public, scopes))
}

/// Space-separated scope tokens (RFC 6749 §3.3), or `None` when one is not
/// a scope token: it would be quoted in the challenge as it is.
fn scope_list(s: &str) -> Option<Vec<String>> {
    s.split_ascii_whitespace()
        .map(|s| crate::decision::scopes::is_scope_token(s).then(|| s.to_owned()))
        .collect()
}

fn from_metadata(meta: &Map<String, Value>) -> Option<Resolution> {
    let public = match meta.get("public") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Some(Resolution::Misconfigured(
                "route metadata hydra_authz.public must be a bool".into(),
            ))
        }
    };
    let scopes = match meta.get("required_scopes") {
        None => None,
        Some(Value::String(s)) => match scope_list(s) {
            Some(list) => Some(list),
            None => {
                return Some(Resolution::Misconfigured(
                    "route metadata hydra_authz.required_scopes must be scope tokens separated by spaces".into(),
                ))
            }
        },
        Some(Value::Array(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for v in list {
                match v {
                    Value::String(s) if crate::decision::scopes::is_scope_token(s) => out.push(s.clone()),
                    _ => {
                        return Some(Resolution::Misconfigured(
                            "route metadata hydra_authz.required_scopes must list scope tokens".into(),
                        ))
                    }
                }
            }
            Some(out)
        }
        Some(_) => {
            return Some(Resolution::Misconfigured(
                "route metadata hydra_authz.required_scopes must be a string or a list".into(),
            ))
        }
    };
    if !public && scopes.is_none() {
        return None;
    }
    Some(policy(FROM_ROUTE_METADATA, public, scopes.unwrap_or_default()))
}

fn policy(rule_id: &str, public: bool, scopes: Vec<String>) -> Resolution {
    if public && !scopes.is_empty() {
        return Resolution::Misconfigured(format!("{rule_id}: a public route cannot also require scopes"));
    }
    Resolution::Policy(RoutePolicy {
        rule_id: rule_id.into(),
        public,
        scopes: scopes.into(),
        any_of: Arc::default(),
        optional: false,
        conditions: Default::default(),
        token_from: std::sync::Arc::new([]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::config::RuleConfig;
    use serde_json::json;

    fn rules() -> RuleSet {
        RuleSet::compile(&[RuleConfig {
            id: "date".into(),
            methods: vec!["GET".into()],
            path: "/date".into(),
            scopes: vec!["read_date".into()],
            ..Default::default()
        }])
        .expect("compile")
    }

    fn req(ext: &[(&str, &str)], meta: Option<Map<String, Value>>) -> AuthzRequest {
        AuthzRequest {
            method: "GET".into(),
            path: "/date".into(),
            context_extensions: ext.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            route_metadata: meta,
            ..Default::default()
        }
    }

    fn s(v: &str) -> Value {
        json!(v)
    }

    fn meta(fields: Vec<(&str, Value)>) -> Map<String, Value> {
        fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    fn scopes_of(r: Resolution) -> (String, bool, Vec<String>) {
        match r {
            Resolution::Policy(p) => (p.rule_id.to_string(), p.public, p.scopes.to_vec()),
            other => panic!("expected a policy, got {other:?}"),
        }
    }

    #[test]
    fn context_extensions_win_over_everything() {
        let m = meta(vec![("required_scopes", s("meta"))]);
        let (id, public, scopes) = scopes_of(resolve(&req(&[("required_scopes", "a \t b\n")], Some(m)), &rules()));
        assert_eq!(
            (id.as_str(), public, scopes),
            (FROM_CONTEXT_EXTENSIONS, false, vec!["a".into(), "b".into()])
        );
        let (_, public, _) = scopes_of(resolve(&req(&[("public", "true")], None), &rules()));
        assert!(public);
    }

    #[test]
    fn route_metadata_before_rules_string_or_list() {
        let list = json!(["x", "y"]);
        let (id, _, scopes) = scopes_of(resolve(
            &req(&[], Some(meta(vec![("required_scopes", list)]))),
            &rules(),
        ));
        assert_eq!(
            (id.as_str(), scopes),
            (FROM_ROUTE_METADATA, vec!["x".to_string(), "y".to_string()])
        );
        let (_, _, scopes) = scopes_of(resolve(
            &req(&[], Some(meta(vec![("required_scopes", s("z"))]))),
            &rules(),
        ));
        assert_eq!(scopes, vec!["z".to_string()]);
    }

    #[test]
    fn falls_back_to_rules_then_no_rule() {
        let (id, _, scopes) = scopes_of(resolve(&req(&[("public", "false")], Some(Map::new())), &rules()));
        assert_eq!((id.as_str(), scopes), ("date", vec!["read_date".to_string()]));
        let mut other = req(&[], None);
        other.path = "/other".into();
        assert_eq!(resolve(&other, &rules()), Resolution::NoRule);
    }

    #[test]
    fn unreadable_policy_is_misconfigured_not_allowed() {
        for r in [
            req(&[("public", "yes")], None),
            req(&[("public", "true"), ("required_scopes", "a")], None),
            req(&[], Some(meta(vec![("public", s("true"))]))),
            req(&[], Some(meta(vec![("required_scopes", json!(1.0))]))),
            // Quoted in the challenge as they are: a quote, a backslash or
            // a control character would break (or forge) its parameters.
            req(&[("required_scopes", "a\" error=\"x")], None),
            req(&[("required_scopes", "a\\b")], None),
            req(&[("required_scopes", "a\u{7f}b")], None),
            req(&[], Some(meta(vec![("required_scopes", s("read \"x"))]))),
            req(&[], Some(meta(vec![("required_scopes", json!(["ok", "a\"b"]))]))),
            req(&[], Some(meta(vec![("required_scopes", json!(["caf\u{e9}"]))]))),
        ] {
            assert!(matches!(resolve(&r, &rules()), Resolution::Misconfigured(_)), "{r:?}");
        }
    }
}
