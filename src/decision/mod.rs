//! The decision engine: pure logic over plain values, no sockets and no
//! wire types.
//!
//! ```text
//! AuthzRequest ─► admit ─► route ─► public? ─► token? ─────────► authenticate ─► authorize ─► Outcome
//!                 400/431  403/500   allow      401 (optional:      401/503          403
//!                                               allow anonymously)
//! ```
//!
//! [`Engine::run`] is that line, one stage function per box, each narrating
//! itself for explanations. The gRPC `Check`, the admin `Explain` RPC and the
//! CLI all call [`Engine::decide`] / [`Engine::explain`], which share it.

pub(crate) mod conditions;
pub mod config;
pub mod route;
pub mod rules;
pub mod scopes;
pub mod verdict;

use crate::authn::{Authenticator, AuthnError, ClaimChecks, Identity};
use crate::extract::credential::{Credential, Token};
use crate::extract::sources::{self, TokenSource};
use crate::extract::AuthzRequest;
use route::{Resolution, RoutePolicy};
use rules::{RuleError, RuleSet};
use scopes::ScopeStrategy;
use std::sync::Arc;
use verdict::{Decision, DenyReason};

pub struct Engine<A> {
    rules: RuleSet,
    strategy: ScopeStrategy,
    /// The claim policy the verifiers apply; here only to narrate it.
    claim_checks: ClaimChecks,
    /// Shared so a config reload that leaves `[introspection]` alone keeps
    /// the same client pool and cache.
    authn: Arc<A>,
    /// The headers a request may not spell with another separator,
    /// lower-case ([`admit`], [`Settings::guarded_headers`]).
    guarded_headers: crate::extract::headers::Guarded,
}

/// Everything a decision found out, for the response, the log line and explanations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    /// Which rule or route policy applied.
    pub rule_id: Option<Arc<str>>,
    pub public: bool,
    pub required_scopes: Arc<[String]>,
    /// Alternative scope sets, one of which must be granted (OpenAPI-style).
    pub any_of: Arc<[Vec<String>]>,
    /// The authenticated caller, also when then denied for scope.
    pub identity: Option<Arc<Identity>>,
    pub token_fingerprint: Option<crate::extract::credential::Fingerprint>,
    /// Why the token could not be verified (a 503), for the decision's log line.
    pub failure: Option<String>,
    /// Allowed without a token on an optional-authentication rule.
    pub anonymous: bool,
    /// Where the token was, when a rule's `token_from` found it elsewhere
    /// than `Authorization` (so it can be stripped before the upstream).
    pub token_source: Option<TokenSource>,
    /// Further sources the same token was also found in (stripped too).
    pub token_also_in: Vec<TokenSource>,
    /// For a cookie source: the `cookie` header without every cookie
    /// holding the token (None: nothing else left), for stripping.
    pub cookie_rest: Option<String>,
}

impl Outcome {
    /// An allow with nothing found out yet; stages fill it in.
    pub fn new() -> Outcome {
        Outcome {
            decision: Decision::Allow,
            rule_id: None,
            public: false,
            required_scopes: Arc::default(),
            any_of: Arc::default(),
            identity: None,
            token_fingerprint: None,
            failure: None,
            anonymous: false,
            token_source: None,
            token_also_in: Vec::new(),
            cookie_rest: None,
        }
    }

    fn deny(mut self, reason: DenyReason) -> Outcome {
        self.decision = Decision::Deny(reason);
        self
    }

    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allow
    }

    /// The token's fingerprint as log lines show it (`token_fp`), `-` when
    /// no token was read.
    pub fn token_fp(&self) -> &str {
        self.token_fingerprint.as_ref().map_or("-", |f| f.as_str())
    }
}

impl Default for Outcome {
    fn default() -> Self {
        Outcome::new()
    }
}

/// Explanation lines, collected only when someone asked (explain mode).
type Notes = Option<Vec<String>>;

