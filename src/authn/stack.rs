//! The authenticator stack the server runs, assembled in one place, read top
//! to bottom as a check passes through it (outermost first):
//!
//! ```text
//! SharedVerifier   single-flight always; the opt-in cache, the JWT memo,
//!                  stale-if-error, and the fleet (purges, shared L2 cache)
//!  └ Resilient     deadline, retries, circuit breaker, bounded slots + queue
//!     └ Instrumented   latency and failure metrics per attempt
//!        └ Verifier    introspection, local JWT verification, or both (mode)
//! ```

use super::cache::SharedVerifier;
use super::fleet::Fleet;
use super::instrumented::Instrumented;
use super::resilience::Resilient;
use super::verifier::Verifier;
use crate::authn::config::{IntrospectionConfig, VerifyMode};
use crate::metrics::Metrics;
use std::sync::Arc;
use std::time::Duration;

/// The stack's type, outermost layer first.
pub type Stack = SharedVerifier<Resilient<Instrumented<Verifier>>>;

/// Build the stack for `[introspection]` (reads the configured secrets now,
/// so a missing one stops start-up instead of failing every check).
pub fn build(cfg: &IntrospectionConfig, metrics: Arc<Metrics>, fleet: Option<Arc<Fleet>>) -> anyhow::Result<Stack> {
    // How a token is verified: Hydra's introspection and/or the JWKS.
    let verifier = Verifier::new(cfg)?;
    // What each attempt costs and how it fails, for the metrics; outside
    // the retries so every attempt is seen.
    let measured = Instrumented::new(verifier, metrics.clone());
    // Hydra trouble must not become our outage: budget, retries, breaker,
    // bounded concurrency; every guard released on drop.
    let resilient = Resilient::new(measured, &cfg.resilience, metrics.clone());
    // Outermost, so concurrent checks of one token share one trip through
    // everything below, and a cached verdict skips it entirely.
    let jwt_memo = match cfg.mode {
        VerifyMode::Introspect => Duration::ZERO,
        VerifyMode::Jwt | VerifyMode::Auto => Duration::from_millis(cfg.jwt.verified_ttl_ms),
    };
    // In a fleet, the cache also hears other replicas' purges, is off while
    // it might miss one, and asks the shared L2 cache before the issuer.
    Ok(SharedVerifier::new(resilient, &cfg.cache, jwt_memo, metrics).with_fleet(fleet, policy(cfg)))
}

/// A name for the verification settings: identities shared through the
/// fleet carry it, and a replica verifying differently (a rollout, a
/// reload) does not take them.
fn policy(cfg: &IntrospectionConfig) -> String {
    let settings = serde_json::to_vec(cfg).unwrap_or_default();
    hex::encode(&crate::sha256::of(&settings)[..8])
}

/// The innermost layer: how tokens are verified.
pub fn verifier(stack: &Stack) -> &Verifier {
    stack.inner().inner().inner()
}
