//! Our admin gRPC API (`proto/hydra_authz/admin/v1/admin.proto`), served on
//! its own listener (`server.admin_addr`) and only with credentials: it can
//! read any token's identity, the rule table, and empty the cache.

use crate::admin_proto::admin_server::Admin;
use crate::admin_proto::purge_token_request::Target;
use crate::admin_proto::{ExplainRequest, ExplainResponse, PurgeAllRequest, PurgeResponse, PurgeTokenRequest};
use crate::authn::cache::Purge;
use crate::authn::Authenticator;
use crate::decision::request::AuthzRequest;
use crate::decision::token::Token;
use crate::decision::verdict::{Decision, Responder};
use crate::decision::Engine;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The admin listener's bearer-token check (mTLS, when configured, is
/// enforced by the TLS layer before a request gets here). Only a digest of
/// the token is kept, and digests are compared, so neither the token nor
/// its length leaks through timing.
#[derive(Clone)]
pub struct AdminAuth {
    token_digest: Option<[u8; 32]>,
}

impl AdminAuth {
    pub fn from_config(server: &crate::config::ServerConfig) -> anyhow::Result<AdminAuth> {
        use anyhow::Context;
        let token = match (&server.admin_token_env, &server.admin_token_file) {
            (None, None) => None,
            (env, file) => Some(
                crate::secret::read(env.as_deref(), file.as_deref())
                    .context("server.admin_token: cannot read the admin token")?,
            ),
        };
        Ok(AdminAuth {
            token_digest: token.map(|t| digest(&t)),
        })
    }
}

fn digest(v: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(v.as_bytes()).into()
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.token_digest else {
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
    engine: Arc<arc_swap::ArcSwap<Engine<A>>>,
}

impl<A> AdminService<A> {
    pub fn new(engine: Arc<arc_swap::ArcSwap<Engine<A>>>) -> Self {
        AdminService { engine }
    }
}

#[tonic::async_trait]
impl<A: Authenticator + Purge> Admin for AdminService<A> {
    async fn explain(&self, request: Request<ExplainRequest>) -> Result<Response<ExplainResponse>, Status> {
        let r = request.into_inner();
        let req = AuthzRequest::from_parts(&r.method, &r.host, &r.path, &r.headers, r.context_extensions);
        Ok(Response::new(explain(&self.engine.load_full(), &req).await))
    }

    async fn purge_token(&self, request: Request<PurgeTokenRequest>) -> Result<Response<PurgeResponse>, Status> {
        let engine = self.engine.load_full();
        let cache = engine.authenticator();
        match request.into_inner().target {
            Some(Target::Token(t)) if !t.is_empty() => {
                let token = Token::new(t);
                cache.purge_token(&token).await;
                tracing::info!(token_fp = %token.fingerprint(), "purged a token from the cache");
            }
            Some(Target::Fingerprint(fp)) => {
                cache.purge_fingerprint(&fp).map_err(Status::invalid_argument)?;
                tracing::info!(token_fp = %fp, "purged a fingerprint from the cache");
            }
            _ => return Err(Status::invalid_argument("give a token or a fingerprint")),
        }
        Ok(Response::new(PurgeResponse {}))
    }

    async fn purge_all(&self, _request: Request<PurgeAllRequest>) -> Result<Response<PurgeResponse>, Status> {
        self.engine.load_full().authenticator().purge_all();
        tracing::info!("purged the whole cache");
        Ok(Response::new(PurgeResponse {}))
    }
}

/// Shared by the RPC and the CLI: run the engine in explain mode and describe the result.
pub async fn explain<A: Authenticator>(engine: &Engine<A>, req: &AuthzRequest) -> ExplainResponse {
    let (o, steps) = engine.explain(req).await;
    let identity = o.identity.clone().unwrap_or_default();
    let mut resp = ExplainResponse {
        allowed: o.is_allowed(),
        rule_id: o.rule_id.clone().unwrap_or_default(),
        required_scopes: o.required_scopes.clone(),
        any_of: o.any_of.iter().map(|set| set.join(" ")).collect(),
        granted_scopes: identity.scopes.iter().map(|s| s.to_string()).collect(),
        client_id: identity.client_id.as_deref().unwrap_or_default().to_owned(),
        subject: identity.subject.as_deref().unwrap_or_default().to_owned(),
        steps,
        ..Default::default()
    };
    match &o.decision {
        Decision::Allow => {
            resp.http_status = 200;
            resp.reason = "allowed".into();
            let h = engine
                .responder()
                .upstream_headers(if o.public { None } else { o.identity.as_deref() });
            resp.headers_to_set = h.set.into_iter().collect();
            resp.headers_to_remove = h.remove;
        }
        Decision::Deny(reason) => {
            resp.http_status = u32::from(reason.http_status());
            resp.reason = reason.label().into();
            resp.detail = reason.detail();
            resp.response_headers = engine.responder().deny_headers(reason).into_iter().collect();
            resp.response_body = Responder::problem_body(reason);
        }
    }
    resp
}