/// Formats a step only when someone is listening (explain mode), so the hot
/// path pays nothing for narration.
macro_rules! note {
    ($steps:expr, $($arg:tt)*) => {
        if let Some(steps) = $steps.as_mut() {
            steps.push(format!($($arg)*));
        }
    };
}

/// What an engine is built from (`Config::engine_settings` gathers it).
pub struct Settings<'a> {
    pub authorization: &'a config::AuthorizationConfig,
    pub rules: &'a [config::RuleConfig],
    /// The claim checks `[introspection]` asks for (shown in explanations).
    pub claim_checks: ClaimChecks,
    /// Every header an allow sets (identity, claims, the identity JWT), a
    /// rule reads a token from, or frameworks trust from their proxy.
    pub guarded_headers: Vec<String>,
}

impl<A: Authenticator> Engine<A> {
    pub fn new(settings: Settings<'_>, authn: A) -> Result<Engine<A>, RuleError> {
        Self::with_shared(settings, Arc::new(authn))
    }

    pub fn with_shared(settings: Settings<'_>, authn: Arc<A>) -> Result<Engine<A>, RuleError> {
        Ok(Engine {
            rules: RuleSet::compile(settings.rules)?,
            strategy: settings.authorization.scope_strategy,
            claim_checks: settings.claim_checks,
            authn,
            guarded_headers: crate::extract::headers::Guarded::new(&settings.guarded_headers),
        })
    }

