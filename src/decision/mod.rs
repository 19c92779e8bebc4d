//! The decision engine: pure logic over plain values, no sockets.
//!
//! ```text
//! AuthzRequest ─► credential well-formed? ─► route policy ─► public? ─► token? ─► authenticate ─► scopes ─► Decision
//!                     400                      403/500        allow      401        401/503          403
//! ```
//!
//! The gRPC `Check`, the admin `Explain` RPC and the CLI all call
//! [`Engine::decide`] / [`Engine::explain`], which share one code path.

pub mod canonical;
pub mod path;
pub mod request;
pub mod route;
pub mod rules;
pub mod scopes;
pub mod token;
pub mod verdict;

use crate::authn::{Authenticator, AuthnError, ClaimChecks, Identity};
use crate::config::{Config, ConfigError};
use request::AuthzRequest;
use route::Resolution;
use rules::{Mismatch, RuleSet};
use scopes::ScopeStrategy;
use std::sync::Arc;
use token::Credential;
use verdict::{Decision, DenyReason, Responder};

pub struct Engine<A> {
    rules: RuleSet,
    strategy: ScopeStrategy,
    responder: Responder,
    /// The claim policy the verifiers apply; here only to narrate it.
    claim_checks: ClaimChecks,
    /// Shared so a config reload that leaves `[introspection]` alone keeps
    /// the same client pool and cache.
    authn: std::sync::Arc<A>,
}

/// Everything a decision found out, for the response, the log line and explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    /// Which rule or route policy applied.
    pub rule_id: Option<String>,
    pub public: bool,
    pub required_scopes: Vec<String>,
    /// Alternative scope sets, one of which must be granted (OpenAPI-style).
    pub any_of: Vec<Vec<String>>,
    /// The authenticated caller, also when then denied for scope.
    pub identity: Option<Arc<Identity>>,
    pub token_fingerprint: Option<String>,
    /// Why the token could not be verified (a 503), for the decision's log line.
    pub failure: Option<String>,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            decision: Decision::Allow,
            rule_id: None,
            public: false,
            required_scopes: Vec::new(),
            any_of: Vec::new(),
            identity: None,
            token_fingerprint: None,
            failure: None,
        }
    }

    fn deny(mut self, reason: DenyReason) -> Outcome {
        self.decision = Decision::Deny(reason);
        self
    }

    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }
}

/// Formats a step only when someone is listening (explain mode), so the hot
/// path pays nothing for narration.
macro_rules! note {
    ($steps:expr, $($arg:tt)*) => {
        if let Some(steps) = $steps.as_mut() {
            steps.push(format!($($arg)*));
        }
    };
}

impl<A: Authenticator> Engine<A> {
    pub fn new(config: &Config, authn: A) -> Result<Engine<A>, ConfigError> {
        Self::with_shared(config, std::sync::Arc::new(authn))
    }

    pub fn with_shared(config: &Config, authn: std::sync::Arc<A>) -> Result<Engine<A>, ConfigError> {
        Ok(Engine {
            rules: RuleSet::compile(&config.rules)?,
            strategy: config.authorization.scope_strategy,
            responder: Responder::new(config.headers.clone(), config.authorization.realm.clone()),
            claim_checks: ClaimChecks::from_config(&config.introspection),
            authn,
        })
    }

    /// The shared authenticator, for a reload that keeps it.
    pub fn shared_authenticator(&self) -> std::sync::Arc<A> {
        self.authn.clone()
    }

    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    pub fn authenticator(&self) -> &A {
        &self.authn
    }

    pub async fn decide(&self, req: &AuthzRequest) -> Outcome {
        self.run(req, &mut None).await
    }

    /// Same decision as [`Engine::decide`], with a human-readable trace.
    pub async fn explain(&self, req: &AuthzRequest) -> (Outcome, Vec<String>) {
        let mut steps = Some(Vec::new());
        let outcome = self.run(req, &mut steps).await;
        (outcome, steps.unwrap_or_default())
    }

    pub fn respond(&self, o: &Outcome) -> envoy_types::ext_authz::v3::pb::CheckResponse {
        let identity = if o.public { None } else { o.identity.as_deref() };
        self.responder
            .check_response(&o.decision, identity, o.rule_id.as_deref())
    }

