//! The routes an Envoy bootstrap sends through our ext_authz filter, for
//! `config check --envoy`: a route that neither carries its own policy
//! (context_extensions, `hydra_authz` route metadata, or the filter disabled)
//! nor can be reached by any `[[rules]]` pattern denies every request (403),
//! which is rarely what the operator meant.
//!
//! Only what a static bootstrap says is read: listeners with an inline
//! `route_config` in an HTTP connection manager that runs the ext_authz
//! filter. Regex routes cannot be judged and are skipped.
//!
//! Envoy Gateway manifests are read too: each HTTPRoute's path matches,
//! with the extAuth SecurityPolicy that applies (route-level, else the
//! Gateway's); `contextExtensions` naming `required_scopes` or `public` is
//! the route's own policy. An HTTPRoute no extAuth policy covers is
//! reported as unprotected, and so is one whose own policy (which replaces
//! the Gateway's) has no extAuth.

use crate::decision::rules::RuleSet;
use serde_json::Value;

const EXT_AUTHZ: &str = "envoy.filters.http.ext_authz";
const EXT_AUTHZ_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz";
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// How a route is matched, as far as the lint can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteMatch {
    Exact(String),
    Prefix(String),
}

/// One route the ext_authz filter sees, and whether it brings its own policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub virtual_host: String,
    pub matcher: RouteMatch,
    /// Per-route policy (context_extensions, route metadata) or the filter
    /// disabled for it: our rules are not consulted.
    pub own_policy: bool,
}

/// What `config check --envoy` was given, and what it found in it.
pub struct Found {
    pub routes: Vec<Route>,
    /// Routes that reach no external authorization at all (Envoy Gateway
    /// manifests: an HTTPRoute no extAuth SecurityPolicy covers).
    pub unprotected: Vec<String>,
}

/// An Envoy bootstrap (YAML or JSON), or Kubernetes manifests: Gateway API
/// `HTTPRoute`s with Envoy Gateway `SecurityPolicy`s (one or more YAML
/// documents, as `deploy/envoy-gateway/manifests/` ships them).
pub fn read(text: &str) -> anyhow::Result<Found> {
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| anyhow::anyhow!("cannot parse the Envoy config or manifests as YAML or JSON: {e}"))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    let is_manifest = |d: &Value| d.get("apiVersion").is_some() && d.get("kind").is_some();
    if !docs.is_empty() && docs.iter().all(is_manifest) {
        return Ok(gateway_routes(&docs));
    }
    match docs.as_slice() {
        [bootstrap] => Ok(Found {
            routes: routes(bootstrap),
            unprotected: Vec::new(),
        }),
        _ => anyhow::bail!("expected one Envoy bootstrap, or Kubernetes manifests (each with apiVersion and kind)"),
    }
}

/// An Envoy Gateway SecurityPolicy, reduced to what the lint needs.
struct Policy {
    namespace: String,
    /// It configures `extAuth`. One targeting a route without it still
    /// wins over the Gateway's (no merge): that route has no ext_authz.
    ext_auth: bool,
    /// `(kind, name)` of each target.
    targets: Vec<(String, String)>,
    /// `contextExtensions` name `required_scopes` or `public`: the routes it
    /// covers carry their own policy, and our rules are not consulted.
    own_policy: bool,
}

