//! One config's worth of authorizer: the [`Engine`] that decides and the
//! [`Responder`] that says it. This is the unit a reload swaps atomically,
//! so a check never mixes an old rule set with new header names.

use crate::config::{Config, ConfigError};
use crate::decision::Engine;
use crate::respond::Responder;
use std::sync::Arc;

pub struct Authorizer<A> {
    engine: Engine<A>,
    responder: Responder,
    /// The RFC 9728 document, rendered once per config (None when off).
    resource_metadata: Option<String>,
}

impl<A: crate::authn::Authenticator> Authorizer<A> {
    pub fn new(config: &Config, authn: A) -> Result<Authorizer<A>, ConfigError> {
        Self::with_shared(config, Arc::new(authn))
    }

    /// Built around an authenticator already in use (a reload that keeps
    /// its connection pool and cache).
    pub fn with_shared(config: &Config, authn: Arc<A>) -> Result<Authorizer<A>, ConfigError> {
        Ok(Authorizer {
            engine: Engine::with_shared(config.engine_settings(), authn)?,
            responder: Responder::new(config.headers.clone(), config.authorization.realm.clone())
                .with_resource_metadata(config.resource_metadata.url())
                .with_upstream_jwt(
                    crate::respond::upstream_jwt::Signer::start(&config.upstream_jwt).map_err(|e| {
                        ConfigError::Invalid {
                            key: "upstream_jwt.key_file".into(),
                            message: format!("{e:#}"),
                        }
                    })?,
                ),
            resource_metadata: config
                .resource_metadata
                .enabled()
                .then(|| config.resource_metadata.document().to_string()),
        })
    }

    pub fn engine(&self) -> &Engine<A> {
        &self.engine
    }

    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// The RFC 9728 protected resource metadata document, when configured.
    pub fn resource_metadata(&self) -> Option<&str> {
        self.resource_metadata.as_deref()
    }
}

/// The authenticator stack the server runs (assembled in `authn::stack`).
pub type ServerAuthn = crate::authn::stack::Stack;

/// Build the server's authorizer from config (reads secrets, compiles
/// rules) and start warming its verifier (the JWKS in jwt/auto mode) in the
/// background; readiness waits for that.
pub fn build(
    config: &Config,
    metrics: Arc<crate::metrics::Metrics>,
    fleet: Option<Arc<crate::authn::fleet::Fleet>>,
) -> anyhow::Result<Arc<Authorizer<ServerAuthn>>> {
    let stack = crate::authn::stack::build(&config.introspection, metrics, fleet)?;
    let authorizer = Arc::new(Authorizer::new(config, stack)?);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(warm_up(Arc::downgrade(&authorizer)));
    }
    Ok(authorizer)
}

/// Fetch the key set before the first check needs it, then again every
/// `refresh_min_interval_ms` while jwt mode has no usable one (none yet,
/// or past `max_stale_key_age_ms`): readiness waits for one, and an
/// unready replica gets no checks that would fetch it. Auto mode until it
/// holds one. Weak, so a configuration a reload replaced stops.
async fn warm_up(authorizer: std::sync::Weak<Authorizer<ServerAuthn>>) {
    let Some(a) = authorizer.upgrade() else {
        return;
    };
    let pause = verifier_of(&a).retry_interval();
    verifier_of(&a).prefetch().await;
    drop(a);
    loop {
        tokio::time::sleep(pause).await;
        let Some(a) = authorizer.upgrade() else {
            return;
        };
        match verifier_of(&a).wants_keys() {
            None => return,
            Some(true) => verifier_of(&a).fetch_keys().await,
            Some(false) => {}
        }
    }
}

/// The innermost layer of the server's stack: how tokens are verified.
pub fn verifier_of(authorizer: &Authorizer<ServerAuthn>) -> &crate::authn::verifier::Verifier {
    crate::authn::stack::verifier(authorizer.engine().authenticator())
}
