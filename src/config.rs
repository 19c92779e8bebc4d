//! Configuration: built-in defaults, then a TOML file, then `HYDRA_AUTHZ_*`
//! environment variables (`__` separates nesting levels). Everything is
//! validated at load time so a bad value stops start-up with the key named,
//! instead of surfacing as a wrong decision later.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Defined beside the code it configures; listed here with every other key.
pub use crate::authn::config::{
    redact_url_secrets, AuthKind, CacheConfig, ClientTls, IntrospectionAuth, IntrospectionConfig, JwtAlgorithm,
    JwtConfig, ResilienceConfig, VerifyMode,
};
pub use crate::authn::fleet::ClusterConfig;
pub use crate::decision::config::{AuthorizationConfig, RuleConfig};
pub use crate::extract::forwarded::ForwardAuthConfig;
pub use crate::respond::headers::HeadersConfig;
pub use crate::respond::resource_metadata::ResourceMetadataConfig;
pub use crate::respond::upstream_jwt::UpstreamJwtConfig;
pub use crate::telemetry::config::{LogConfig, LogFormat, OtlpProtocol, Propagator, TelemetryConfig};

/// Upper bound of `introspection.cache.stale_if_error_ms`.
pub const MAX_STALE_IF_ERROR_MS: u64 = 3_600_000;

pub const DEFAULT_CONFIG_PATH: &str = "config/hydra-authz.toml";
pub const ENV_PREFIX: &str = "HYDRA_AUTHZ_";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub introspection: IntrospectionConfig,
    pub headers: HeadersConfig,
    pub authorization: AuthorizationConfig,
    pub rules: Vec<RuleConfig>,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    /// The HTTP forward-auth front door (nginx, Caddy, Traefik, Envoy
    /// `http_service`); off unless `forward_auth.addr` is set.
    pub forward_auth: ForwardAuthConfig,
    /// RFC 9728 protected resource metadata on `server.http_addr`; off
    /// unless `resource_metadata.resource` is set.
    pub resource_metadata: ResourceMetadataConfig,
    /// A signed identity JWT for the upstream on every allow; off unless
    /// `upstream_jwt.enabled`.
    pub upstream_jwt: UpstreamJwtConfig,
    /// The fleet on Redis: purges reach every replica, an optional shared
    /// cache; off unless `cluster.redis_url` is set.
    pub cluster: ClusterConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Envoy ext_authz + gRPC health + admin API.
    pub grpc_addr: SocketAddr,
    /// `/healthz`, `/readyz`.
    pub http_addr: SocketAddr,
    /// Tokio worker threads; 0: one per CPU this process may use (cgroup
    /// quota included). Read at start only.
    pub worker_threads: usize,
    /// On SIGTERM, how long to keep serving while already reporting not
    /// ready (`/readyz` 503, gRPC health NOT_SERVING), so load balancers and
    /// Envoy stop sending before the listeners close. 0: close at once.
    pub shutdown_delay_ms: u64,
    /// How long a shutdown waits for in-flight checks before giving up.
    pub drain_timeout_ms: u64,
    pub tls: ServerTls,
    /// The admin gRPC API (Explain, PurgeToken, PurgeAll): its own listener,
    /// never the Check port. Served only when credentials are configured
    /// (`admin_token_file`/`admin_token_env` and/or `admin_client_ca_file`),
    /// over TLS whenever `[server.tls]` has a certificate.
    pub admin_addr: SocketAddr,
    /// File holding the admin bearer token (`authorization: Bearer …`).
    pub admin_token_file: Option<PathBuf>,
    /// Or the name of an environment variable holding it (not `HYDRA_AUTHZ_*`,
    /// which is config).
    pub admin_token_env: Option<String>,
    /// mTLS on the admin listener: clients need a certificate this CA signed.
    /// Uses `[server.tls]`'s certificate and key.
    pub admin_client_ca_file: Option<PathBuf>,
    pub limits: ListenerLimits,
}

