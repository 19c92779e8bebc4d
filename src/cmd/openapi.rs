//! Import `[[rules]]` from an OpenAPI 3.0/3.1 document: one rule per
//! path + method, scopes from the operation's (or the document's) `security`
//! requirements for one OAuth2 / OpenID Connect scheme.
//!
//! Mapping (safe by default):
//! - `security: []` or an empty requirement `{}` among the alternatives → public;
//! - one requirement naming our scheme → `scopes`; several → `any_of`;
//! - requirements that name only other schemes (API keys, ...) cannot be
//!   checked by hydra-authz and are dropped with a warning;
//! - no `security` anywhere → no rule (default deny), with a warning.
//!
//! The document is read as plain YAML/JSON (3.0 and 3.1 share the parts we
//! use), so no model of the whole specification is needed.

use crate::config::RuleConfig;
use serde::Serialize;
use serde_json::{Map, Value};

/// Operations in the order their rules are written for one path. `head`
/// before `get`: a GET rule also covers HEAD (see `decision::rules`), so a
/// HEAD operation the document secures differently must come first.
const METHODS: [&str; 8] = ["head", "get", "put", "post", "delete", "options", "patch", "trace"];

#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    #[error("cannot parse the document as YAML or JSON: {0}")]
    Parse(String),
    #[error("not an OpenAPI 3.x document (missing `openapi: 3.x`)")]
    NotOpenApi,
    #[error("{0}")]
    Scheme(String),
}

#[derive(Debug, Default)]
pub struct Imported {
    pub rules: Vec<RuleConfig>,
    pub warnings: Vec<String>,
}

/// Parse YAML or JSON (JSON is YAML).
pub fn parse(text: &str) -> Result<Value, OpenApiError> {
    let doc: Value = serde_norway::from_str(text).map_err(|e| OpenApiError::Parse(e.to_string()))?;
    match doc.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.") => Ok(doc),
        _ => Err(OpenApiError::NotOpenApi),
    }
}

