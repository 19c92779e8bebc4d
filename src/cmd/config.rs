//! `hydra-authz config check`: validate, lint, print the effective config.

use crate::config::Config;
use std::path::{Path, PathBuf};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  hydra-authz config check --config config/hydra-authz.toml
  HYDRA_AUTHZ_INTROSPECTION__URL=https://acme.projects.oryapis.com/admin/oauth2/introspect hydra-authz config check
  hydra-authz config check --openapi config/examples/seed-api.openapi.yaml   # also warn about routes without a rule
  hydra-authz config check --envoy deploy/envoy/envoy.yaml                    # ... and Envoy routes no rule can allow
  cat deploy/envoy-gateway/manifests/*.yaml > all.yaml
  hydra-authz config check --envoy all.yaml                                   # Envoy Gateway HTTPRoutes + SecurityPolicies too")]
pub struct ConfigCheckArgs {
    /// An OpenAPI document listing the API's routes: warn about operations no rule matches.
    #[arg(long)]
    pub openapi: Option<PathBuf>,
    /// An Envoy bootstrap, or Envoy Gateway manifests (HTTPRoutes and
    /// SecurityPolicies in one multi-document YAML): warn about routes behind
    /// ext_authz that have no per-route policy and that no rule can match
    /// (all denied), and about HTTPRoutes no extAuth policy covers.
    #[arg(long)]
    pub envoy: Option<PathBuf>,
}

/// Warnings about a valid config: rules that can never match, API routes
/// (OpenAPI operations, Envoy routes) no rule covers.
pub fn lint(config: &Config, openapi: Option<&Path>, envoy: Option<&Path>) -> anyhow::Result<Vec<String>> {
    let rules = crate::decision::rules::RuleSet::compile(&config.rules)?;
    let mut warnings: Vec<String> = rules
        .shadowed()
        .into_iter()
        .map(|(later, earlier)| {
            format!("rule {later:?} can never match: rule {earlier:?} comes first and matches all its requests")
        })
        .chain(rules.shadowed_ignoring_case().into_iter().map(|(later, earlier)| {
            format!(
                "rule {later:?} is decided by rule {earlier:?} for routers that ignore case (Express, ASP.NET \
                 Core): that rule comes first and matches all its requests in lower case; put {later:?} first"
            )
        }))
        .collect();
    if let Some(path) = openapi {
        let doc = super::openapi::parse(&std::fs::read_to_string(path)?)?;
        for (method, template) in super::openapi::operations(&doc, None) {
            // A concrete example of the templated path: `{id}` -> `id`.
            let sample: String = template.replace(['{', '}'], "");
            if !rules.covers_on_some_host(&method, &sample) {
                warnings.push(format!(
                    "{method} {template} (from {}) has no rule: it will be denied",
                    path.display()
                ));
            }
        }
    }
    if let Some(path) = envoy {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let found = super::envoy_routes::read(&text)?;
        for route in super::envoy_routes::uncovered(&found.routes, &rules) {
            warnings.push(format!(
                "Envoy route ({route}, in {}) has no per-route policy and no rule can match it: every request there is denied",
                path.display()
            ));
        }
        for route in found.unprotected {
            warnings.push(format!(
                "{route} (in {}) is not covered by any extAuth SecurityPolicy: it is served without authorization",
                path.display()
            ));
        }
    }
    Ok(warnings)
}

pub fn run(path: &Path, config: &Config, args: &ConfigCheckArgs) -> anyhow::Result<()> {
    // Also build the engine: reads the referenced secrets and compiles rules.
    crate::authorizer::build(config, Default::default(), None)?;
    // And the admin token, which `serve` refuses when it is too short.
    if config.server.admin_enabled() {
        crate::server::admin::AdminAuth::from_config(&config.server)?;
    }
    for w in lint(config, args.openapi.as_deref(), args.envoy.as_deref())? {
        eprintln!("warning: {w}");
    }
    println!("# {}: OK", path.display());
    print!("{}", config.to_redacted_toml());
    Ok(())
}