/// Bounds on every listener (Check, admin, probes), against peers that
/// open many connections, say nothing, or say it slowly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerLimits {
    /// Open connections per listener; at the limit new ones wait in the backlog.
    pub max_connections: usize,
    /// Open connections from one address on the probe and metrics listener
    /// (`http_addr`), past which a new one is closed at once, so that no
    /// one peer can hold every connection and fail the kubelet's probes.
    /// A proxy in front of this port (an Istio sidecar: every inbound
    /// connection from 127.0.0.6) is one peer. 0: no limit.
    pub http_max_connections_per_peer: usize,
    /// A connection must send its first bytes (or finish the TLS handshake)
    /// within this, and an HTTP/1 request its headers.
    pub header_read_timeout_ms: u64,
    /// A connection with no byte in either direction for this long is closed.
    /// Must exceed gRPC keep-alive interval + timeout, so live peers stay.
    pub idle_timeout_ms: u64,
    /// HTTP/2 streams (concurrent Checks) per gRPC connection.
    pub grpc_max_concurrent_streams: u32,
    /// HTTP/2 PING interval on gRPC connections; a peer that does not answer
    /// within `grpc_keepalive_timeout_ms` is disconnected.
    pub grpc_keepalive_interval_ms: u64,
    pub grpc_keepalive_timeout_ms: u64,
    /// A gRPC connection is closed gracefully (GOAWAY) after this long;
    /// clients reconnect. Reclaims connections that PINGs keep "active".
    pub grpc_max_connection_age_ms: u64,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 4096,
            http_max_connections_per_peer: 128,
            header_read_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            grpc_max_concurrent_streams: 1024,
            grpc_keepalive_interval_ms: 30_000,
            grpc_keepalive_timeout_ms: 10_000,
            grpc_max_connection_age_ms: 600_000,
        }
    }
}

/// TLS on the gRPC listener, for Envoy outside a mesh that provides mTLS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTls {
    /// PEM certificate chain; with `key_file`, turns TLS on.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// PEM CA bundle; when set, clients must present a certificate it signed (mTLS).
    pub client_ca_file: Option<PathBuf>,
    /// How often the three files are re-read; changed files are served to
    /// new connections (certificate renewal without a restart).
    pub reload_interval_ms: u64,
}

