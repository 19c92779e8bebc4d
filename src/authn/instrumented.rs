//! An [`Authenticator`] wrapper that records latency and failures, so the
//! introspection client itself stays free of metrics code.

use super::{Authenticator, AuthnError, Identity};
use crate::extract::credential::Token;
use crate::metrics::{KindLabels, Metrics};
use std::sync::Arc;
use std::time::Instant;

pub struct Instrumented<A> {
    inner: A,
    metrics: Arc<Metrics>,
}

impl<A> Instrumented<A> {
    pub fn new(inner: A, metrics: Arc<Metrics>) -> Self {
        Instrumented { inner, metrics }
    }

    pub fn inner(&self) -> &A {
        &self.inner
    }
}

impl<A: Authenticator> Authenticator for Instrumented<A> {
    async fn authenticate(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        let started = Instant::now();
        let result = self.inner.authenticate(token).await;
        self.metrics
            .introspection_duration
            .observe(started.elapsed().as_secs_f64());
        if let Err(AuthnError::Unavailable { kind, .. }) = &result {
            self.metrics
                .introspection_errors
                .get_or_create(&KindLabels { kind: kind.label() })
                .inc();
        }
        result
    }

    async fn authenticate_dry(&self, token: &Token) -> Result<Arc<Identity>, AuthnError> {
        self.inner.authenticate_dry(token).await
    }

    fn asks_issuer(&self, token: &Token) -> bool {
        self.inner.asks_issuer(token)
    }
}