    async fn run(&self, req: &AuthzRequest, steps: &mut Option<Vec<String>>) -> Outcome {
        let mut out = Outcome::new();
        note!(steps, "request: {} {} (host {:?})", req.method, req.path, req.host);

        // A malformed header is refused even on public routes: it is never an allow.
        let token = match &req.credential {
            Credential::Malformed(why) => {
                note!(steps, "authorization header is malformed: {why}");
                return out.deny(DenyReason::InvalidRequest(why));
            }
            Credential::Missing => None,
            Credential::Bearer(t) => {
                out.token_fingerprint = Some(t.fingerprint());
                Some(t)
            }
        };

        if let Some(why) = req.malformed {
            note!(steps, "request refused: {why}");
            return out.deny(DenyReason::BadRequest(why));
        }
        if let Some(why) = req.too_large {
            note!(steps, "request refused: {why}");
            return out.deny(DenyReason::TooLarge(why));
        }
        if let Some(why) = req.path_error {
            note!(steps, "path refused: {why}");
            return out.deny(DenyReason::InvalidPath(why));
        }

        if steps.is_some() && req.context_extensions.is_empty() && req.route_metadata.is_none() {
            let mut first: Option<&str> = None;
            for (rule, why) in self.rules.explain(&req.method, &req.host, &req.path) {
                let verdict = match why {
                    None => match first {
                        Some(earlier) => format!("matches too, but not used: rule {earlier:?} comes first"),
                        None => {
                            first = Some(&rule.id);
                            "matches (first match in file order: used)".to_owned()
                        }
                    },
                    Some(Mismatch::Path) => format!("path does not match {:?}", rule.path),
                    Some(Mismatch::Method) => format!("method not in {:?}", rule.methods),
                    Some(Mismatch::Host) => "host does not match".to_owned(),
                };
                note!(steps, "rule {:?}: {verdict}", rule.id);
            }
        }
        let policy = match route::resolve(req, &self.rules) {
            Resolution::Policy(p) => p,
            Resolution::NoRule => {
                note!(steps, "no rule matches: default deny");
                return out.deny(DenyReason::NoRule);
            }
            Resolution::Misconfigured(why) => {
                note!(steps, "route policy unreadable: {why}");
                return out.deny(DenyReason::RouteMisconfigured(why));
            }
        };
        note!(
            steps,
            "policy from {:?}: {}",
            policy.rule_id,
            if policy.public {
                "public".to_owned()
            } else if policy.any_of.is_empty() {
                format!("requires scopes {:?}", policy.scopes)
            } else {
                format!(
                    "requires scopes {:?} and one of the alternative sets {:?}",
                    policy.scopes, policy.any_of
                )
            }
        );
        out.rule_id = Some(policy.rule_id);
        out.public = policy.public;
        out.required_scopes = policy.scopes;
        out.any_of = policy.any_of;
        if out.public {
            note!(steps, "public route: allow without a token; identity headers removed");
            return out;
        }

        let Some(token) = token else {
            note!(steps, "no bearer token");
            return out.deny(DenyReason::MissingToken);
        };
        // Explaining must not change what later checks see (cache, breaker, metrics).
        let verified = if steps.is_some() {
            self.authn.authenticate_dry(token).await
        } else {
            self.authn.authenticate(token).await
        };
        let identity = match verified {
            Ok(identity) => identity,
            Err(AuthnError::Rejected(why)) => {
                note!(steps, "token rejected: {why} (claim checks stop at the first failure)");
                return out.deny(DenyReason::InvalidToken(why));
            }
            Err(AuthnError::Unavailable { kind, detail, .. }) => {
                note!(steps, "cannot verify the token ({kind}): {detail}");
                // Told once, in the decision's own log line (at WARN).
                out.failure = Some(format!("{kind}: {detail}"));
                return out.deny(DenyReason::Unavailable(kind));
            }
        };
        note!(
            steps,
            "token active: client_id {:?}, subject {:?}, scopes {:?}",
            identity.client_id,
            identity.subject,
            identity.scopes
        );
        note!(
            steps,
            "claims: {}",
            self.claim_checks
                .describe(&identity, crate::authn::introspection::now_unix())
        );
        let mut missing: Vec<&str> = self.strategy.missing(&identity.scopes, &out.required_scopes);
        let alternative_ok = out.any_of.is_empty()
            || out
                .any_of
                .iter()
                .any(|set| self.strategy.missing(&identity.scopes, set).is_empty());
        if !alternative_ok {
            note!(steps, "none of the alternative scope sets {:?} is granted", out.any_of);
            missing.extend(out.any_of[0].iter().map(String::as_str));
        }
        if missing.is_empty() {
            note!(steps, "scope strategy {:?}: all required scopes granted", self.strategy);
            out.identity = Some(identity);
            return out;
        }
        note!(steps, "scope strategy {:?}: missing {:?}", self.strategy, missing);
        // RFC 6750: the scope attribute names what the route needs (the first alternative when there are several).
        let mut needed = out.required_scopes.clone();
        if !alternative_ok {
            needed.extend(out.any_of[0].iter().cloned());
        }
        out.identity = Some(identity);
        out.deny(DenyReason::InsufficientScope(needed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::ClaimFailure;
    use crate::config::RuleConfig;
    use token::Token;

    /// Authenticator with fixed answers per token value.
    struct Fixed;

    impl Authenticator for Fixed {
        async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
            match token.expose() {
                "reader" => Ok(Arc::new(Identity {
                    client_id: Some("reader".into()),
                    subject: Some("reader".into()),
                    scopes: vec!["read_date".into()].into(),
                    expires_at: Some(i64::MAX),
                    ..Default::default()
                })),
                "revoked" => Err(AuthnError::Rejected(ClaimFailure::Inactive)),
                _ => Err(AuthnError::unavailable(crate::authn::FailureKind::Timeout, "slow")),
            }
        }
    }

    fn engine() -> Engine<Fixed> {
        let rule = |id: &str, m: &str, p: &str, s: &[&str], public: bool| RuleConfig {
            id: id.into(),
            methods: vec![m.into()],
            path: p.into(),
            scopes: s.iter().map(|s| s.to_string()).collect(),
            public,
            ..Default::default()
        };
        let config = Config {
            rules: vec![
                rule("date", "GET", "/date", &["read_date"], false),
                rule("echo", "POST", "/echo", &["post_echo"], false),
                rule("health", "GET", "/health", &[], true),
            ],
            ..Default::default()
        };
        Engine::new(&config, Fixed).expect("engine")
    }

    fn req(method: &str, path: &str, auth: Option<&str>) -> AuthzRequest {
        AuthzRequest {
            method: method.into(),
            path: path.into(),
            credential: token::parse_authorization(auth),
            ..Default::default()
        }
    }

    async fn decision(method: &str, path: &str, auth: Option<&str>) -> Decision {
        engine().decide(&req(method, path, auth)).await.decision
    }

    #[tokio::test]
    async fn seed_scenario() {
        assert_eq!(decision("GET", "/date", Some("Bearer reader")).await, Decision::Allow);
        assert_eq!(
            decision("POST", "/echo", Some("Bearer reader")).await,
            Decision::Deny(DenyReason::InsufficientScope(vec!["post_echo".into()]))
        );
        assert_eq!(
            decision("GET", "/date", None).await,
            Decision::Deny(DenyReason::MissingToken)
        );
        assert_eq!(
            decision("GET", "/date", Some("Bearer revoked")).await,
            Decision::Deny(DenyReason::InvalidToken(ClaimFailure::Inactive))
        );
        assert_eq!(
            decision("GET", "/date", Some("Bearer other")).await,
            Decision::Deny(DenyReason::Unavailable(crate::authn::FailureKind::Timeout))
        );
        assert_eq!(
            decision("GET", "/nope", Some("Bearer reader")).await,
            Decision::Deny(DenyReason::NoRule)
        );
    }

    #[tokio::test]
    async fn malformed_header_is_400_even_on_public_routes() {
        for path in ["/date", "/health", "/nope"] {
            assert!(matches!(
                decision("GET", path, Some("Basic abc")).await,
                Decision::Deny(DenyReason::InvalidRequest(_))
            ));
        }
    }

    /// Path tricks never reach a rule they should not: each input and its answer.
    #[tokio::test]
    async fn path_corpus_through_the_engine() {
        let e = engine();
        let cases: [(&str, &str, Decision); 10] = [
            ("GET", "/%64ate", Decision::Allow),
            ("GET", "//date", Decision::Allow),
            ("GET", "/date?x=/echo", Decision::Allow),
            ("GET", "/DATE", Decision::Deny(DenyReason::NoRule)),
            ("GET", "/d\u{0430}te", Decision::Deny(DenyReason::NoRule)),
            ("GET", "/%2564ate", Decision::Deny(DenyReason::NoRule)),
            (
                "POST",
                "/date/../echo",
                Decision::Deny(DenyReason::InvalidPath(
                    "dot segments ('.', '..') are not allowed in the path",
                )),
            ),
            (
                "GET",
                "/date;x",
                Decision::Deny(DenyReason::InvalidPath("path parameters (';') are not allowed")),
            ),
            (
                "GET",
                "/date%2F..",
                Decision::Deny(DenyReason::InvalidPath(
                    "encoded slashes and backslashes are not allowed in the path",
                )),
            ),
            (
                "GET",
                "/health/..%2Fdate",
                Decision::Deny(DenyReason::InvalidPath(
                    "encoded slashes and backslashes are not allowed in the path",
                )),
            ),
        ];
        for (method, path, want) in cases {
            let r = AuthzRequest::from_parts(
                method,
                "",
                path,
                &[("authorization".to_string(), "Bearer reader".to_string())].into(),
                Default::default(),
            );
            assert_eq!(e.decide(&r).await.decision, want, "{method} {path}");
        }
    }

    #[tokio::test]
    async fn public_route_needs_no_token_and_hides_identity() {
        let e = engine();
        let o = e.decide(&req("GET", "/health", Some("Bearer reader"))).await;
        assert!(o.is_allowed() && o.public);
        assert_eq!(o.identity, None, "public routes do not introspect");
        let h = e.responder().upstream_headers(None);
        assert_eq!(h.remove[..3], ["x-client-id", "x-scopes", "x-subject"]);
        assert!(h.remove.iter().any(|n| n == "x_client_id"), "and the underscore twins");
    }

    #[tokio::test]
    async fn context_extensions_override_rules() {
        let mut r = req("POST", "/echo", Some("Bearer reader"));
        r.context_extensions
            .insert("required_scopes".into(), "read_date".into());
        let o = engine().decide(&r).await;
        assert!(o.is_allowed());
        assert_eq!(o.rule_id.as_deref(), Some(route::FROM_CONTEXT_EXTENSIONS));
    }

    #[tokio::test]
    async fn any_of_needs_one_full_alternative() {
        let config = Config {
            rules: vec![RuleConfig {
                id: "alt".into(),
                path: "/alt".into(),
                any_of: vec![vec!["admin".into()], vec!["read_date".into()]],
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = Engine::new(&config, Fixed).expect("engine");
        assert!(e.decide(&req("GET", "/alt", Some("Bearer reader"))).await.is_allowed());
        let config = Config {
            rules: vec![RuleConfig {
                id: "alt".into(),
                path: "/alt".into(),
                any_of: vec![vec!["admin".into()], vec!["read_date".into(), "post_echo".into()]],
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = Engine::new(&config, Fixed).expect("engine");
        assert_eq!(
            e.decide(&req("GET", "/alt", Some("Bearer reader"))).await.decision,
            Decision::Deny(DenyReason::InsufficientScope(vec!["admin".into()]))
        );
    }

    #[tokio::test]
    async fn explain_tells_the_same_story() {
        let e = engine();
        let r = req("POST", "/echo", Some("Bearer reader"));
        let (o, steps) = e.explain(&r).await;
        assert_eq!(o, e.decide(&r).await);
        let text = steps.join("\n");
        assert!(text.contains("rule \"date\": path does not match"), "{text}");
        assert!(text.contains("rule \"echo\": matches (first match"), "{text}");
        assert!(text.contains("claims: active ok (introspected)"), "{text}");
        assert!(text.contains("missing [\"post_echo\"]"), "{text}");
        assert!(!text.contains("Bearer reader"), "explanations never show the token");
    }
}