impl Default for ServerTls {
    fn default() -> Self {
        ServerTls {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            reload_interval_ms: 30_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        // Loopback by default: exposing an authorizer is a deliberate choice
        // (the Helm chart sets 0.0.0.0).
        ServerConfig {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 9191)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9192)),
            worker_threads: 0,
            shutdown_delay_ms: 0,
            drain_timeout_ms: 10_000,
            tls: ServerTls::default(),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 9193)),
            admin_token_file: None,
            admin_token_env: None,
            admin_client_ca_file: None,
            limits: ListenerLimits::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid configuration: `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl From<crate::decision::rules::RuleError> for ConfigError {
    fn from(e: crate::decision::rules::RuleError) -> ConfigError {
        ConfigError::Invalid {
            key: e.key,
            message: e.message,
        }
    }
}

impl Config {
    /// What the decision engine is built from.
    pub fn engine_settings(&self) -> crate::decision::Settings<'_> {
        crate::decision::Settings {
            authorization: &self.authorization,
            rules: &self.rules,
            claim_checks: crate::authn::ClaimChecks::from_config(&self.introspection),
            guarded_headers: self.guarded_headers(),
        }
    }

    /// Every header the upstream is told by an allow: the identity and
    /// claim headers and, when on, the identity JWT's.
    pub fn told_headers(&self) -> Vec<&str> {
        let mut told: Vec<&str> = self.headers.set_names().collect();
        if self.upstream_jwt.enabled {
            told.push(&self.upstream_jwt.header);
        }
        told
    }

    /// The headers a request may not spell with a separator other than
    /// `-`/`_`: every header an allow sets on the upstream request (the
    /// identity headers, the claim headers and, when on, the identity
    /// JWT's), every header a rule reads a token from, and the forwarded
    /// facts frameworks trust from their proxy.
    pub fn guarded_headers(&self) -> Vec<String> {
        let mut names: Vec<String> = self.told_headers().into_iter().map(str::to_owned).collect();
        for rule in &self.rules {
            for source in &rule.token_from {
                // Token header names are lower-case (`TokenSource::parse`).
                if let Ok(crate::extract::sources::TokenSource::Header(name)) =
                    crate::extract::sources::TokenSource::parse(source)
                {
                    names.push(name);
                }
            }
        }
        names.extend(
            crate::extract::headers::TRUSTED_BY_FRAMEWORKS
                .iter()
                .map(|n| n.to_string()),
        );
        names.sort();
        names.dedup();
        names
    }
}

impl Config {
    /// The issuer URLs this mode uses that are plain `http://` to a host
    /// other than loopback, by key: every token (introspection) or the keys
    /// that every token is checked with (JWKS) would cross the network in
    /// clear, readable and replaceable, unless a mesh encrypts it. Said at
    /// start (a warning: in-cluster Hydra behind Istio's mTLS is common).
    pub fn cleartext_issuer_urls(&self) -> Vec<&'static str> {
        let i = &self.introspection;
        let cleartext = |url: &str| {
            reqwest::Url::parse(url).is_ok_and(|u| {
                let host = u.host_str().unwrap_or_default();
                let host = host.trim_start_matches('[').trim_end_matches(']');
                u.scheme() == "http"
                    && !host.is_empty()
                    && match host.parse::<std::net::IpAddr>() {
                        Ok(ip) => !ip.is_loopback(),
                        Err(_) => !host.eq_ignore_ascii_case("localhost"),
                    }
            })
        };
        let mut keys = Vec::new();
        if i.mode != VerifyMode::Jwt && cleartext(&i.url) {
            keys.push("introspection.url");
        }
        if i.mode != VerifyMode::Introspect && cleartext(&i.jwt.jwks_url) {
            keys.push("introspection.jwt.jwks_url");
        }
        keys
    }
}

impl ServerConfig {
    /// Whether the admin listener runs: only with credentials.
    pub fn admin_enabled(&self) -> bool {
        self.admin_token_file.is_some() || self.admin_token_env.is_some() || self.admin_client_ca_file.is_some()
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        if self.admin_token_file.is_some() && self.admin_token_env.is_some() {
            return Err(invalid(
                "server.admin_token_file",
                "give one of admin_token_file or admin_token_env",
            ));
        }
        if let Some(var) = &self.admin_token_env {
            if var.is_empty() || var.to_ascii_uppercase().starts_with(ENV_PREFIX) {
                return Err(invalid(
                    "server.admin_token_env",
                    format!("name a variable outside the {ENV_PREFIX}* config namespace"),
                ));
            }
        }
        if self.admin_client_ca_file.is_some() && self.admin_client_ca_file == self.tls.client_ca_file {
            return Err(invalid(
                "server.admin_client_ca_file",
                "must not be server.tls.client_ca_file: every client Envoy's CA signs would be an administrator",
            ));
        }
        if self.admin_client_ca_file.is_some() && self.tls.cert_file.is_none() {
            return Err(invalid(
                "server.admin_client_ca_file",
                "admin mTLS uses [server.tls] cert_file and key_file: set them too",
            ));
        }
        if self.admin_enabled() {
            let port = self.admin_addr.port();
            for (key, other) in [
                ("server.grpc_addr", self.grpc_addr),
                ("server.http_addr", self.http_addr),
            ] {
                if port != 0
                    && other.port() == port
                    && (other.ip() == self.admin_addr.ip()
                        || other.ip().is_unspecified()
                        || self.admin_addr.ip().is_unspecified())
                {
                    return Err(invalid(
                        "server.admin_addr",
                        format!("must not share a port with {key}: the admin API never rides on another listener"),
                    ));
                }
            }
        }
        Ok(())
    }
}

