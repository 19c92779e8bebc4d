//! `hydra-authz check`: run the server's exact decision for one request and
//! explain it. Same engine and same `explain` as the admin `Explain` RPC.

use crate::config::Config;
use crate::extract::AuthzRequest;
use crate::respond::explanation::Explanation;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hydra-authz check --method GET --path /date --token-env READER_TOKEN
  hydra-authz check --method POST --path /echo --header 'authorization: Bearer abc' --output json
  hydra-authz check --method GET --path /reports --context-extension required_scopes=read_date

Exit codes: 0 allow, 1 deny, 2 error: bad arguments or config, or no decision
could be made (the server would answer 5xx, e.g. Hydra unreachable: 503).")]
pub struct CheckArgs {
    /// HTTP method; upper-cased, as clients send it.
    #[arg(long, default_value = "GET")]
    pub method: String,
    #[arg(long)]
    pub path: String,
    #[arg(long, default_value = "")]
    pub host: String,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", allow_hyphen_values = true)]
    pub headers: Vec<String>,
    /// The bearer token itself (visible in your shell history: prefer --token-env or --token-file).
    // Tokens are base64url and may start with '-': take the next word as the
    // value whatever it looks like.
    #[arg(long, allow_hyphen_values = true, conflicts_with_all = ["token_env", "token_file"])]
    pub token: Option<String>,
    /// Environment variable holding the bearer token.
    #[arg(long, conflicts_with = "token_file")]
    pub token_env: Option<String>,
    /// File holding the bearer token.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Envoy per-route context extension, `key=value`; repeatable.
    #[arg(long = "context-extension", value_name = "KEY=VALUE", allow_hyphen_values = true)]
    pub context_extensions: Vec<String>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// What `check` concluded, for its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Allow,
    Deny,
    /// The server would answer 5xx: it could not decide (and so denies).
    Undecided,
}

impl Exit {
    pub fn exit_code(self) -> u8 {
        match self {
            Exit::Allow => 0,
            Exit::Deny => 1,
            Exit::Undecided => 2,
        }
    }
}

/// A header as the server receives it: a repeated name joined with ','
/// (as Envoy passes it), so two credentials stay two and are refused.
fn add_header(headers: &mut HashMap<String, String>, name: String, value: &str) {
    headers
        .entry(name)
        .and_modify(|v| {
            v.push(',');
            v.push_str(value);
        })
        .or_insert_with(|| value.to_owned());
}

pub async fn run(config: &Config, args: CheckArgs) -> anyhow::Result<Exit> {
    let mut headers = HashMap::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected 'Name: value'"))?;
        add_header(&mut headers, k.trim().to_ascii_lowercase(), v.trim());
    }
    let token = match (&args.token, &args.token_env, &args.token_file) {
        (Some(t), _, _) => Some(t.clone()),
        (None, None, None) => None,
        (None, env, file) => Some(crate::secret::read(env.as_deref(), file.as_deref())?),
    };
    if let Some(t) = token {
        add_header(&mut headers, "authorization".into(), &format!("Bearer {t}"));
    }
    let mut ext = HashMap::new();
    for kv in &args.context_extensions {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--context-extension {kv:?}: expected key=value"))?;
        ext.insert(k.to_owned(), v.to_owned());
    }
    let engine = crate::authorizer::build(config, Default::default(), None)?;
    let method = args.method.to_ascii_uppercase();
    if method != args.method {
        eprintln!(
            "note: method {:?} checked as {method:?}; Envoy and the forward-auth door send it as the client wrote it, \
             and a lower-case method is refused (400 bad_request)",
            args.method
        );
    }
    let req = AuthzRequest::from_parts(&method, &args.host, &args.path, &headers, ext);
    let explained = crate::respond::explanation::explain(&engine, &req).await;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&to_json(&explained, config))?),
        Output::Text => print!("{}", to_text(&explained, config)),
    }
    Ok(if explained.allowed {
        Exit::Allow
    } else if explained.http_status >= 500 {
        eprintln!(
            "hydra-authz: no decision could be made ({}); the server would answer {} (fail closed)",
            explained.reason, explained.http_status
        );
        Exit::Undecided
    } else {
        Exit::Deny
    })
}

fn strategy(config: &Config) -> String {
    format!("{:?}", config.authorization.scope_strategy).to_ascii_lowercase()
}

