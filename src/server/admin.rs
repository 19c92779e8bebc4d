//! Our admin gRPC API (`proto/hydra_authz/admin/v1/admin.proto`), served on
//! its own listener (`server.admin_addr`) and only with credentials: it can
//! read any token's identity, the rule table, and empty the cache.

use crate::admin_proto::admin_server::Admin;
use crate::admin_proto::purge_token_request::Target;
use crate::admin_proto::{ExplainRequest, ExplainResponse, PurgeAllRequest, PurgeResponse, PurgeTokenRequest};
use crate::authn::cache::Purge;
use crate::authn::fleet::purge::PurgeTarget;
use crate::authn::fleet::Fleet;
use crate::authn::Authenticator;
use crate::authorizer::Authorizer;
use crate::extract::credential::Token;
use crate::extract::AuthzRequest;
use crate::respond::explanation::{explain, Explanation};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The admin listener's bearer-token check (mTLS, when configured, is
/// enforced by the TLS layer before a request gets here). Only a digest of
/// the token is kept, and digests are compared, so neither the token nor
/// its length leaks through timing. A token from a file is re-read (see
/// [`AdminAuth::watch`]): rotating the Secret ends the old token without a
/// restart.
#[derive(Clone)]
pub struct AdminAuth {
    token_digest: Arc<arc_swap::ArcSwapOption<[u8; 32]>>,
}

impl AdminAuth {
    pub fn from_config(server: &crate::config::ServerConfig) -> anyhow::Result<AdminAuth> {
        let digest = read_token(server)?;
        Ok(AdminAuth {
            token_digest: Arc::new(arc_swap::ArcSwapOption::new(digest.map(Arc::new))),
        })
    }

    /// Re-read `server.admin_token_file` every `every` while the listener
    /// runs: a changed token replaces the old one at once; a file that
    /// cannot be read or holds too short a token keeps the current one
    /// (logged). Ends when the listener's last copy of this is dropped.
    pub fn watch(&self, server: &crate::config::ServerConfig, every: std::time::Duration) {
        if server.admin_token_file.is_none() || server.admin_token_env.is_some() {
            return;
        }
        let server = server.clone();
        let current = Arc::downgrade(&self.token_digest);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(current) = current.upgrade() else { return };
                match read_token(&server) {
                    Ok(Some(now)) if current.load().as_deref() != Some(&now) => {
                        current.store(Some(Arc::new(now)));
                        tracing::info!("admin API: the admin token file changed; the new token is in use");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "admin API: keeping the current admin token"),
                }
            }
        });
    }
}

/// The admin token's digest, `None` when no token is configured.
fn read_token(server: &crate::config::ServerConfig) -> anyhow::Result<Option<[u8; 32]>> {
    use anyhow::Context;
    let token = match (&server.admin_token_env, &server.admin_token_file) {
        (None, None) => return Ok(None),
        (env, file) => crate::secret::read(env.as_deref(), file.as_deref())
            .context("server.admin_token: cannot read the admin token")?,
    };
    anyhow::ensure!(
        token.len() >= MIN_ADMIN_TOKEN_BYTES,
        "server.admin_token: {} bytes, at least {MIN_ADMIN_TOKEN_BYTES} are needed (e.g. `openssl rand -hex 32`): \
         the token is all that stands between the network and every token's identity and the cache",
        token.len()
    );
    Ok(Some(digest(&token)))
}

/// The shortest admin token we serve with. The admin port answers every
/// guess, so the token must be too long to guess online; a password-like
/// word is refused at start instead of protecting the cache.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

fn digest(v: &str) -> [u8; 32] {
    crate::sha256::of(v.as_bytes())
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let expected = self.token_digest.load();
        let Some(expected) = expected.as_deref() else {
            return Ok(request);
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(t) if digest(t) == *expected => Ok(request),
            _ => {
                tracing::warn!("admin API: request without valid credentials refused");
                Err(Status::unauthenticated("admin credentials required"))
            }
        }
    }
}

pub struct AdminService<A> {
    engine: Arc<arc_swap::ArcSwap<Authorizer<A>>>,
    fleet: Option<Arc<Fleet>>,
}

impl<A> AdminService<A> {
    pub fn new(engine: Arc<arc_swap::ArcSwap<Authorizer<A>>>, fleet: Option<Arc<Fleet>>) -> Self {
        AdminService { engine, fleet }
    }
}

#[tonic::async_trait]
impl<A: Authenticator + Purge> Admin for AdminService<A> {
    async fn explain(&self, request: Request<ExplainRequest>) -> Result<Response<ExplainResponse>, Status> {
        let r = request.into_inner();
        let req = AuthzRequest::from_parts(&r.method, &r.host, &r.path, &r.headers, r.context_extensions);
        Ok(Response::new(explain(&self.engine.load_full(), &req).await.into()))
    }