impl ListenerLimits {
    fn validate(&self) -> Result<(), ConfigError> {
        let key = |k: &str| format!("server.limits.{k}");
        for (k, v) in [
            ("max_connections", self.max_connections as u64),
            ("header_read_timeout_ms", self.header_read_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            (
                "grpc_max_concurrent_streams",
                u64::from(self.grpc_max_concurrent_streams),
            ),
            ("grpc_keepalive_interval_ms", self.grpc_keepalive_interval_ms),
            ("grpc_keepalive_timeout_ms", self.grpc_keepalive_timeout_ms),
            ("grpc_max_connection_age_ms", self.grpc_max_connection_age_ms),
        ] {
            if v == 0 {
                return Err(invalid(key(k), "must be greater than 0"));
            }
        }
        if self.idle_timeout_ms
            <= self
                .grpc_keepalive_interval_ms
                .saturating_add(self.grpc_keepalive_timeout_ms)
        {
            return Err(invalid(
                key("idle_timeout_ms"),
                "must exceed grpc_keepalive_interval_ms + grpc_keepalive_timeout_ms, or live gRPC peers are cut off",
            ));
        }
        Ok(())
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A TOML syntax error without the excerpt of the file the toml crate adds
/// (`1 | url = "https://id:secret@...`): the line may hold a credential, and
/// the error reaches logs. Line and column stay.
fn without_source_excerpt(message: &str) -> String {
    let excerpt = |line: &str| {
        let rest = line.trim_start().trim_start_matches(|c: char| c.is_ascii_digit());
        rest.trim_start().starts_with('|')
    };
    let kept: Vec<&str> = message
        .lines()
        .filter(|l| !excerpt(l) && !l.trim().is_empty())
        .collect();
    kept.join(" ")
}

/// Whether `key` (a `HYDRA_AUTHZ_` variable without the prefix) with
/// `value` is one of the service-link variables the kubelet sets for a
/// Service whose name starts with `hydra-authz`: `[NAME_]SERVICE_HOST`
/// (an address), `[NAME_]SERVICE_PORT[_P]` (a number), `[NAME_]PORT` and
/// `[NAME_]PORT_<n>_<PROTO>` (`tcp://…`), and `…_PROTO`, `…_PORT`,
/// `…_ADDR` after that. Both name and value must fit, and our own keys
/// nest with `__`, which a service link never holds: a misspelt key of
/// ours (`SERVER_GRPC_PORT=9191`) is still refused.
fn is_service_link(key: &str, value: &str) -> bool {
    let key = key.to_ascii_lowercase();
    if key.contains("__") {
        return false;
    }
    let parts: Vec<&str> = key.split('_').collect();
    const PROTOS: [&str; 3] = ["tcp", "udp", "sctp"];
    let is_proto = |p: &str| PROTOS.contains(&p);
    let is_number = |p: &str| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit());
    let is_address = |v: &str| v.parse::<std::net::IpAddr>().is_ok();
    let is_url = |proto: &str| {
        value
            .strip_prefix(proto)
            .and_then(|v| v.strip_prefix("://"))
            .is_some_and(|rest| rest.parse::<std::net::SocketAddr>().is_ok())
    };
    (0..parts.len()).any(|at| match &parts[at..] {
        ["service", "host"] => is_address(value),
        ["service", "port", ..] => is_number(value),
        ["port"] => PROTOS.iter().any(|p| is_url(p)),
        ["port", n, proto] => is_number(n) && is_proto(proto) && is_url(proto),
        ["port", n, proto, "proto"] => is_number(n) && is_proto(proto) && value == *proto,
        ["port", n, proto, "port"] => is_number(n) && is_proto(proto) && value == *n,
        ["port", n, proto, "addr"] => is_number(n) && is_proto(proto) && is_address(value),
        _ => false,
    })
}

impl Config {
    /// Defaults, then `path` (which must exist), then the environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError::MissingFile(path.to_owned()));
        }
        Self::from_figment(Figment::from(Serialized::defaults(Config::default())).merge(Toml::file(path)))
    }