    /// The shared authenticator, for a reload that keeps it.
    pub fn shared_authenticator(&self) -> Arc<A> {
        self.authn.clone()
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

    async fn run(&self, req: &AuthzRequest, steps: &mut Notes) -> Outcome {
        let mut out = Outcome::new();
        note!(steps, "request: {} {} (host {:?})", req.method, req.path, req.host);
        let token = match admit(req, &self.guarded_headers, steps) {
            Ok(token) => token,
            Err(reason) => return out.deny(reason),
        };
        out.token_fingerprint = token.map(Token::fingerprint);
        let policy = match self.route(req, steps) {
            Ok(policy) => policy,
            Err(reason) => return out.deny(reason),
        };
        let optional = policy.optional;
        let conditions = policy.conditions;
        let token_from = policy.token_from;
        out.rule_id = Some(policy.rule_id);
        out.public = policy.public;
        out.required_scopes = policy.scopes;
        out.any_of = policy.any_of;
        if out.public {
            note!(steps, "public route: allow without a token; identity headers removed");
            return out;
        }
        // A rule that names other token sources: read them now.
        let found = match token_from.is_empty() {
            true => None,
            false => match sources::find(req, &token_from).and_then(|f| authorization_agrees(req, &token_from, f)) {
                Ok(found) => Some(found),
                Err(why) => {
                    note!(
                        steps,
                        "token sources {:?}: {why}",
                        token_from.iter().map(ToString::to_string).collect::<Vec<_>>()
                    );
                    return out.deny(DenyReason::InvalidRequest(why));
                }
            },
        };
        let token = match &found {
            None => token,
            Some(found) => {
                let found = found.as_ref();
                out.token_fingerprint = found.map(|f| f.token.fingerprint());
                if let Some(f) = found {
                    note!(steps, "token found in {}", f.source);
                    // The cookie header without every cookie holding the token.
                    let mut cookie_names = std::iter::once(&f.source).chain(&f.also).filter_map(|s| match s {
                        TokenSource::Cookie(name) => Some(name),
                        _ => None,
                    });
                    if let Some(first) = cookie_names.next() {
                        let rest = req
                            .headers
                            .get("cookie")
                            .and_then(|c| sources::cookie_without(c, first));
                        out.cookie_rest =
                            cookie_names.fold(rest, |rest, name| rest.and_then(|c| sources::cookie_without(&c, name)));
                    }
                    out.token_source = Some(f.source.clone());
                    out.token_also_in = f.also.clone();
                }
                found.map(|f| &f.token)
            }
        };
        // A token in the query that no source read: let in (anonymously, or
        // on another credential), the upstream would still find a token
        // nobody checked (RFC 6750 §2.3 upstreams read it). Without a
        // token on a required rule it is a 401 anyway.
        if (token.is_some() || optional)
            && crate::extract::query_names_access_token(&req.query)
            && !token_from.iter().any(TokenSource::is_query_access_token)
        {
            note!(steps, "the query holds a token no source of this rule reads: refused");
            return out.deny(DenyReason::InvalidRequest(
                crate::extract::refusal::CredentialProblem::UnreadQueryToken,
            ));
        }
        let Some(token) = token else {
            if optional {
                note!(
                    steps,
                    "no bearer token, authentication optional: allow anonymously; identity headers removed"
                );
                out.anonymous = true;
                return out;
            }
            note!(steps, "no bearer token");
            return out.deny(DenyReason::MissingToken);
        };
        let identity = match self.authenticate(token, steps).await {
            Ok(identity) => identity,
            Err((reason, failure)) => {
                out.failure = failure;
                return out.deny(reason);
            }
        };
        let verdict = self
            .authorize(&identity, &out, steps)
            .and_then(|()| meets(&conditions, &identity, steps));
        out.identity = Some(identity);
        match verdict {
            Ok(()) => out,
            Err(reason) => out.deny(reason),
        }
    }

    /// Route: which policy applies (context_extensions, route metadata, rules).
    fn route(&self, req: &AuthzRequest, steps: &mut Notes) -> Result<RoutePolicy, DenyReason> {
        if steps.is_some() && req.context_extensions.is_empty() && req.route_metadata.is_none() {
            for line in self.rules.narrate(&req.method, &req.host, &req.path) {
                note!(steps, "{line}");
            }
        }
        let policy = match route::resolve(req, &self.rules) {
            Resolution::Policy(p) => p,
            Resolution::NoRule => {
                note!(steps, "no rule matches: default deny");
                return Err(DenyReason::NoRule);
            }
            Resolution::NoRuleForBareForm => {
                note!(
                    steps,
                    "{} may be served as {} (Express, Rails, Django), which no rule covers: that decides",
                    req.path,
                    req.path.trim_end_matches('/')
                );
                note!(steps, "no rule matches: default deny");
                return Err(DenyReason::NoRule);
            }
            Resolution::Misconfigured(why) => {
                note!(steps, "route policy unreadable: {why}");
                return Err(DenyReason::RouteMisconfigured(why));
            }
            Resolution::Ambiguous(problem) => {
                note!(steps, "{problem}: refused");
                return Err(DenyReason::InvalidPath(problem));
            }
        };
        note!(steps, "policy from {:?}: {}", policy.rule_id, policy.describe());
        Ok(policy)
    }

    /// Authenticate: is the token live, and whose is it. On failure, the
    /// deny reason and (for a 503) why, for the decision's log line.
    async fn authenticate(
        &self,
        token: &Token,
        steps: &mut Notes,
    ) -> Result<Arc<Identity>, (DenyReason, Option<String>)> {
        // Explaining must not change what later checks see (cache, breaker, metrics).
        let verified = if steps.is_some() {
            self.authn.authenticate_dry(token).await
        } else {
            self.authn.authenticate(token).await
        };
        match verified {
            Ok(identity) => {
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
                Ok(identity)
            }
            Err(AuthnError::Rejected(why)) => {
                note!(steps, "token rejected: {why} (claim checks stop at the first failure)");
                Err((DenyReason::InvalidToken(why), None))
            }
            Err(AuthnError::Unavailable { kind, detail, .. }) => {
                note!(steps, "cannot verify the token ({kind}): {detail}");
                // Told once, in the decision's own log line (at WARN).
                Err((DenyReason::Unavailable(kind), Some(format!("{kind}: {detail}"))))
            }
        }
    }

    /// Authorize: does the token carry what the route requires.
    fn authorize(&self, identity: &Identity, out: &Outcome, steps: &mut Notes) -> Result<(), DenyReason> {
        let Some(unmet) = self.strategy.unmet(&identity.scopes, &out.required_scopes, &out.any_of) else {
            note!(steps, "scope strategy {:?}: all required scopes granted", self.strategy);
            return Ok(());
        };
        if unmet.no_alternative {
            note!(steps, "none of the alternative scope sets {:?} is granted", out.any_of);
        }
        note!(steps, "scope strategy {:?}: missing {:?}", self.strategy, unmet.missing);
        // RFC 6750: the scope attribute names what the route needs.
        Err(DenyReason::InsufficientScope(unmet.needed))
    }
}

/// Claim conditions: audiences, issuers, clients and claim values the rule
/// accepts. Explanations show each; the deny names the claim only.
fn meets(conditions: &conditions::Conditions, identity: &Identity, steps: &mut Notes) -> Result<(), DenyReason> {
    if steps.is_some() {
        for c in conditions.iter() {
            let what = match c.check(identity) {
                conditions::Check::Met => "met",
                conditions::Check::Missing => "not met: the token has no such claim",
                conditions::Check::NotAccepted => "not met: no accepted value",
            };
            note!(
                steps,
                "condition {} in {:?}: {what} (token has {:?})",
                c.path,
                c.accepted,
                identity.claim(&c.path)
            );
        }
    }
    match conditions.first_unmet(identity) {
        None => Ok(()),
        Some(c) => Err(DenyReason::ClaimMismatch(c.path.clone())),
    }
}

/// A bearer token in `Authorization` on a rule whose `token_from` does not
/// read that header is still a credential the caller sent: it must be the
/// token found elsewhere, or the request is refused. Otherwise a bad token
/// there would be ignored (an optional rule would let the caller in
/// anonymously) and reach the upstream unverified.
fn authorization_agrees(
    req: &AuthzRequest,
    sources: &[TokenSource],
    found: Option<sources::Found>,
) -> Result<Option<sources::Found>, crate::extract::refusal::CredentialProblem> {
    use crate::extract::refusal::CredentialProblem;
    let Credential::Bearer(sent) = &req.credential else {
        return Ok(found);
    };
    if sources.contains(&TokenSource::Authorization) {
        return Ok(found);
    }
    match found {
        Some(f) if f.token == *sent => Ok(Some(f)),
        Some(_) => Err(CredentialProblem::TwoCredentials),
        None => Err(CredentialProblem::UnexpectedAuthorization),
    }
}

/// Admit: is the request well-formed enough to decide on at all. A malformed
/// credential is refused even on public routes: it is never an allow. So
/// is another spelling of a `guarded` header (`X.Client.Id`): on a public
/// route we set none, and behind a PHP or lighttpd upstream it would be
/// read as ours.
fn admit<'r>(
    req: &'r AuthzRequest,
    guarded: &crate::extract::headers::Guarded,
    steps: &mut Notes,
) -> Result<Option<&'r Token>, DenyReason> {
    let token = match &req.credential {
        Credential::Malformed(why) => {
            note!(steps, "authorization header is malformed: {why}");
            return Err(DenyReason::InvalidRequest(*why));
        }
        Credential::Missing => None,
        Credential::Bearer(t) => Some(t),
    };
    if let Some(why) = req
        .malformed
        .or_else(|| crate::extract::canonical::method_override(&req.method, &req.headers, &req.query))
        .or_else(|| {
            req.headers
                .respells(guarded)
                .then_some(crate::extract::refusal::RequestProblem::HeaderSpelling)
        })
    {
        note!(steps, "request refused: {why}");
        return Err(DenyReason::BadRequest(why));
    }
    if let Some(why) = req.too_large {
        note!(steps, "request refused: {why}");
        return Err(DenyReason::TooLarge(why));
    }
    if let Some(why) = req.path_error {
        note!(steps, "path refused: {why}");
        return Err(DenyReason::InvalidPath(why));
    }
    Ok(token)
}

#[cfg(test)]
mod tests;