fn namespace_of(doc: &Value) -> String {
    doc.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default")
        .to_owned()
}

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Routes of Gateway API HTTPRoutes, with the Envoy Gateway SecurityPolicy
/// that applies to each: one targeting the HTTPRoute wins over one targeting
/// its Gateway (Envoy Gateway does not merge them).
pub fn gateway_routes(docs: &[Value]) -> Found {
    let kind = |d: &Value| text(d, "kind").unwrap_or_default().to_owned();
    let policies: Vec<Policy> = docs
        .iter()
        .filter(|d| kind(d) == "SecurityPolicy")
        .map(|d| {
            let spec = d.get("spec").unwrap_or(&Value::Null);
            let targets = array(spec, "targetRefs")
                .chain(spec.get("targetRef"))
                .filter_map(|t| Some((text(t, "kind")?.to_owned(), text(t, "name")?.to_owned())))
                .collect();
            let own_policy = d
                .pointer("/spec/extAuth/contextExtensions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|e| matches!(text(e, "name"), Some("required_scopes" | "public")));
            Policy {
                namespace: namespace_of(d),
                ext_auth: d.pointer("/spec/extAuth").is_some(),
                targets,
                own_policy,
            }
        })
        .collect();
    // One with extAuth first, should two target the same object.
    let targeting = |kind: &str, name: &str, ns: &str| {
        let mut at = policies
            .iter()
            .filter(|p| p.namespace == ns && p.targets.iter().any(|(k, n)| k == kind && n == name));
        let first = at.clone().next();
        at.find(|p| p.ext_auth).or(first)
    };
    let mut found = Found {
        routes: Vec::new(),
        unprotected: Vec::new(),
    };
    for route in docs.iter().filter(|d| kind(d) == "HTTPRoute") {
        let ns = namespace_of(route);
        let name = route.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("?");
        let spec = route.get("spec").unwrap_or(&Value::Null);
        let policy = targeting("HTTPRoute", name, &ns).or_else(|| {
            array(spec, "parentRefs").find_map(|p| {
                let gw_ns = text(p, "namespace").unwrap_or(&ns);
                targeting("Gateway", text(p, "name")?, gw_ns)
            })
        });
        let label = format!("HTTPRoute {ns}/{name}");
        let Some(policy) = policy.filter(|p| p.ext_auth) else {
            found.unprotected.push(label);
            continue;
        };
        for rule in array(spec, "rules") {
            let matches: Vec<&Value> = array(rule, "matches").collect();
            let paths: Vec<Option<&Value>> = if matches.is_empty() {
                vec![None]
            } else {
                matches.iter().map(|m| m.get("path")).collect()
            };
            for path in paths {
                // Gateway API's default match is PathPrefix "/".
                let value = path.and_then(|p| text(p, "value")).unwrap_or("/").to_owned();
                let matcher = match path.and_then(|p| text(p, "type")).unwrap_or("PathPrefix") {
                    "Exact" => RouteMatch::Exact(value),
                    "PathPrefix" => RouteMatch::Prefix(value),
                    _ => continue, // RegularExpression: cannot be judged
                };
                found.routes.push(Route {
                    virtual_host: label.clone(),
                    matcher,
                    own_policy: policy.own_policy,
                });
            }
        }
    }
    found
}

/// Every route behind an HTTP connection manager that runs ext_authz.
pub fn routes(bootstrap: &Value) -> Vec<Route> {
    let mut out = Vec::new();
    let listeners = bootstrap
        .pointer("/static_resources/listeners")
        .and_then(Value::as_array);
    for listener in listeners.into_iter().flatten() {
        let chains = listener.get("filter_chains").and_then(Value::as_array);
        for filter in chains.into_iter().flatten().flat_map(|c| array(c, "filters")) {
            let Some(hcm) = filter.get("typed_config") else {
                continue;
            };
            // The filter by its name or, named otherwise (`authz`), by its
            // type; per-route settings are keyed by the name it was given.
            let ext_authz = array(hcm, "http_filters").find_map(|f| {
                let name = f.get("name").and_then(Value::as_str)?;
                let typed = f.pointer("/typed_config/@type").and_then(Value::as_str);
                (name == EXT_AUTHZ || typed == Some(EXT_AUTHZ_TYPE)).then_some(name)
            });
            let Some(ext_authz) = ext_authz else {
                continue;
            };
            for vh in hcm
                .pointer("/route_config/virtual_hosts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = vh.get("name").and_then(Value::as_str).unwrap_or("?").to_owned();
                let vh_policy = has_own_policy(vh, ext_authz);
                for route in array(vh, "routes") {
                    let m = route.get("match");
                    let text = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_str).map(str::to_owned);
                    let matcher = if let Some(p) = text("path") {
                        RouteMatch::Exact(p)
                    } else if let Some(p) = text("prefix").or_else(|| text("path_separated_prefix")) {
                        RouteMatch::Prefix(p)
                    } else {
                        continue; // safe_regex, connect_matcher, ...: cannot be judged
                    };
                    out.push(Route {
                        virtual_host: name.clone(),
                        matcher,
                        own_policy: vh_policy || has_own_policy(route, ext_authz),
                    });
                }
            }
        }
    }
    out
}