pub fn to_json(e: &Explanation, config: &Config) -> serde_json::Value {
    serde_json::json!({
        "allowed": e.allowed,
        "http_status": e.http_status,
        "reason": e.reason,
        "detail": e.detail,
        "rule_id": e.rule_id,
        "required_scopes": e.required_scopes,
        "any_of": e.any_of,
        "granted_scopes": e.granted_scopes,
        "scope_strategy": strategy(config),
        "client_id": e.client_id,
        "subject": e.subject,
        "steps": e.steps,
        "headers_to_set": e.headers_to_set,
        "headers_to_remove": e.headers_to_remove,
        "response_headers": e.response_headers,
        "response_body": e.response_body,
    })
}

pub fn to_text(e: &Explanation, config: &Config) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let verdict = if e.allowed { "ALLOW" } else { "DENY" };
    let _ = writeln!(
        s,
        "{verdict} {} {}{}",
        e.http_status,
        e.reason,
        if e.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", e.detail)
        }
    );
    let or_dash = |v: &str| if v.is_empty() { "-".to_owned() } else { v.to_owned() };
    let _ = writeln!(s, "  rule:      {}", or_dash(&e.rule_id));
    let mut needs = e.required_scopes.join(" ");
    if !e.any_of.is_empty() {
        let alternatives: Vec<String> = e.any_of.iter().map(|set| format!("[{set}]")).collect();
        if !needs.is_empty() {
            needs.push_str(" and ");
        }
        needs.push_str(&format!("one of {}", alternatives.join(" or ")));
    }
    let _ = writeln!(s, "  needs:     {} (strategy {})", or_dash(&needs), strategy(config));
    let _ = writeln!(s, "  granted:   {}", or_dash(&e.granted_scopes.join(" ")));
    let _ = writeln!(
        s,
        "  client_id: {}   subject: {}",
        or_dash(&e.client_id),
        or_dash(&e.subject)
    );
    let _ = writeln!(s, "steps:");
    for (n, step) in e.steps.iter().enumerate() {
        let _ = writeln!(s, "  {}. {step}", n + 1);
    }
    if e.allowed {
        let _ = writeln!(s, "upstream headers:");
        let mut set: Vec<_> = e.headers_to_set.iter().collect();
        set.sort();
        for (k, v) in set {
            let _ = writeln!(s, "  set    {k}: {v}");
        }
        for k in &e.headers_to_remove {
            let _ = writeln!(s, "  remove {k}");
        }
    } else {
        let _ = writeln!(s, "response headers:");
        let mut hs: Vec<_> = e.response_headers.iter().collect();
        hs.sort();
        for (k, v) in hs {
            let _ = writeln!(s, "  {k}: {v}");
        }
        let _ = writeln!(s, "response body:\n  {}", e.response_body);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Two credentials given stay two (joined as Envoy joins a repeated
    /// header), so the explanation is the server's refusal, not the last one.
    #[tokio::test]
    async fn repeated_credentials_are_refused_as_the_server_does() {
        let mut headers = HashMap::new();
        add_header(&mut headers, "authorization".into(), "Bearer a");
        add_header(&mut headers, "authorization".into(), "Bearer b");
        assert_eq!(headers["authorization"], "Bearer a,Bearer b");
        let config = Config::from_toml_str(crate::demo::DEFAULT_CONFIG).expect("config");
        let engine = crate::authorizer::build(&config, Default::default(), None).expect("engine");
        let req = AuthzRequest::from_parts("GET", "api", "/date", &headers, HashMap::new());
        let explained = crate::respond::explanation::explain(&engine, &req).await;
        assert_eq!(
            (explained.http_status, explained.reason.as_str()),
            (400, "invalid_request"),
            "{}",
            explained.detail
        );
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CheckArgs,
    }

    /// base64url tokens can start with '-' (seen from oidc-provider in CI).
    #[test]
    fn values_may_start_with_a_hyphen() {
        let cli = Cli::try_parse_from([
            "check",
            "--path",
            "/date",
            "--token",
            "-Mx_y-z",
            "--header",
            "-x: 1",
            "--context-extension",
            "-k=v",
        ])
        .expect("parses");
        assert_eq!(cli.args.token.as_deref(), Some("-Mx_y-z"));
        assert_eq!(cli.args.headers, vec!["-x: 1"]);
        assert_eq!(cli.args.context_extensions, vec!["-k=v"]);
    }
}