    /// Defaults, then a TOML string (for the embedded demo config), then the environment.
    pub fn from_toml_str(toml: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(toml)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        // HYDRA_AUTHZ_CONFIG names the file itself; it is not a config key.
        // Kubernetes injects `HYDRA_AUTHZ_SERVICE_HOST`,
        // `HYDRA_AUTHZ_PORT_9191_TCP` ... for a Service named `hydra-authz`:
        // they are not config keys, and refusing them would stop every pod.
        // `vars_os`: `vars` panics on any variable that is not UTF-8.
        let links: Vec<String> = std::env::vars_os()
            .filter_map(|(name, value)| {
                let (name, value) = (name.to_str()?, value.to_str()?);
                let key = name.strip_prefix(ENV_PREFIX)?;
                is_service_link(key, value).then(|| key.to_owned())
            })
            .collect();
        let env = Env::prefixed(ENV_PREFIX)
            .ignore(&["config"])
            .filter(move |key| !links.iter().any(|l| key.as_str().eq_ignore_ascii_case(l)))
            .split("__");
        let figment = figment.merge(env);
        let config: Config = figment.extract().map_err(|e| {
            // figment reports every error with its key path and source; show all.
            ConfigError::Parse(
                e.into_iter()
                    .map(|e| without_source_excerpt(&e.to_string()))
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that serde cannot express. Rule patterns are compiled (and so
    /// checked) by [`crate::decision::rules::RuleSet::compile`].
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.log
            .validate()
            .map_err(|(key, why)| invalid(format!("log.{key}"), why))?;
        self.telemetry
            .validate()
            .map_err(|(key, why)| invalid(format!("telemetry.{key}"), why))?;
        self.forward_auth
            .validate()
            .map_err(|why| invalid("forward_auth", why))?;
        self.resource_metadata
            .validate()
            .map_err(|why| invalid("resource_metadata", why))?;
        self.upstream_jwt
            .validate()
            .map_err(|why| invalid("upstream_jwt", why))?;
        if self.upstream_jwt.enabled {
            validate_header_name("upstream_jwt.header", &self.upstream_jwt.header)?;
        }
        let i = &self.introspection;
        let url = reqwest::Url::parse(&i.url).map_err(|e| invalid("introspection.url", e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("introspection.url", "must be an http or https URL"));
        }
        if i.timeout_ms == 0 {
            return Err(invalid("introspection.timeout_ms", "must be greater than 0"));
        }
        if i.leeway_s > MAX_LEEWAY_S {
            return Err(invalid(
                "introspection.leeway_s",
                format!(
                    "at most {MAX_LEEWAY_S} (seconds): a leeway is for clock skew, and every second of it \
                     accepts an expired token for that much longer"
                ),
            ));
        }
        if i.cache.enabled && i.cache.ttl_ms == 0 {
            return Err(invalid(
                "introspection.cache.ttl_ms",
                "must be greater than 0 when the cache is enabled",
            ));
        }
        if i.cache.max_entries == 0 {
            return Err(invalid("introspection.cache.max_entries", "must be greater than 0"));
        }
        if i.cache.stale_if_error_ms > MAX_STALE_IF_ERROR_MS {
            return Err(invalid(
                "introspection.cache.stale_if_error_ms",
                format!(
                    "at most {MAX_STALE_IF_ERROR_MS} (one hour): stale-if-error bridges an outage, it is not a session"
                ),
            ));
        }
        self.cluster.validate().map_err(|why| invalid("cluster", why))?;
        if self.cluster.shared_cache && !i.cache.enabled {
            return Err(invalid(
                "cluster.shared_cache",
                "needs [introspection.cache] enabled (its ttl_ms bounds shared entries too)",
            ));
        }
        self.server.validate_admin()?;
        self.server.limits.validate()?;
        let t = &self.server.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return Err(invalid("server.tls", "cert_file and key_file go together"));
        }
        if t.client_ca_file.is_some() && t.cert_file.is_none() {
            return Err(invalid(
                "server.tls.client_ca_file",
                "mTLS needs cert_file and key_file too",
            ));
        }
        if t.cert_file.is_some() && t.reload_interval_ms == 0 {
            return Err(invalid("server.tls.reload_interval_ms", "must be greater than 0"));
        }
        if i.tls.reload_interval_ms == 0 {
            return Err(invalid(
                "introspection.tls.reload_interval_ms",
                "must be greater than 0",
            ));
        }
        if i.tls.client_cert_file.is_some() != i.tls.client_key_file.is_some() {
            return Err(invalid(
                "introspection.tls",
                "client_cert_file and client_key_file go together",
            ));
        }
        let r = &i.resilience;
        if r.retry_budget_ms == 0 || r.breaker_failures == 0 || r.max_concurrent == 0 {
            return Err(invalid(
                "introspection.resilience",
                "retry_budget_ms, breaker_failures and max_concurrent must be greater than 0",
            ));
        }
        if i.mode != VerifyMode::Introspect && i.jwt.refresh_min_interval_ms < MIN_JWKS_REFRESH_INTERVAL_MS {
            return Err(invalid(
                "introspection.jwt.refresh_min_interval_ms",
                format!(
                    "at least {MIN_JWKS_REFRESH_INTERVAL_MS} (ms): any caller can send tokens with unknown key ids, \
                     and each may cost a JWKS fetch from the issuer once this interval has passed"
                ),
            ));
        }
        if i.jwt.max_stale_key_age_ms < i.jwt.max_key_age_ms.max(1) {
            return Err(invalid(
                "introspection.jwt.max_stale_key_age_ms",
                "must be at least max_key_age_ms (and greater than 0)",
            ));
        }
        if i.mode != VerifyMode::Introspect {
            let ok = reqwest::Url::parse(&i.jwt.jwks_url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(invalid(
                    "introspection.jwt.jwks_url",
                    "an http(s) URL is required when mode is jwt or auto",
                ));
            }
            if i.jwt.algorithms.is_empty() {
                return Err(invalid("introspection.jwt.algorithms", "list at least one algorithm"));
            }
        }
        if i.max_response_bytes < 64 {
            return Err(invalid("introspection.max_response_bytes", "must be at least 64"));
        }
        let a = &i.auth;
        match a.kind {
            AuthKind::None => {}
            AuthKind::Bearer => {
                if a.token_env.is_some() == a.token_file.is_some() {
                    return Err(invalid(
                        "introspection.auth",
                        "kind = \"bearer\" needs exactly one of token_env or token_file",
                    ));
                }
            }
            AuthKind::ClientSecretBasic => {
                if a.client_id.as_deref().unwrap_or("").is_empty() {
                    return Err(invalid(
                        "introspection.auth.client_id",
                        "required when kind = \"client_secret_basic\"",
                    ));
                }
                if a.client_secret_env.is_some() == a.client_secret_file.is_some() {
                    return Err(invalid(
                        "introspection.auth",
                        "kind = \"client_secret_basic\" needs exactly one of client_secret_env or client_secret_file",
                    ));
                }
            }
        }

        let h = &self.headers;
        let names = [
            ("headers.client_id", &h.client_id),
            ("headers.scopes", &h.scopes),
            ("headers.subject", &h.subject),
        ];
        for (key, name) in names {
            validate_header_name(key, name)?;
        }
        if h.client_id == h.scopes || h.client_id == h.subject || h.scopes == h.subject {
            return Err(invalid("headers", "client_id, scopes and subject headers must differ"));
        }
        for (name, path) in &h.claims {
            let key = format!("headers.claims.{name}");
            validate_header_name(&key, name)?;
            if [&h.client_id, &h.scopes, &h.subject].contains(&name) {
                return Err(invalid(
                    key,
                    "already an identity header (client_id, scopes or subject)",
                ));
            }
            let root = path.split('.').next().unwrap_or_default();
            if path.split('.').any(str::is_empty) || !crate::authn::CLAIM_ROOTS.contains(&root) {
                return Err(invalid(
                    key,
                    format!(
                        "claim path {path:?} must be dot-separated names starting with one of {:?}",
                        crate::authn::CLAIM_ROOTS
                    ),
                ));
            }
        }
        // Every header the upstream is told, by name: one name, one meaning.
        if self.upstream_jwt.enabled && h.set_names().any(|n| n == self.upstream_jwt.header) {
            return Err(invalid(
                "upstream_jwt.header",
                "already an identity or claim header (client_id, scopes, subject, headers.claims)",
            ));
        }
        let told = self.told_headers();
        // In any '-'/'_' spelling (the names are lower-case already).
        let is_told = |name: &str| told.contains(&name.replace('_', "-").as_str());
        let fa = &self.forward_auth;
        for name in fa.method_headers.iter().chain(&fa.uri_headers).chain(&fa.host_headers) {
            if is_told(name) {
                return Err(invalid(
                    "forward_auth",
                    format!(
                        "{name:?} names the original request, and is also a header hydra-authz sets for the upstream"
                    ),
                ));
            }
        }
        if h.claims_separator.is_empty() || !h.claims_separator.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            return Err(invalid("headers.claims_separator", "must be visible ASCII or spaces"));
        }
        if self.authorization.realm.contains(['"', '\\']) || self.authorization.realm.chars().any(char::is_control) {
            return Err(invalid(
                "authorization.realm",
                "must not contain quotes, backslashes or control characters",
            ));
        }

        let mut ids = std::collections::HashSet::new();
        for (n, rule) in self.rules.iter().enumerate() {
            let key = format!("rules[{n}]");
            if rule.id.is_empty() {
                return Err(invalid(format!("{key}.id"), "every rule needs an id"));
            }
            if !ids.insert(rule.id.as_str()) {
                return Err(invalid(format!("{key}.id"), format!("duplicate rule id {:?}", rule.id)));
            }
            if rule.public && !(rule.scopes.is_empty() && rule.any_of.is_empty()) {
                return Err(invalid(format!("{key}.scopes"), "a public rule cannot require scopes"));
            }
            let conditions = [
                ("audiences", rule.audiences.is_empty()),
                ("issuers", rule.issuers.is_empty()),
                ("clients", rule.clients.is_empty()),
                ("claims", rule.claims.is_empty()),
            ];
            if let (true, Some((name, _))) = (rule.public, conditions.iter().find(|(_, empty)| !empty)) {
                return Err(invalid(
                    format!("{key}.{name}"),
                    "a public rule looks at no token, so it cannot have claim conditions",
                ));
            }
            for (path, accepted) in &rule.claims {
                let root = path.split('.').next().unwrap_or_default();
                if path.split('.').any(str::is_empty) || !crate::authn::CLAIM_ROOTS.contains(&root) {
                    return Err(invalid(
                        format!("{key}.claims.{path}"),
                        format!(
                            "a claim path is dot-separated names starting with one of {:?}",
                            crate::authn::CLAIM_ROOTS
                        ),
                    ));
                }
                if accepted.is_empty() {
                    return Err(invalid(
                        format!("{key}.claims.{path}"),
                        "list the accepted values (an empty list would refuse every token)",
                    ));
                }
            }
            for (i, source) in rule.token_from.iter().enumerate() {
                let source = crate::extract::sources::TokenSource::parse(source)
                    .map_err(|why| invalid(format!("{key}.token_from[{i}]"), why))?;
                // A header we set for the upstream cannot also carry the
                // caller's token.
                if let crate::extract::sources::TokenSource::Header(name) = &source {
                    if is_told(name) {
                        return Err(invalid(
                            format!("{key}.token_from[{i}]"),
                            format!("{name:?} is a header hydra-authz sets for the upstream"),
                        ));
                    }
                }
            }
            if rule.public && rule.optional {
                return Err(invalid(
                    format!("{key}.optional"),
                    "a rule is public (no token looked at) or optional (a token, if given, must be valid), not both",
                ));
            }
            if rule.any_of.iter().any(Vec::is_empty) {
                return Err(invalid(
                    format!("{key}.any_of"),
                    "each alternative must name at least one scope",
                ));
            }
            for m in &rule.methods {
                if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(invalid(
                        format!("{key}.methods"),
                        format!("{m:?} is not an upper-case HTTP method"),
                    ));
                }
            }
            for s in rule.scopes.iter().chain(rule.any_of.iter().flatten()) {
                if !crate::decision::scopes::is_scope_token(s) {
                    return Err(invalid(
                        format!("{key}.scopes"),
                        format!("{s:?} is not a scope token (visible ASCII but '\"' and '\\', RFC 6749 §3.3)"),
                    ));
                }
            }
        }
        crate::decision::rules::RuleSet::compile(&self.rules)?;
        Ok(())
    }

    /// The effective config as TOML, safe to print: secrets are referenced by
    /// name only, and credentials embedded in the URL are masked.
    pub fn to_redacted_toml(&self) -> String {
        let mut shown = self.clone();
        let urls = [
            Some(&mut shown.introspection.url),
            Some(&mut shown.introspection.jwt.jwks_url),
            Some(&mut shown.telemetry.otlp_endpoint),
            shown.cluster.redis_url.as_mut(),
        ];
        for url in urls.into_iter().flatten() {
            if let Ok(mut parsed) = reqwest::Url::parse(url) {
                // Shown as written unless something in it is masked (a
                // reparsed URL gains a '/' path, which would read as a change).
                let secret = !parsed.username().is_empty()
                    || parsed.password().is_some()
                    || parsed.query().is_some()
                    || parsed.fragment().is_some();
                if !secret {
                    continue;
                }
                if !parsed.username().is_empty() {
                    let _ = parsed.set_username("REDACTED");
                }
                if parsed.password().is_some() {
                    let _ = parsed.set_password(Some("REDACTED"));
                }
                redact_url_secrets(&mut parsed);
                *url = parsed.to_string();
            }
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// The shortest `introspection.jwt.refresh_min_interval_ms`: at most ten
/// JWKS fetches a second per replica, whatever callers send (at 0, every
/// token with a made-up `kid` would be one fetch from the issuer).
pub const MIN_JWKS_REFRESH_INTERVAL_MS: u64 = 100;

/// The most clock skew `introspection.leeway_s` may allow: five minutes,
/// as Kerberos and most JWT libraries' guidance; beyond it a typo (a day
/// entered as 86400) would quietly keep expired tokens alive.
pub const MAX_LEEWAY_S: u64 = 300;

/// Header names no identity or claim header may take: a token's claim
/// would choose their value. Credentials, framing and hop-by-hop headers,
/// the proxies' own control and forwarded facts (which the front doors set
/// and the upstream trusts), cache control (the forward-auth answer's
/// `no-store`), the challenge, and the method overrides an upstream
/// framework obeys.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "host",
    "cookie",
    "set-cookie",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "connection",
    "keep-alive",
    "proxy-connection",
    "expect",
    "forwarded",
    "via",
    "x-real-ip",
    "x-request-id",
    "cache-control",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Prefixes of reserved names: Envoy's control headers and the forwarded
/// facts of every front door (`x-forwarded-uri`, `x-original-method`).
const RESERVED_HEADER_PREFIXES: &[&str] = &["x-envoy-", "x-forwarded-", "x-original-"];

fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS.contains(&name) || RESERVED_HEADER_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn validate_header_name(key: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(invalid(
            key,
            format!("{name:?} must be a lower-case header name (a-z, 0-9, '-')"),
        ));
    }
    if is_reserved_header(name) {
        return Err(invalid(
            key,
            format!(
                "{name:?} is a reserved header (credentials, framing, hop-by-hop, proxy control, forwarded facts, \
                 cache control or a method override): a token's claims must not choose its value"
            ),
        ));
    }
    // Every '-'/'_' spelling of the name is removed from requests; past
    // this many separators they are too many to list (2^n).
    use crate::extract::headers::{separators, MAX_SPELLED_SEPARATORS};
    let n = separators(name);
    if n > MAX_SPELLED_SEPARATORS {
        return Err(invalid(
            key,
            format!(
                "{name:?} has {n} '-': at most {MAX_SPELLED_SEPARATORS} (every '-'/'_' spelling a client could smuggle \
                 is removed, and those of a longer name are too many to list)"
            ),
        ));
    }
    Ok(())
}
