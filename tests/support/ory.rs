//! Real Ory Hydra v2.3.0, built from the Go module proxy by
//! `scripts/install-hydra.sh` (cached per machine; `HYDRA_BIN` when the
//! test script already knows the path), started per test on loopback with
//! an in-memory SQLite database and telemetry off (`--sqa-opt-out`): traffic
//! never leaves the machine. Clients are created with Hydra's own CLI, as
//! the seed article does.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::{Child, Command};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// `SECRETS_SYSTEM`: Hydra needs 16+ characters; a test-only value.
const SECRET: &str = "hydra-authz-tests-system-secret-0123456789";

/// The Hydra binary: `HYDRA_BIN`, else built (once per machine) by the script.
pub fn hydra_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("HYDRA_BIN").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let out = std::process::Command::new(format!("{ROOT}/scripts/install-hydra.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/install-hydra.sh (needs Go: see README, Tests)");
        assert!(out.status.success(), "scripts/install-hydra.sh failed");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    })
    .clone()
}

/// How a Hydra is configured.
#[derive(Clone, Default)]
pub struct HydraOptions {
    /// `strategies.access_token: jwt` (else opaque `ory_at_…`).
    pub jwt: bool,
    /// `oauth2.token_hook` (env `OAUTH2_TOKEN_HOOK_URL`).
    pub token_hook: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub id: String,
    pub secret: String,
}

pub struct Hydra {
    child: Option<Child>,
    log: Arc<Mutex<Vec<u8>>>,
    pub public_port: u16,
    pub admin_port: u16,
    opts: HydraOptions,
}