/// Routes whose requests no rule can ever allow: `(virtual host, match)`.
/// A route's path is compared in the form requests are matched in
/// (`/städte` is `/st%C3%A4dte`, `/%64ate` is `/date`).
pub fn uncovered(routes: &[Route], rules: &RuleSet) -> Vec<String> {
    use crate::extract::path::in_matched_form as matched;
    routes
        .iter()
        .filter(|r| !r.own_policy)
        .filter(|r| match &r.matcher {
            RouteMatch::Exact(p) => !METHODS.iter().any(|m| rules.covers_on_some_host(m, &matched(p))),
            RouteMatch::Prefix(p) => !rules.patterns().any(|pattern| may_overlap(&matched(p), pattern)),
        })
        .map(|r| match &r.matcher {
            RouteMatch::Exact(p) => format!("virtual host {:?}, path {p:?}", r.virtual_host),
            RouteMatch::Prefix(p) => format!("virtual host {:?}, prefix {p:?}", r.virtual_host),
        })
        .collect()
}

/// Whether a rule pattern may match some path under `prefix`: compare the
/// pattern's literal part (before its first wildcard or parameter).
fn may_overlap(prefix: &str, pattern: &str) -> bool {
    let literal = pattern.split(['*', '{']).next().unwrap_or_default();
    literal.starts_with(prefix) || prefix.starts_with(literal)
}

fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// Per-route (or per-virtual-host) ext_authz settings or our metadata namespace.
fn has_own_policy(v: &Value, filter: &str) -> bool {
    let per_filter = v.pointer("/typed_per_filter_config").and_then(|t| t.get(filter));
    let disabled = per_filter.and_then(|f| f.get("disabled")).and_then(Value::as_bool) == Some(true);
    let ext = per_filter.and_then(|f| f.pointer("/check_settings/context_extensions"));
    let ext_policy = ext.is_some_and(|e| e.get("required_scopes").is_some() || e.get("public").is_some());
    let metadata = v
        .pointer("/metadata/filter_metadata")
        .and_then(|m| m.get(crate::extract::METADATA_NAMESPACE))
        .is_some();
    disabled || ext_policy || metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RuleConfig;

    fn rules(paths: &[&str]) -> RuleSet {
        let configs: Vec<RuleConfig> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| RuleConfig {
                id: format!("r{i}"),
                methods: vec!["GET".into()],
                path: (*p).into(),
                ..Default::default()
            })
            .collect();
        RuleSet::compile(&configs).expect("rules")
    }

    #[test]
    fn the_shipped_envoy_config_leaves_no_route_uncovered() {
        let doc: Value = serde_norway::from_str(include_str!("../../deploy/envoy/envoy.yaml")).expect("yaml");
        let found = routes(&doc);
        assert_eq!(found.len(), 5, "{found:?}");
        // /.well-known/oauth-protected-resource (ext_authz disabled), /public, /ctx/date, /meta/echo.
        assert_eq!(found.iter().filter(|r| r.own_policy).count(), 4, "{found:?}");
        assert!(uncovered(&found, &rules(&["/date", "/echo"])).is_empty());
        assert_eq!(
            uncovered(&found, &rules(&[])),
            vec!["virtual host \"api\", prefix \"/\"".to_string()]
        );
    }

    #[test]
    fn envoy_gateway_manifests_are_read_like_the_bootstrap() {
        let text = [
            include_str!("../../deploy/envoy-gateway/manifests/httproutes.yaml"),
            include_str!("../../deploy/envoy-gateway/manifests/securitypolicies.yaml"),
        ]
        .join("\n---\n");
        let found = read(&text).expect("manifests");
        assert!(found.unprotected.is_empty());
        assert_eq!(found.routes.len(), 2, "{:?}", found.routes);
        assert!(found.routes.iter().all(|r| r.own_policy), "context extensions on both");
        assert!(uncovered(&found.routes, &rules(&[])).is_empty());

        // A route under only the Gateway-wide policy (no context extensions)
        // falls back to [[rules]]; one under no policy at all is unprotected.
        let extra = "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: admin, namespace: demo}\nspec:\n  parentRefs: [{name: api}]\n  rules: [{matches: [{path: {type: PathPrefix, value: /admin}}]}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: open, namespace: other}\nspec:\n  parentRefs: [{name: elsewhere}]\n  rules: [{}]\n";
        let found = read(&format!("{text}{extra}")).expect("manifests");
        assert_eq!(found.unprotected, vec!["HTTPRoute other/open".to_string()]);
        assert_eq!(
            uncovered(&found.routes, &rules(&["/date"])),
            vec!["virtual host \"HTTPRoute demo/admin\", prefix \"/admin\"".to_string()]
        );
        assert!(uncovered(&found.routes, &rules(&["/admin/**"])).is_empty());

        // The route's own SecurityPolicy without extAuth (only CORS) wins
        // over the Gateway's: that route is served without authorization.
        let cors = "\n---\napiVersion: gateway.envoyproxy.io/v1alpha1\nkind: SecurityPolicy\nmetadata: {name: admin-cors, namespace: demo}\nspec:\n  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: admin}]\n  cors: {allowOrigins: ['*']}\n";
        let found = read(&format!("{text}{extra}{cors}")).expect("manifests");
        assert_eq!(
            found.unprotected,
            vec!["HTTPRoute demo/admin".to_string(), "HTTPRoute other/open".to_string()]
        );
    }

    #[test]
    fn a_bootstrap_is_still_one_document() {
        let found = read(include_str!("../../deploy/envoy/envoy.yaml")).expect("bootstrap");
        assert_eq!(found.routes.len(), 5);
        assert!(
            read("a: 1\n---\nb: 2\n").is_err(),
            "two documents that are not manifests"
        );
    }

    /// An ext_authz filter named otherwise (`authz`) is found by its type,
    /// and per-route settings under that name count: before, the whole
    /// connection manager was skipped and its routes never judged.
    #[test]
    fn an_ext_authz_filter_is_found_by_its_type() {
        let bootstrap = serde_json::json!({"static_resources": {"listeners": [{"filter_chains": [{"filters": [{
            "typed_config": {
                "http_filters": [{"name": "authz", "typed_config": {"@type": EXT_AUTHZ_TYPE}}],
                "route_config": {"virtual_hosts": [{"name": "api", "routes": [
                    {"match": {"prefix": "/admin"}},
                    {"match": {"prefix": "/metadata"}, "typed_per_filter_config": {"authz": {"disabled": true}}}
                ]}]}
            }
        }]}]}]}});
        let found = routes(&bootstrap);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(
            uncovered(&found, &rules(&["/date"])),
            vec!["virtual host \"api\", prefix \"/admin\"".to_string()]
        );
    }

    #[test]
    fn routes_are_judged_by_their_match() {
        let r = rules(&["/date", "/billing/{id}", "/files/*.pdf"]);
        let route = |m: RouteMatch| Route {
            virtual_host: "v".into(),
            matcher: m,
            own_policy: false,
        };
        let routes = vec![
            route(RouteMatch::Prefix("/billing".into())),
            route(RouteMatch::Prefix("/files/".into())),
            route(RouteMatch::Exact("/date".into())),
            route(RouteMatch::Exact("/dates".into())),
            route(RouteMatch::Prefix("/admin".into())),
        ];
        assert_eq!(
            uncovered(&routes, &r),
            vec![
                "virtual host \"v\", path \"/dates\"".to_string(),
                "virtual host \"v\", prefix \"/admin\"".to_string()
            ]
        );
        // Raw or needlessly escaped in the route, escaped in the rule.
        let r = rules(&["/st%C3%A4dte/**", "/a%7Cb"]);
        let routes = vec![
            route(RouteMatch::Prefix("/st\u{e4}dte/".into())),
            route(RouteMatch::Exact("/a|b".into())),
            route(RouteMatch::Exact("/%61%7cb".into())),
        ];
        assert!(uncovered(&routes, &r).is_empty(), "{:?}", uncovered(&routes, &r));
    }
}
