//! `hydra-authz token`: fetch an OAuth2 client-credentials access token and
//! print only the token, for `curl -H "Authorization: Bearer $(hydra-authz token ...)"`.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  export READER_SECRET=reader-secret
  hydra-authz token --token-url http://127.0.0.1:4444/oauth2/token --client-id reader \\
      --client-secret-env READER_SECRET --scope read_date
  curl -H \"Authorization: Bearer $(hydra-authz token ...)\" http://127.0.0.1:8080/date")]
pub struct TokenArgs {
    /// The token endpoint (Hydra: https://<public host>/oauth2/token).
    #[arg(long)]
    pub token_url: String,
    #[arg(long)]
    pub client_id: String,
    /// Environment variable holding the client secret.
    #[arg(
        long,
        required_unless_present = "client_secret_file",
        conflicts_with = "client_secret_file"
    )]
    pub client_secret_env: Option<String>,
    /// File holding the client secret.
    #[arg(long)]
    pub client_secret_file: Option<PathBuf>,
    /// Scope to request; repeatable or space-separated.
    #[arg(long)]
    pub scope: Vec<String>,
    /// Audience to request (Hydra's `audience` parameter); repeatable.
    #[arg(long)]
    pub audience: Vec<String>,
    /// Send credentials in the form body (client_secret_post) instead of HTTP Basic.
    #[arg(long)]
    pub client_secret_post: bool,
}

pub async fn run(args: &TokenArgs) -> anyhow::Result<String> {
    let secret = crate::secret::read(args.client_secret_env.as_deref(), args.client_secret_file.as_deref())?;
    let mut form = vec![("grant_type", "client_credentials".to_owned())];
    let scope = args.scope.join(" ");
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    let audience = args.audience.join(" ");
    if !audience.is_empty() {
        form.push(("audience", audience));
    }
    if let Ok(url) = reqwest::Url::parse(&args.token_url) {
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback =
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if url.scheme() == "http" && !loopback {
            eprintln!(
                "warning: {} is plain http: the client secret crosses the network in clear",
                url.origin().ascii_serialization()
            );
        }
    }
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut req = client.post(&args.token_url);
    if args.client_secret_post {
        form.push(("client_id", args.client_id.clone()));
        form.push(("client_secret", secret));
    } else {
        // RFC 6749 §2.3.1: form-encode both parts before Basic encoding.
        let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        req = req.basic_auth(enc(&args.client_id), Some(enc(&secret)));
    }
    let resp = req.form(&form).send().await?;
    let status = resp.status();
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await?).unwrap_or_default();
    if !status.is_success() {
        let error = body.get("error").and_then(|v| v.as_str()).unwrap_or("unknown_error");
        let desc = body.get("error_description").and_then(|v| v.as_str()).unwrap_or("");
        anyhow::bail!("token endpoint answered HTTP {}: {error} {desc}", status.as_u16());
    }
    body.get("access_token")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("the token endpoint's answer has no access_token"))
}
