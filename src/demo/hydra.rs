//! `hydra-authz demo --hydra BIN`: the same demo in front of the real Ory
//! Hydra instead of the built-in issuer. Hydra runs on the issuer's ports
//! (4444 public, 4445 admin) with an in-memory database and telemetry off
//! (`--sqa-opt-out`); the two seed clients are created with Hydra's own CLI,
//! with the same ids and secrets as the built-in issuer's, so the banner's
//! commands work unchanged. DEVELOPMENT ONLY (fixed system secret).

use super::issuer::IssuerAddrs;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// A development-only value; Hydra needs 16+ characters.
const DEV_SECRET: &str = "hydra-authz-demo-dev-secret-change-me";

/// The running Hydra; stopped when dropped.
pub struct RealHydra {
    _child: Child,
    bin: PathBuf,
    pub addrs: IssuerAddrs,
}

impl RealHydra {
    pub async fn start(bin: &Path, addrs: IssuerAddrs) -> anyhow::Result<RealHydra> {
        let child = Command::new(bin)
            .args(["serve", "all", "--dev", "--sqa-opt-out"])
            .env("DSN", "memory")
            .env("SQA_OPT_OUT", "true")
            .env("SECRETS_SYSTEM", DEV_SECRET)
            .env("URLS_SELF_ISSUER", format!("http://{}/", addrs.public))
            .env("URLS_SELF_ADMIN", format!("http://{}/", addrs.admin))
            .env("SERVE_PUBLIC_HOST", addrs.public.ip().to_string())
            .env("SERVE_PUBLIC_PORT", addrs.public.port().to_string())
            .env("SERVE_ADMIN_HOST", addrs.admin.ip().to_string())
            .env("SERVE_ADMIN_PORT", addrs.admin.port().to_string())
            .env("LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start Hydra from {}", bin.display()))?;
        let hydra = RealHydra {
            _child: child,
            bin: bin.to_owned(),
            addrs,
        };
        hydra.wait_ready().await?;
        for (id, scope) in [("reader", "read_date"), ("writer", "post_echo")] {
            hydra.create_client(id, scope).await?;
        }
        Ok(hydra)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let url = format!("http://{}/health/ready", self.addrs.admin);
        for _ in 0..300 {
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("Hydra did not become ready on {} within 30 s", self.addrs.admin)
    }

    /// `hydra create oauth2-client`, as the seed article does.
    async fn create_client(&self, id: &str, scope: &str) -> anyhow::Result<()> {
        let out = Command::new(&self.bin)
            .args(["create", "oauth2-client", "--endpoint"])
            .arg(format!("http://{}", self.addrs.admin))
            .args(["--id", id, "--secret", &format!("{id}-secret")])
            .args(["--grant-type", "client_credentials", "--scope", scope])
            .env("SQA_OPT_OUT", "true")
            .stdout(Stdio::null())
            .output()
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "hydra create oauth2-client {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// A client-credentials token for one of the seed clients.
    pub async fn mint(&self, id: &str, scope: &str) -> anyhow::Result<String> {
        let client = reqwest::Client::builder().no_proxy().build()?;
        let secret = format!("{id}-secret");
        let bytes = client
            .post(self.addrs.token_url())
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", scope)])
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let body: serde_json::Value = serde_json::from_slice(&bytes)?;
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("no access_token in Hydra's answer")
    }
}