impl Hydra {
    pub async fn start(opts: HydraOptions) -> Hydra {
        const ATTEMPTS: usize = 3;
        for attempt in 1..=ATTEMPTS {
            let mut h = Hydra {
                child: None,
                log: Arc::default(),
                public_port: super::free_port(),
                admin_port: super::free_port(),
                opts: opts.clone(),
            };
            match h.try_spawn().await {
                Ok(()) => return h,
                // A port free when picked was taken (by a parallel test)
                // before Hydra bound it: pick others.
                Err(log) if log.contains("address already in use") && attempt < ATTEMPTS => continue,
                Err(log) => panic!("hydra exited: {log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("hydra exited: {log}");
        }
    }

    /// Start Hydra and wait until ready; `Err(its log)` when it exited.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(hydra_binary());
        cmd.args(["serve", "all", "--dev", "--sqa-opt-out"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("DSN", "memory")
            .env("SQA_OPT_OUT", "true")
            .env("SECRETS_SYSTEM", SECRET)
            .env("URLS_SELF_ISSUER", self.issuer())
            .env("URLS_SELF_ADMIN", self.admin_url())
            .env("SERVE_PUBLIC_PORT", self.public_port.to_string())
            .env("SERVE_ADMIN_PORT", self.admin_port.to_string())
            .env("SERVE_PUBLIC_HOST", "127.0.0.1")
            .env("SERVE_ADMIN_HOST", "127.0.0.1")
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.opts.jwt {
            cmd.env("STRATEGIES_ACCESS_TOKEN", "jwt");
        }
        if let Some(hook) = &self.opts.token_hook {
            cmd.env("OAUTH2_TOKEN_HOOK_URL", hook);
        }
        let mut child = cmd.spawn().expect("start hydra");
        if let Some(err) = child.stderr.take() {
            super::collect_output(err, self.log.clone());
        }
        self.child = Some(child);
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = super::stack::http();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for url in [
            format!("{}health/ready", self.issuer()),
            format!("{}/health/ready", self.admin_url()),
        ] {
            while !client.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                if exited.is_some() {
                    return Err(self.log());
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "hydra not ready: {}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().expect("log")).into_owned()
    }

    /// Stop it (SIGKILL: an outage, not a shutdown).
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Start again on the same ports. The database is in memory, so
    /// clients and tokens are gone: create them again.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.spawn().await;
    }

    /// `iss`, exactly as Hydra writes it (with the trailing slash).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}/", self.public_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn introspection_url(&self) -> String {
        format!("{}/admin/oauth2/introspect", self.admin_url())
    }

    pub fn jwks_url(&self) -> String {
        format!("{}.well-known/jwks.json", self.issuer())
    }

    /// Hydra's own CLI against this Hydra; stdout, or panic with stderr.
    pub async fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(hydra_binary())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SQA_OPT_OUT", "true")
            .output()
            .await
            .expect("run the hydra CLI");
        assert!(
            out.status.success(),
            "hydra {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `hydra create oauth2-client --grant-type client_credentials --scope …`,
    /// as the seed article does; the id is Hydra's unless `id` is given.
    pub async fn create_client(&self, scope: &str, id: Option<&str>, extra: &[&str]) -> OAuthClient {
        let admin = self.admin_url();
        let mut args = vec![
            "create",
            "oauth2-client",
            "--endpoint",
            &admin,
            "--grant-type",
            "client_credentials",
            "--scope",
            scope,
            "--format",
            "json",
        ];
        let secret = id.map(|i| format!("{i}-secret-0123456789"));
        if let (Some(id), Some(secret)) = (id, &secret) {
            args.extend(["--id", id, "--secret", secret]);
        }
        args.extend(extra);
        let v: Value = serde_json::from_str(&self.cli(&args).await).expect("client JSON");
        OAuthClient {
            id: v["client_id"].as_str().expect("client_id").to_owned(),
            secret: v["client_secret"].as_str().expect("client_secret").to_owned(),
        }
    }

    /// The client-credentials grant at `/oauth2/token`; the error body on refusal.
    pub async fn token(&self, c: &OAuthClient, scope: Option<&str>) -> Result<String, (u16, Value)> {
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            form.push(("scope", s));
        }
        let r = super::stack::http()
            .post(format!("{}oauth2/token", self.issuer()))
            .basic_auth(&c.id, Some(&c.secret))
            .form(&form)
            .send()
            .await
            .expect("token endpoint");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("token JSON");
        match body["access_token"].as_str() {
            Some(t) if status == 200 => Ok(t.to_owned()),
            _ => Err((status, body)),
        }
    }

    /// `hydra revoke token` (RFC 7009 at the public port), as the owning client.
    pub async fn revoke(&self, c: &OAuthClient, token: &str) {
        let public = self.issuer();
        self.cli(&[
            "revoke",
            "token",
            "--endpoint",
            public.trim_end_matches('/'),
            "--client-id",
            &c.id,
            "--client-secret",
            &c.secret,
            token,
        ])
        .await;
    }

    /// Rotate the JWT access-token signing key (`hydra create jwks`).
    pub async fn rotate_access_token_key(&self) {
        let admin = self.admin_url();
        self.cli(&[
            "create",
            "jwks",
            "hydra.jwt.access-token",
            "--alg",
            "RS256",
            "--endpoint",
            &admin,
            "--format",
            "json",
        ])
        .await;
    }

    /// The raw introspection answer, for the contract test.
    pub async fn introspect_raw(&self, token: &str) -> Value {
        super::stack::http()
            .post(self.introspection_url())
            .form(&[("token", token)])
            .send()
            .await
            .expect("introspect")
            .json()
            .await
            .expect("JSON")
    }

    /// An OpenID Connect ID token (and a refresh token) from Hydra's
    /// authorization-code flow, driven headless through the admin API's
    /// login and consent acceptance: `(id_token, refresh_token)`.
    pub async fn id_and_refresh_token(&self, subject: &str) -> (String, String) {
        let admin = self.admin_url();
        let redirect = "http://127.0.0.1:9/cb";
        let v: Value = serde_json::from_str(
            &self
                .cli(&[
                    "create",
                    "oauth2-client",
                    "--endpoint",
                    &admin,
                    "--grant-type",
                    "authorization_code,refresh_token",
                    "--response-type",
                    "code",
                    "--scope",
                    "openid,offline_access,read_date",
                    "--redirect-uri",
                    redirect,
                    "--format",
                    "json",
                ])
                .await,
        )
        .expect("client JSON");
        let (id, secret) = (
            v["client_id"].as_str().expect("id").to_owned(),
            v["client_secret"].as_str().expect("secret").to_owned(),
        );
        let browser = reqwest::Client::builder()
            .no_proxy()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("browser");
        let location = |r: &reqwest::Response| {
            r.headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .expect("redirect")
                .to_owned()
        };
        let query = |url: &str, key: &str| {
            reqwest::Url::parse(url)
                .expect("url")
                .query_pairs()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("{key} in {url}"))
        };
        let r = browser
            .get(format!("{}oauth2/auth", self.issuer()))
            .query(&[
                ("client_id", id.as_str()),
                ("response_type", "code"),
                ("scope", "openid offline_access read_date"),
                ("redirect_uri", redirect),
                ("state", "state-0123456789"),
                ("nonce", "nonce-0123456789"),
            ])
            .send()
            .await
            .expect("auth");
        // Accept the login (then the consent) challenge on the admin API
        // and follow where Hydra sends the browser next.
        let accept = |step: &'static str, challenge: String, body: Value| {
            let (browser, admin) = (browser.clone(), admin.clone());
            async move {
                let accepted: Value = browser
                    .put(format!("{admin}/admin/oauth2/auth/requests/{step}/accept"))
                    .query(&[(format!("{step}_challenge"), challenge)])
                    .json(&body)
                    .send()
                    .await
                    .expect("accept")
                    .json()
                    .await
                    .expect("JSON");
                browser
                    .get(accepted["redirect_to"].as_str().expect("redirect_to"))
                    .send()
                    .await
                    .expect("follow")
            }
        };
        let login = query(&location(&r), "login_challenge");
        let r = accept("login", login, serde_json::json!({ "subject": subject })).await;
        let consent = query(&location(&r), "consent_challenge");
        let scopes = serde_json::json!({ "grant_scope": ["openid", "offline_access", "read_date"] });
        let r = accept("consent", consent, scopes).await;
        let code = query(&location(&r), "code");
        let tokens: Value = browser
            .post(format!("{}oauth2/token", self.issuer()))
            .basic_auth(&id, Some(&secret))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("JSON");
        (
            tokens["id_token"].as_str().expect("id_token").to_owned(),
            tokens["refresh_token"].as_str().expect("refresh_token").to_owned(),
        )
    }
}

impl Drop for Hydra {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.start_kill();
        }
    }
}

/// A Hydra token hook (its URL) that adds `{"tenant": "acme"}` to every
/// access token's `ext`, as a deployment's hook would add a tenant.
pub async fn token_hook_adding_tenant() -> String {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(|| async {
            axum::Json(serde_json::json!({"session": {"access_token": {"tenant": "acme"}}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind(super::lo0()).await.expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    hook
}