    async fn purge_token(&self, request: Request<PurgeTokenRequest>) -> Result<Response<PurgeResponse>, Status> {
        let engine = self.engine.load_full();
        let cache = engine.engine().authenticator();
        let target = match request.into_inner().target {
            Some(Target::Token(t)) if !t.is_empty() => {
                let token = Token::new(t);
                tracing::info!(token_fp = %token.fingerprint(), "purge requested for a token");
                PurgeTarget::Key(cache.purge_key(&token))
            }
            Some(Target::Fingerprint(fp)) => PurgeTarget::fingerprint(&fp).map_err(Status::invalid_argument)?,
            Some(Target::Subject(s)) => PurgeTarget::subject(&s).map_err(Status::invalid_argument)?,
            Some(Target::ClientId(c)) => PurgeTarget::client(&c).map_err(Status::invalid_argument)?,
            _ => {
                return Err(Status::invalid_argument(
                    "give a token, a fingerprint, a subject or a client id",
                ))
            }
        };
        self.purge(cache, target).await
    }

    async fn purge_all(&self, _request: Request<PurgeAllRequest>) -> Result<Response<PurgeResponse>, Status> {
        let engine = self.engine.load_full();
        self.purge(engine.engine().authenticator(), PurgeTarget::All).await
    }
}

impl<A: Authenticator + Purge + Send + Sync + 'static> AdminService<A> {
    /// Here first, then the fleet: a purge that could not be published is
    /// an error (the operator must know the other replicas still hold it).
    async fn purge<C: Purge + ?Sized>(
        &self,
        cache: &C,
        target: PurgeTarget,
    ) -> Result<Response<PurgeResponse>, Status> {
        cache.purge(&target);
        let what = target.describe();
        let Some(fleet) = &self.fleet else {
            tracing::info!(target = %what, "purged from the cache");
            return Ok(Response::new(PurgeResponse::default()));
        };
        let (fleet, engine, t) = (fleet.clone(), self.engine.clone(), target.clone());
        // Its own task: an admin caller that goes away mid-publish must not
        // skip the second purge below.
        let published = tokio::spawn(async move {
            let published = fleet.publish(&t).await;
            // Once more, now that the epoch has stepped (or shared reads are
            // suspended), on the stack running now: while we waited, a check
            // may have read the entry back from the shared cache into this
            // replica's, or a reload may have swapped in a stack we did not
            // purge. Our own message does that too, unless it never arrives.
            // Idempotent, and cheap next to a Redis round trip.
            engine.load().engine().authenticator().purge(&t);
            published
        })
        .await
        .map_err(|e| Status::internal(format!("purge task: {e}")))?;
        match published {
            Ok(p) if p.epoch_started => {
                let n = p.receivers;
                tracing::info!(target = %what, replicas_notified = n, "purged from the cache and published to the fleet");
                Ok(Response::new(PurgeResponse {
                    fleet: true,
                    replicas_notified: n,
                }))
            }
            Ok(p) => Err(Status::unavailable(format!(
                "purged on the {} replica(s) that heard it, which stopped reading the shared cache; \
                 no new shared-cache epoch could be started yet (retried in the background): \
                 purge again to be sure",
                p.receivers
            ))),
            Err(e) => {
                tracing::error!(target = %what, error = %e, "purged here, but the fleet could not be told");
                Err(Status::unavailable(format!(
                    "purged on this replica only; the fleet could not be told: {e}"
                )))
            }
        }
    }
}

impl From<Explanation> for ExplainResponse {
    fn from(e: Explanation) -> ExplainResponse {
        ExplainResponse {
            allowed: e.allowed,
            http_status: u32::from(e.http_status),
            reason: e.reason,
            detail: e.detail,
            rule_id: e.rule_id,
            required_scopes: e.required_scopes,
            any_of: e.any_of,
            granted_scopes: e.granted_scopes,
            client_id: e.client_id,
            subject: e.subject,
            steps: e.steps,
            headers_to_set: e.headers_to_set.into_iter().collect(),
            headers_to_remove: e.headers_to_remove,
            response_headers: e.response_headers.into_iter().collect(),
            response_body: e.response_body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{AdminAuth, MIN_ADMIN_TOKEN_BYTES};
    use crate::config::ServerConfig;

    fn with_token(token: &str) -> anyhow::Result<AdminAuth> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, format!("{token}\n")).expect("write");
        AdminAuth::from_config(&ServerConfig {
            admin_token_file: Some(path),
            ..ServerConfig::default()
        })
    }

