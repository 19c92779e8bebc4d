//! Reading a secret from exactly one of an environment variable or a file,
//! for the config (introspection credentials) and the CLI alike.

/// The trimmed secret; an error names what is missing, never the value.
pub fn read(env: Option<&str>, file: Option<&std::path::Path>) -> anyhow::Result<String> {
    let raw = match (env, file) {
        (Some(var), None) => {
            std::env::var(var).map_err(|_| anyhow::anyhow!("environment variable {var} is not set"))?
        }
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        _ => anyhow::bail!("give exactly one of an environment variable or a file for the secret"),
    };
    let secret = raw.trim().to_owned();
    anyhow::ensure!(!secret.is_empty(), "the secret is empty");
    Ok(secret)
}