/// Every `(METHOD, path template)` the document declares, in document order,
/// with the servers' base path (or `base_path`) in front.
pub fn operations(doc: &Value, base_path: Option<&str>) -> Vec<(String, String)> {
    let mut ignored = Vec::new();
    let mut out = Vec::new();
    for (path, item) in path_items(doc, base_path, &mut ignored) {
        for m in METHODS {
            if item.get(m).is_some_and(Value::is_object) {
                out.push((m.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// `(full path, path item)` for every entry of `paths`, following local
/// `$ref`s (OpenAPI 3.1 `components/pathItems`).
fn path_items<'a>(doc: &'a Value, base_path: Option<&str>, warnings: &mut Vec<String>) -> Vec<(String, &'a Value)> {
    let base = match base_path {
        Some(b) => b.trim_end_matches('/').to_owned(),
        None => servers_base_path(doc, warnings),
    };
    let mut out = Vec::new();
    for (path, item) in doc.get("paths").and_then(Value::as_object).into_iter().flatten() {
        let item = match item.get("$ref").and_then(Value::as_str) {
            None => item,
            Some(r) => match r.strip_prefix('#').and_then(|p| doc.pointer(p)) {
                Some(target) => target,
                None => {
                    warnings.push(format!("{path}: cannot follow $ref {r:?} (only local refs); skipped"));
                    continue;
                }
            },
        };
        out.push((format!("{base}{path}"), item));
    }
    out
}

/// The path part the document's `servers` share (`https://api.example/v1`
/// → `/v1`): Envoy sees it in front of every `paths` key. Empty when there
/// is none or the servers disagree (with a warning: use --base-path).
fn servers_base_path(doc: &Value, warnings: &mut Vec<String>) -> String {
    let urls: Vec<&str> = doc
        .get("servers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("url").and_then(Value::as_str))
        .collect();
    let mut bases: Vec<String> = urls
        .iter()
        .map(|u| {
            let after_authority = match u.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("", |i| &rest[i..]),
                None => u,
            };
            after_authority.trim_end_matches('/').to_owned()
        })
        .collect();
    bases.sort();
    bases.dedup();
    match bases.as_slice() {
        [] => String::new(),
        [one] if one.contains('{') => {
            warnings.push(format!(
                "servers URL path {one:?} has variables; paths used as written (set --base-path)"
            ));
            String::new()
        }
        [one] => one.clone(),
        many => {
            warnings.push(format!(
                "servers have different base paths {many:?}; paths used as written (set --base-path)"
            ));
            String::new()
        }
    }
}

/// A rule pattern for an OpenAPI path template: whole-segment `{name}` stays
/// a segment parameter; a template inside a segment (`{id}.json`,
/// `{a}-{b}`) becomes a within-segment `*`.
fn rule_path(template: &str) -> String {
    // Literal text in the form requests are matched in (`/städte` is
    // `/st%C3%A4dte`); text it cannot take stays, for the loader to refuse.
    use crate::extract::path::in_matched_form as literal;
    template
        .split('/')
        .map(|seg| {
            let whole = seg.starts_with('{') && seg.ends_with('}') && seg.matches('{').count() == 1;
            if whole {
                return seg.to_owned();
            }
            if !seg.contains('{') {
                return literal(seg);
            }
            let mut out = String::new();
            let mut rest = seg;
            while let Some(open) = rest.find('{') {
                out.push_str(&literal(&rest[..open]));
                // `{a}{b}` is one wildcard, never `**` (any depth).
                if !out.ends_with('*') {
                    out.push('*');
                }
                rest = rest[open..].find('}').map_or("", |close| &rest[open + close + 1..]);
            }
            out.push_str(&literal(rest));
            out
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `base_path`: put in front of every path instead of the servers' own.
pub fn import(doc: &Value, scheme: Option<&str>, base_path: Option<&str>) -> Result<Imported, OpenApiError> {
    let scheme = pick_scheme(doc, scheme)?;
    let global = doc.get("security");
    let mut out = Imported::default();
    let mut ids = std::collections::HashSet::new();
    for (path, item) in path_items(doc, base_path, &mut out.warnings) {
        let path = &path;
        for m in METHODS {
            let Some(op) = item.get(m).and_then(Value::as_object) else {
                continue;
            };
            let method = m.to_ascii_uppercase();
            let what = format!("{method} {path}");
            // Operation-level security replaces the document's.
            let Some(requirements) = op.get("security").or(global) else {
                out.warnings.push(format!(
                    "{what}: no security requirements declared; no rule emitted (default deny)"
                ));
                continue;
            };
            let Some(requirements) = requirements.as_array() else {
                out.warnings
                    .push(format!("{what}: `security` is not a list; no rule emitted"));
                continue;
            };
            let mut rule = RuleConfig {
                id: unique_id(&mut ids, op, &method, path),
                methods: vec![method.clone()],
                path: rule_path(path),
                ..Default::default()
            };
            let sets = match alternatives(requirements, &scheme, &what, &mut out.warnings) {
                Requirement::Public => {
                    rule.public = true;
                    None
                }
                // `{}` beside requirements: anonymous callers pass, and a
                // token, if given, must meet one of them (never ignored).
                Requirement::Optional(sets) => {
                    rule.optional = true;
                    Some(sets)
                }
                Requirement::Scopes(sets) => Some(sets),
            };
            match sets {
                None => {}
                Some(mut sets) if sets.len() == 1 => rule.scopes = sets.remove(0),
                Some(sets) if !sets.is_empty() => rule.any_of = sets,
                Some(_) => {
                    out.warnings.push(format!(
                        "{what}: no requirement uses scheme {scheme:?}; no rule emitted"
                    ));
                    continue;
                }
            }
            out.rules.push(rule);
        }
    }
    // OpenAPI matches concrete paths before templated ones (`/users/me` before
    // `/users/{id}`); rules are first-match, so order them that way (stable).
    // A `**` (springdoc writes `/files/**`) matches any depth: after every
    // pattern without one, or `/files/**` (public) would come before
    // `/files/{id}/acl` (scoped) and decide it.
    out.rules.sort_by_key(|r| {
        let any_depth = r.path.split('/').any(|s| s == "**");
        (any_depth, r.path.split('/').filter(|s| s.contains(['{', '*'])).count())
    });
    Ok(out)
}

enum Requirement {
    Public,
    /// `{}` and at least one requirement of the scheme.
    Optional(Vec<Vec<String>>),
    Scopes(Vec<Vec<String>>),
}

fn alternatives(reqs: &[Value], scheme: &str, what: &str, warnings: &mut Vec<String>) -> Requirement {
    if reqs.is_empty() {
        return Requirement::Public;
    }
    let mut sets = Vec::new();
    let mut anonymous = false;
    for req in reqs {
        let Some(obj) = req.as_object() else { continue };
        if obj.is_empty() {
            // `{}`: authentication is optional for this operation.
            anonymous = true;
            continue;
        }
        match obj.get(scheme) {
            Some(scopes) => {
                let others: Vec<&String> = obj.keys().filter(|k| *k != scheme).collect();
                if !others.is_empty() {
                    warnings.push(format!(
                        "{what}: also requires {others:?}, which hydra-authz does not check"
                    ));
                }
                // Not a list of strings (`admin`, `~`, `[42]`): never read
                // as "no scopes", which would let any valid token pass.
                let Some(scopes) = scopes.as_array().and_then(|list| {
                    list.iter()
                        .map(|s| s.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                }) else {
                    warnings.push(format!(
                        "{what}: the scopes of {scheme:?} are not a list of strings; alternative dropped"
                    ));
                    continue;
                };
                if !sets.contains(&scopes) {
                    sets.push(scopes);
                }
            }
            None => warnings.push(format!(
                "{what}: alternative {:?} does not use scheme {scheme:?}; dropped",
                obj.keys().collect::<Vec<_>>()
            )),
        }
    }
    // An alternative with no scopes means any valid token passes.
    if sets.iter().any(Vec::is_empty) {
        sets = vec![Vec::new()];
    }
    match (anonymous, sets.is_empty()) {
        (true, true) => Requirement::Public,
        (true, false) => Requirement::Optional(sets),
        (false, _) => Requirement::Scopes(sets),
    }
}

fn pick_scheme(doc: &Value, wanted: Option<&str>) -> Result<String, OpenApiError> {
    let empty = Map::new();
    let schemes = doc
        .pointer("/components/securitySchemes")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let is_oauth = |v: &Value| matches!(v.get("type").and_then(Value::as_str), Some("oauth2" | "openIdConnect"));
    if let Some(name) = wanted {
        return match schemes.get(name) {
            Some(v) if is_oauth(v) => Ok(name.to_owned()),
            Some(_) => Err(OpenApiError::Scheme(format!(
                "security scheme {name:?} is not oauth2 or openIdConnect"
            ))),
            None => Err(OpenApiError::Scheme(format!("no security scheme named {name:?}"))),
        };
    }
    let candidates: Vec<&String> = schemes.iter().filter(|(_, v)| is_oauth(v)).map(|(k, _)| k).collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(OpenApiError::Scheme(
            "the document defines no oauth2 or openIdConnect security scheme".into(),
        )),
        many => Err(OpenApiError::Scheme(format!(
            "several OAuth2 schemes ({many:?}); choose one with --scheme"
        ))),
    }
}

fn unique_id(ids: &mut std::collections::HashSet<String>, op: &Map<String, Value>, method: &str, path: &str) -> String {
    let base = op
        .get("operationId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let slug: String = path
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect();
            format!("{}-{}", method.to_ascii_lowercase(), slug.trim_matches('-'))
        });
    let mut id = base.clone();
    let mut n = 2;
    while !ids.insert(id.clone()) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// `[[rules]]` TOML, showing only the keys that matter.
pub fn to_toml(rules: &[RuleConfig]) -> String {
    #[derive(Serialize)]
    struct Out<'a> {
        rules: Vec<OutRule<'a>>,
    }
    #[derive(Serialize)]
    struct OutRule<'a> {
        id: &'a str,
        methods: &'a [String],
        path: &'a str,
        #[serde(skip_serializing_if = "<[String]>::is_empty")]
        scopes: &'a [String],
        #[serde(skip_serializing_if = "<[Vec<String>]>::is_empty")]
        any_of: &'a [Vec<String>],
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        public: bool,
    }
    let out = Out {
        rules: rules
            .iter()
            .map(|r| OutRule {
                id: &r.id,
                methods: &r.methods,
                path: &r.path,
                scopes: &r.scopes,
                any_of: &r.any_of,
                public: r.public,
            })
            .collect(),
    };
    toml::to_string(&out).unwrap_or_else(|e| format!("# cannot render rules: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> Value {
        parse(yaml).expect("valid document")
    }

    const BASE: &str = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\ncomponents:\n  securitySchemes:\n    oauth:\n      type: oauth2\n      flows: {clientCredentials: {tokenUrl: 'https://h/oauth2/token', scopes: {a: a, b: b, c: c}}}\n    key: {type: apiKey, in: header, name: x-key}\n";

    fn imported(paths: &str) -> Imported {
        import(&doc(&format!("{BASE}{paths}")), None, None).expect("import")
    }

    #[test]
    fn operation_security_overrides_global_and_empty_means_public() {
        let i = imported(
            "security: [{oauth: [a]}]\npaths:\n  /x:\n    get: {}\n    post: {security: [{oauth: [b]}]}\n  /health:\n    get: {security: []}\n",
        );
        let r: Vec<_> = i
            .rules
            .iter()
            .map(|r| (r.methods[0].as_str(), r.path.as_str(), r.scopes.clone(), r.public))
            .collect();
        assert_eq!(
            r,
            vec![
                ("GET", "/x", vec!["a".to_string()], false),
                ("POST", "/x", vec!["b".to_string()], false),
                ("GET", "/health", vec![], true),
            ]
        );
    }

    /// `[{}, {oauth: [a]}]`: anonymous callers pass, and a token, if given,
    /// must be valid and carry `a`: an optional rule, not a public one
    /// (which would pass a revoked token on unverified).
    #[test]
    fn anonymous_beside_a_requirement_is_optional() {
        let i = imported("paths:\n  /feed:\n    get: {security: [{}, {oauth: [a]}]}\n");
        let r = &i.rules[0];
        assert!(r.optional && !r.public, "{r:?}");
        assert_eq!(r.scopes, ["a".to_string()]);
        let i = imported("paths:\n  /open:\n    get: {security: [{}]}\n");
        assert!(i.rules[0].public && !i.rules[0].optional);
    }

    /// Scopes that are not a list of strings are never "no scopes" (any
    /// valid token); and a `**` path key (springdoc's `/files/**`) comes
    /// after the templated paths it would otherwise decide.
    #[test]
    fn odd_scopes_and_any_depth_keys_never_weaken_a_rule() {
        for odd in ["admin", "~", "[42]"] {
            let i = imported(&format!("paths:\n  /x:\n    get: {{security: [{{oauth: {odd}}}]}}\n"));
            assert!(i.rules.is_empty(), "{odd}: {:?}", i.rules);
            assert!(
                i.warnings.iter().any(|w| w.contains("not a list of strings")),
                "{odd}: {:?}",
                i.warnings
            );
        }
        let i = imported(
            "paths:\n  /files/**:\n    get: {security: []}\n  /files/{id}/acl:\n    get: {security: [{oauth: [admin]}]}\n",
        );
        let set = crate::decision::rules::RuleSet::compile(&i.rules).expect("rules");
        let rule = set.find("GET", "", "/files/1/acl").expect("a rule");
        assert_eq!(rule.scopes.as_ref(), ["admin".to_string()], "{:?}", i.rules);
    }

    /// A HEAD operation secured differently from GET keeps its own policy:
    /// its rule comes before the GET rule, which would cover HEAD too.
    #[test]
    fn a_head_operation_keeps_its_own_rule_before_get() {
        let i = imported("paths:\n  /r:\n    get: {security: []}\n    head: {security: [{oauth: [a]}]}\n");
        let rules = crate::decision::rules::RuleSet::compile(&i.rules).expect("rules");
        let id = |m: &str| rules.find(m, "", "/r").map(|r| r.id.clone());
        let head = i.rules.iter().find(|r| r.methods == ["HEAD"]).expect("head rule");
        let get = i.rules.iter().find(|r| r.methods == ["GET"]).expect("get rule");
        assert_eq!(id("HEAD"), Some(head.id.as_str().into()), "HEAD needs scope a");
        assert_eq!(id("GET"), Some(get.id.as_str().into()), "GET is public");
        assert!(!head.public && get.public);
    }

    /// A path with non-ASCII or characters a URL escapes becomes a rule in
    /// the escaped form requests are matched in, whichever way they came.
    #[test]
    fn non_ascii_paths_become_rules_requests_can_match() {
        let i = imported("paths:\n  /st\u{e4}dte/{id}:\n    get: {security: [{oauth: [a]}]}\n  /a|b/x{n}:\n    get: {security: [{oauth: [b]}]}\n");
        let paths: Vec<_> = i.rules.iter().map(|r| r.path.as_str()).collect();
        assert!(
            paths.contains(&"/st%C3%A4dte/{id}") && paths.contains(&"/a%7Cb/x*"),
            "{paths:?}"
        );
        let rules = crate::decision::rules::RuleSet::compile(&i.rules).expect("rules compile");
        for raw in ["/st\u{e4}dte/1", "/st%c3%a4dte/1", "/a|b/x1", "/a%7cb/x1"] {
            let path = crate::extract::path::normalize(raw).expect("normalized");
            assert!(
                rules.find("GET", "", &path).is_some(),
                "{raw:?} as {path:?} must meet its rule"
            );
        }
    }

    #[test]
    fn alternatives_become_any_of_and_foreign_schemes_are_dropped() {
        let i = imported("paths:\n  /x:\n    get:\n      security: [{oauth: [a, b]}, {oauth: [c]}, {key: []}]\n");
        assert_eq!(
            i.rules[0].any_of,
            vec![vec!["a".to_string(), "b".to_string()], vec!["c".to_string()]]
        );
        assert!(i.warnings.iter().any(|w| w.contains("dropped")), "{:?}", i.warnings);
    }

    #[test]
    fn missing_security_is_default_deny_with_a_warning() {
        let i = imported("paths:\n  /x:\n    get: {operationId: getX}\n");
        assert!(i.rules.is_empty());
        assert!(i.warnings[0].contains("default deny"));
        let i = imported("paths:\n  /x:\n    get: {security: [{key: []}]}\n");
        assert!(i.rules.is_empty(), "API-key-only operations cannot be checked");
    }

    #[test]
    fn optional_auth_is_optional_and_concrete_paths_come_first() {
        let i = imported("paths:\n  /u/{id}:\n    get: {security: [{oauth: [a]}]}\n  /u/me:\n    get: {security: [{}, {oauth: [a]}]}\n");
        assert_eq!(i.rules[0].path, "/u/me");
        assert!(i.rules[0].optional && !i.rules[0].public);
        assert_eq!(i.rules[1].path, "/u/{id}");
    }

    #[test]
    fn scheme_choice() {
        let two = format!("{BASE}    oidc: {{type: openIdConnect, openIdConnectUrl: 'https://h'}}\npaths: {{}}\n");
        assert!(import(&doc(&two), None, None).is_err());
        assert!(import(&doc(&two), Some("oidc"), None).is_ok());
        assert!(import(&doc(&two), Some("key"), None).is_err());
        assert!(parse("swagger: '2.0'").is_err());
    }

    #[test]
    fn ids_are_unique_and_toml_round_trips() {
        let i = imported(
            "paths:\n  /a-b:\n    get: {security: [{oauth: [a]}]}\n  /a/b:\n    get: {security: [{oauth: [a]}]}\n",
        );
        assert_eq!(i.rules[0].id, "get-a-b");
        assert_eq!(i.rules[1].id, "get-a-b-2");
        let text = to_toml(&i.rules);
        let back: crate::config::Config = toml::from_str(&text).expect("valid config TOML");
        assert_eq!(back.rules, i.rules);
    }

    /// Every template OpenAPI allows becomes a pattern the rules accept.
    #[test]
    fn templates_become_loadable_patterns() {
        let i = imported(
            "paths:\n  /users/{user-id}:\n    get: {security: [{oauth: [a]}]}\n  /files/{name}.json:\n    get: {security: [{oauth: [a]}]}\n  /r/{a}-{b}/x:\n    get: {security: [{oauth: [a]}]}\n  /v1/{digest}{suffix}/acl:\n    get: {security: [{oauth: [a]}]}\n",
        );
        let paths: Vec<&str> = i.rules.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["/users/{user-id}", "/files/*.json", "/r/*-*/x", "/v1/*/acl"]
        );
        let set = crate::decision::rules::RuleSet::compile(&i.rules).expect("generated rules load");
        assert!(set.find("GET", "", "/files/report.json").is_some());
        assert!(set.find("GET", "", "/r/1-2/x").is_some());
        assert!(set.find("GET", "", "/users/42").is_some());
        // Adjacent templates are one segment, never `**` (any depth).
        assert!(set.find("GET", "", "/v1/abc.sig/acl").is_some());
        assert!(set.find("GET", "", "/v1/a/b/acl").is_none());
    }

    #[test]
    fn servers_base_path_and_refs() {
        let with = |servers: &str, base: Option<&str>| {
            let d = doc(&format!(
                "{BASE}servers: {servers}\npaths:\n  /x:\n    $ref: '#/components/pathItems/X'\n  /y:\n    $ref: 'other.yaml#/Y'\n"
            ));
            let mut d = d;
            d["components"]["pathItems"] = serde_json::json!({"X": {"get": {"security": [{"oauth": ["a"]}]}}});
            import(&d, None, base).expect("import")
        };
        let i = with(
            "[{url: 'https://api.example/v1/'}, {url: 'http://localhost:8080/v1'}]",
            None,
        );
        assert_eq!(i.rules.len(), 1, "the local $ref is followed");
        assert_eq!(i.rules[0].path, "/v1/x");
        assert!(i.warnings.iter().any(|w| w.contains("other.yaml")), "{:?}", i.warnings);
        let i = with(
            "[{url: 'https://api.example/v1'}, {url: 'https://api.example/v2'}]",
            None,
        );
        assert_eq!(i.rules[0].path, "/x");
        assert!(
            i.warnings.iter().any(|w| w.contains("different base paths")),
            "{:?}",
            i.warnings
        );
        let i = with("[{url: 'https://api.example/v1'}]", Some("/"));
        assert_eq!(i.rules[0].path, "/x", "--base-path / overrides the servers");
        let i = with("[{url: '/api'}]", Some("/gw/"));
        assert_eq!(i.rules[0].path, "/gw/x");
    }
}