    #[test]
    fn a_guessable_admin_token_is_refused_at_start() {
        let short = "a".repeat(MIN_ADMIN_TOKEN_BYTES - 1);
        let err = with_token(&short).err().expect("refused").to_string();
        assert!(err.contains("at least 16"), "{err}");
        // Surrounding whitespace (a file's newline) does not count toward it.
        assert!(with_token(&format!("  {short}  ")).is_err());
        let ok = with_token(&"a".repeat(MIN_ADMIN_TOKEN_BYTES)).expect("long enough");
        assert!(ok.token_digest.load().is_some());
    }

    mod purge_races {
        use super::super::AdminService;
        use crate::admin_proto::admin_server::Admin;
        use crate::admin_proto::purge_token_request::Target;
        use crate::admin_proto::PurgeTokenRequest;
        use crate::authn::cache::Purge;
        use crate::authn::fleet::purge::{CacheKey, PurgeTarget};
        use crate::authn::fleet::Fleet;
        use crate::authn::{Authenticator, AuthnError, Identity};
        use crate::authorizer::Authorizer;
        use crate::config::Config;
        use crate::extract::credential::Token;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex, PoisonError};

        /// What races a purge while it is being published.
        type Race = Box<dyn FnOnce() + Send>;

        /// A cache holding one token's entry; its first purge runs `racing`.
        #[derive(Default)]
        struct OneEntry {
            holds: AtomicBool,
            purges: AtomicUsize,
            racing: Mutex<Option<Race>>,
        }

        impl Authenticator for OneEntry {
            async fn authenticate(&self, _token: &Token) -> Result<Arc<Identity>, AuthnError> {
                Ok(Arc::new(Identity::default()))
            }
        }

        impl Purge for OneEntry {
            fn purge_key(&self, token: &Token) -> CacheKey {
                *token.digest()
            }

            fn purge(&self, _target: &PurgeTarget) {
                self.purges.fetch_add(1, Ordering::SeqCst);
                self.holds.store(false, Ordering::SeqCst);
                let racing = self.racing.lock().unwrap_or_else(PoisonError::into_inner).take();
                if let Some(race) = racing {
                    race();
                }
            }
        }

        fn holding() -> Arc<Authorizer<OneEntry>> {
            let cache = OneEntry::default();
            cache.holds.store(true, Ordering::SeqCst);
            Arc::new(Authorizer::new(&Config::default(), cache).expect("authorizer"))
        }

        fn cache(a: &Authorizer<OneEntry>) -> &OneEntry {
            a.engine().authenticator()
        }

        async fn purge_token(admin: &AdminService<OneEntry>) {
            let request = tonic::Request::new(PurgeTokenRequest {
                target: Some(Target::Token("the-token".into())),
            });
            let e = admin
                .purge_token(request)
                .await
                .expect_err("the fleet could not be told");
            assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        }

        /// While a purge is being published, a check reads the token back
        /// from the shared cache into this replica's cache (its epoch has
        /// not stepped yet), or a reload swaps in another stack. Once the
        /// publication is over (here it fails, so our own message never
        /// comes back to purge again), neither holds the token: before,
        /// both kept it for up to ttl_ms.
        #[tokio::test]
        async fn admin_purge_survives_a_concurrent_shared_read_or_reload() {
            let secret = tempfile::NamedTempFile::new().expect("tmp");
            // Redis cannot be reached: the publication fails.
            let fleet = Fleet::unreachable_for_tests(&secret, false);

            let running = holding();
            let engine = Arc::new(arc_swap::ArcSwap::new(running.clone()));
            let admin = AdminService::new(engine.clone(), Some(fleet.clone()));
            let again = running.clone();
            let read_back: Race = Box::new(move || cache(&again).holds.store(true, Ordering::SeqCst));
            *cache(&running).racing.lock().unwrap_or_else(PoisonError::into_inner) = Some(read_back);
            purge_token(&admin).await;
            assert!(
                !cache(&running).holds.load(Ordering::SeqCst),
                "read back during the publication"
            );

            let old = holding();
            let new = holding();
            engine.store(old.clone());
            let (swap, next) = (engine.clone(), new.clone());
            let reload: Race = Box::new(move || swap.store(next));
            *cache(&old).racing.lock().unwrap_or_else(PoisonError::into_inner) = Some(reload);
            purge_token(&admin).await;
            assert!(!cache(&old).holds.load(Ordering::SeqCst));
            assert!(
                !cache(&new).holds.load(Ordering::SeqCst),
                "the stack a reload swapped in was not purged"
            );
            assert_eq!(cache(&new).purges.load(Ordering::SeqCst), 1);
        }
    }
}
