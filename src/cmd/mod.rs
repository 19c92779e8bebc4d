//! One module per CLI command; `main.rs` only parses arguments and dispatches.

pub mod check;
pub mod config;
pub mod rules;
pub mod token;

/// Read a secret from exactly one of an env var or a file (trimmed).
pub fn read_secret_arg(env: Option<&str>, file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let raw = match (env, file) {
        (Some(var), None) => {
            std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))?
        }
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        _ => anyhow::bail!("give exactly one of the env-var or file options"),
    };
    let secret = raw.trim().to_owned();
    anyhow::ensure!(!secret.is_empty(), "the secret is empty");
    Ok(secret)
}
