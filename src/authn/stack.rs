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
    let policy = fleet.as_deref().map(|f| policy(cfg, f)).unwrap_or_default();
    Ok(SharedVerifier::new(resilient, &cfg.cache, jwt_memo, metrics).with_fleet(fleet, policy))
}

/// A name for the verification settings: identities shared through the
/// fleet carry it, and a replica verifying differently (a rollout, a
/// reload) does not take them. Only a fleet shares them, and it keys the
/// name ([`Fleet::policy_of`]).
fn policy(cfg: &IntrospectionConfig, fleet: &Fleet) -> String {
    fleet.policy_of(&serde_json::to_vec(cfg).unwrap_or_default())
}

/// The innermost layer: how tokens are verified.
pub fn verifier(stack: &Stack) -> &Verifier {
    stack.inner().inner().inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authn::config::ResilienceConfig;
    use crate::authn::resilience::BreakerView;
    use crate::authn::Authenticator;
    use crate::extract::credential::Token;

    /// A stack whose issuer cannot be reached, and whose breaker opens at
    /// the first failure.
    fn unreachable(metrics: &Arc<Metrics>, timeout_ms: u64) -> Stack {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/admin/oauth2/introspect", closed.local_addr().expect("addr"));
        drop(closed);
        let cfg = IntrospectionConfig {
            url,
            timeout_ms,
            resilience: ResilienceConfig {
                max_retries: 0,
                breaker_failures: 1,
                ..ResilienceConfig::default()
            },
            ..IntrospectionConfig::default()
        };
        build(&cfg, metrics.clone(), None).expect("stack")
    }

    /// `circuit_open` shows the running stack's breaker: a reload that
    /// builds a new stack (a new, closed breaker) shows 0 at the next
    /// scrape, though the old breaker is still open. Before, the gauge was
    /// written only when a breaker changed state, and stayed 1.
    #[tokio::test]
    async fn circuit_gauge_follows_the_running_breaker() {
        let metrics = Arc::new(Metrics::new());
        let old = unreachable(&metrics, 800);
        assert!(old.authenticate(&Token::new("opaque-token")).await.is_err());
        assert_eq!(old.inner().state().breaker, BreakerView::Open);
        old.refresh_metrics().await;
        assert_eq!(metrics.circuit_open.get(), 1, "the running breaker is open");

        // A reload with another [introspection]: a fresh stack runs now.
        let new = unreachable(&metrics, 700);
        new.refresh_metrics().await;
        assert_eq!(metrics.circuit_open.get(), 0, "the running breaker is closed");
        // A check still finishing on the old stack changes nothing shown.
        assert!(old.authenticate(&Token::new("opaque-token")).await.is_err());
        new.refresh_metrics().await;
        assert_eq!(metrics.circuit_open.get(), 0);
    }
}
