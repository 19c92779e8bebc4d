//! Config layering and validation, and `hydra-authz config check`.
#![allow(clippy::result_large_err)] // figment::Jail closures return figment::Error, which is large by design

use figment::Jail;
use hydra_authz::config::{AuthKind, Config, ConfigError};
use hydra_authz::decision::scopes::ScopeStrategy;
use std::path::Path;
use std::process::Command;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/hydra-authz.toml");

/// Run `f` while no other test can change the environment: tests that set
/// HYDRA_AUTHZ_* variables do so inside a figment Jail, which holds a global
/// lock, so taking the same lock here keeps their variables out of `f`
/// (they leaked into a config load in one CI run).
fn without_other_tests_env<T>(f: impl FnOnce() -> T) -> T {
    let mut out = None;
    Jail::expect_with(|_| {
        out = Some(f());
        Ok(())
    });
    out.expect("ran inside the jail")
}

fn load_err(toml: &str) -> String {
    let mut msg = String::new();
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", toml)?;
        msg = Config::load(Path::new("c.toml"))
            .expect_err("invalid config")
            .to_string();
        Ok(())
    });
    msg
}

#[test]
fn shipped_config_is_the_seed_scenario() {
    without_other_tests_env(|| {
        let c = Config::load(Path::new(SHIPPED)).expect("shipped config loads");
        let rules: Vec<_> = c
            .rules
            .iter()
            .map(|r| (r.methods.join(","), r.path.as_str(), r.scopes.join(" ")))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("GET".into(), "/date", "read_date".into()),
                ("POST".into(), "/echo", "post_echo".into())
            ]
        );
        assert_eq!(c.introspection.url, "http://127.0.0.1:4445/admin/oauth2/introspect");
        assert_eq!(c.introspection.auth.kind, AuthKind::None);
    })
}

#[test]
fn env_overrides_file_overrides_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "[introspection]\ntimeout_ms = 1234\nleeway_s = 9\n")?;
        jail.set_env(
            "HYDRA_AUTHZ_INTROSPECTION__URL",
            "https://acme.projects.oryapis.com/admin/oauth2/introspect",
        );
        jail.set_env("HYDRA_AUTHZ_INTROSPECTION__LEEWAY_S", "2");
        jail.set_env("HYDRA_AUTHZ_AUTHORIZATION__SCOPE_STRATEGY", "wildcard");
        jail.set_env("HYDRA_AUTHZ_CONFIG", "ignored: names the file, not a key");
        let c = Config::load(Path::new("c.toml")).expect("loads");
        assert_eq!(
            c.introspection.url,
            "https://acme.projects.oryapis.com/admin/oauth2/introspect"
        );
        assert_eq!(c.introspection.timeout_ms, 1234, "from the file");
        assert_eq!(c.introspection.leeway_s, 2, "env beats file");
        assert_eq!(c.authorization.scope_strategy, ScopeStrategy::Wildcard);
        assert_eq!(c.headers.client_id, "x-client-id", "default kept");
        Ok(())
    });
}

#[test]
fn unknown_keys_are_errors_naming_the_key() {
    let e = load_err("[introspection]\nurll = \"http://x\"\n");
    assert!(e.contains("urll") && e.contains("introspection"), "{e}");
    let e = load_err("[[rules]]\nid = \"a\"\npath = \"/a\"\nscope = [\"x\"]\n");
    assert!(e.contains("scope"), "{e}");
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "")?;
        jail.set_env("HYDRA_AUTHZ_SERVER__GRPC_ADR", "127.0.0.1:1");
        let e = Config::load(Path::new("c.toml")).expect_err("typo in env").to_string();
        assert!(e.contains("grpc_adr"), "{e}");
        Ok(())
    });
}

/// A variable that is not UTF-8 anywhere in the environment (not ours)
/// does not stop the start: the service-link scan reads names and values
/// as bytes (`std::env::vars` would panic).
#[test]
fn a_variable_that_is_not_text_is_no_panic() {
    use std::os::unix::ffi::OsStrExt;
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "")?;
        let name = "HYDRA_AUTHZ_TEST_NOT_TEXT_ELSEWHERE";
        std::env::set_var("NOT_TEXT_FOR_HYDRA_AUTHZ", std::ffi::OsStr::from_bytes(b"\xff\xfe"));
        std::env::set_var(std::ffi::OsStr::from_bytes(b"X_\xff"), "1");
        let loaded = std::panic::catch_unwind(|| Config::load(Path::new("c.toml")));
        std::env::remove_var("NOT_TEXT_FOR_HYDRA_AUTHZ");
        std::env::remove_var(std::ffi::OsStr::from_bytes(b"X_\xff"));
        let loaded = loaded.expect("no panic");
        assert!(loaded.is_ok(), "{name}: {:?}", loaded.err());
        Ok(())
    });
}

/// A TOML syntax error names the line and column, never the line's text:
/// it may hold a credential (a URL's userinfo), and the error is logged.
#[test]
fn syntax_errors_do_not_echo_the_file() {
    let e = load_err("[introspection]\nurl = \"https://id:s3cret-pw@hydra:4445/x\n");
    assert!(!e.contains("s3cret"), "{e}");
    assert!(e.contains("line 2"), "{e}");
}

/// A Service named `hydra-authz` (the chart's default name) makes Kubernetes
/// inject service-link variables under our prefix; they must not stop the
/// start, while a misspelt key of ours still does.
#[test]
fn kubernetes_service_links_are_not_config_keys() {
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", "")?;
        for (name, value) in [
            ("HYDRA_AUTHZ_SERVICE_HOST", "10.0.0.7"),
            ("HYDRA_AUTHZ_SERVICE_PORT", "9191"),
            ("HYDRA_AUTHZ_SERVICE_PORT_GRPC", "9191"),
            ("HYDRA_AUTHZ_PORT", "tcp://10.0.0.7:9191"),
            ("HYDRA_AUTHZ_PORT_9191_TCP", "tcp://10.0.0.7:9191"),
            ("HYDRA_AUTHZ_PORT_9191_TCP_PROTO", "tcp"),
            ("HYDRA_AUTHZ_PORT_9191_TCP_PORT", "9191"),
            ("HYDRA_AUTHZ_PORT_9191_TCP_ADDR", "10.0.0.7"),
            ("HYDRA_AUTHZ_METRICS_SERVICE_HOST", "10.0.0.8"),
            ("HYDRA_AUTHZ_METRICS_PORT_9192_TCP_ADDR", "10.0.0.8"),
        ] {
            jail.set_env(name, value);
        }
        jail.set_env("HYDRA_AUTHZ_SERVER__GRPC_ADDR", "127.0.0.1:7001");
        let config = Config::load(Path::new("c.toml")).expect("service links are not keys");
        assert_eq!(config.server.grpc_addr.port(), 7001);
        // Not a service link: still refused, by name or by value (each
        // error names its key; earlier ones stay set).
        for (name, value, key) in [
            ("HYDRA_AUTHZ_SERVICE_HOSTNAME", "x", "service_hostname"),
            ("HYDRA_AUTHZ_SERVER_GRPC_PORT", "9191", "server_grpc_port"),
            ("HYDRA_AUTHZ_LOG_PORT", "9191", "log_port"),
        ] {
            jail.set_env(name, value);
            let e = Config::load(Path::new("c.toml"))
                .expect_err("not a service link")
                .to_string();
            assert!(e.contains(key), "{name}: {e}");
        }
        Ok(())
    });
}

#[test]
fn bad_values_are_errors_naming_the_key() {
    let cases = [
        ("[authorization]\nscope_strategy = \"fuzzy\"\n", "scope_strategy"),
        ("[server]\ngrpc_addr = \"localhost\"\n", "grpc_addr"),
        ("[introspection]\nurl = \"not a url\"\n", "introspection.url"),
        ("[introspection]\nurl = \"ftp://h/x\"\n", "introspection.url"),
        ("[introspection]\ntimeout_ms = 0\n", "introspection.timeout_ms"),
        ("[introspection]\nleeway_s = 86400\n", "introspection.leeway_s"),
        (
            "[introspection.jwt]\nmax_key_age_ms = 600000\nmax_stale_key_age_ms = 1000\n",
            "introspection.jwt.max_stale_key_age_ms",
        ),
        (
            "[introspection]\nmode = \"jwt\"\n[introspection.jwt]\nrefresh_min_interval_ms = 0\n",
            "introspection.jwt.refresh_min_interval_ms",
        ),
        ("[introspection.auth]\nkind = \"bearer\"\n", "introspection.auth"),
        (
            "[introspection.auth]\nkind = \"client_secret_basic\"\nclient_secret_env = \"X\"\n",
            "client_id",
        ),
        ("[headers]\nclient_id = \"X-Client\"\n", "headers.client_id"),
        ("[headers]\nscopes = \"x-client-id\"\n", "headers"),
        ("[[rules]]\nid = \"a\"\npath = \"date\"\n", "rules[0].path"),
        (
            "[[rules]]\nid = \"a\"\npath = \"/a\"\nmethods = [\"get\"]\n",
            "rules[0].methods",
        ),
        (
            "[[rules]]\nid = \"a\"\npath = \"/a\"\n[[rules]]\nid = \"a\"\npath = \"/b\"\n",
            "rules[1].id",
        ),
        (
            "[[rules]]\nid = \"a\"\npath = \"/a\"\npublic = true\nscopes = [\"x\"]\n",
            "rules[0].scopes",
        ),
        (
            "[[rules]]\nid = \"a\"\npath = \"/a\"\nhost = \"h:80\"\n",
            "rules[0].host",
        ),
        // Quoted in the challenge as written: no '"' or '\\'.
        (
            "[[rules]]\nid = \"a\"\npath = \"/a\"\nscopes = [\"a\\\" error=\\\"x\"]\n",
            "rules[0].scopes",
        ),
        (
            "[[rules]]\nid = \"a\"\npath = \"/a\"\nany_of = [[\"a\\\\b\"]]\n",
            "rules[0].scopes",
        ),
        // Refused by `config check` too, not only when the server starts.
        ("[log]\nlevel = \"info,hyper=loud\"\n", "log.level"),
        (
            "[headers.claims]\n\"X-Tenant\" = \"ext.tenant\"\n",
            "headers.claims.X-Tenant",
        ),
        (
            "[headers.claims]\n\"x-tenant\" = \"password\"\n",
            "headers.claims.x-tenant",
        ),
        (
            "[headers.claims]\n\"x-tenant\" = \"ext..a\"\n",
            "headers.claims.x-tenant",
        ),
        (
            "[headers.claims]\n\"x-client-id\" = \"sub\"\n",
            "headers.claims.x-client-id",
        ),
        // Seven '-': too many '-'/'_' spellings to remove them all.
        (
            "[headers.claims]\n\"x-acme-org-unit-team-role-id-v2\" = \"ext.role\"\n",
            "headers.claims.x-acme-org-unit-team-role-id-v2",
        ),
        ("[headers]\nsubject = \"x-a-b-c-d-e-f-g\"\n", "headers.subject"),
        (
            "[[rules]]\nid = \"a\"\npath = \"/a\"\npublic = true\noptional = true\n",
            "rules[0].optional",
        ),
        ("[forward_auth]\nenvoy_path_prefix = \"ext\"\n", "forward_auth"),
        (
            "[forward_auth]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "trusted_proxies",
        ),
        (
            "[resource_metadata]\nresource = \"https://api#x\"\n",
            "resource_metadata",
        ),
    ];
    for (toml, key) in cases {
        let e = load_err(toml);
        assert!(e.contains(key), "{toml:?}: {e}");
    }
}

/// A header whose value a token's claim would choose, or one name told
/// two things: refused, with the key and why.
#[test]
fn reserved_and_colliding_header_names_are_refused() {
    for name in [
        "connection",
        "te",
        "upgrade",
        "proxy-authorization",
        "cache-control",
        "forwarded",
        "x-forwarded-for",
        "x-envoy-original-path",
        "x-original-uri",
        "x-http-method-override",
        "content-type",
    ] {
        let e = load_err(&format!("[headers.claims]\n\"{name}\" = \"ext.tenant\"\n"));
        assert!(
            e.contains(&format!("headers.claims.{name}")) && e.contains("reserved header"),
            "{name}: {e}"
        );
        let e = load_err(&format!("[headers]\nsubject = \"{name}\"\n"));
        assert!(
            e.contains("headers.subject") && e.contains("reserved header"),
            "{name}: {e}"
        );
    }
    let jwt = "[upstream_jwt]\nenabled = true\nkey_file = \"k.pem\"\nissuer = \"i\"\naudience = \"a\"\n";
    for toml in [
        format!("{jwt}header = \"x-subject\"\n"),
        format!("{jwt}header = \"x-tenant\"\n[headers.claims]\n\"x-tenant\" = \"ext.tenant\"\n"),
    ] {
        let e = load_err(&toml);
        assert!(
            e.contains("upstream_jwt.header") && e.contains("already an identity or claim header"),
            "{toml:?}: {e}"
        );
    }
    for source in ["header:x-client-id", "header:x_scopes"] {
        let e = load_err(&format!(
            "[[rules]]\nid = \"a\"\npath = \"/a\"\ntoken_from = [\"{source}\"]\n"
        ));
        assert!(
            e.contains("rules[0].token_from[0]") && e.contains("sets for the upstream"),
            "{source}: {e}"
        );
    }
    let e = load_err("[forward_auth]\nuri_headers = [\"x-subject\"]\n");
    assert!(e.contains("forward_auth") && e.contains("sets for the upstream"), "{e}");
    // Not reserved: a header merely starting like one.
    let ok = "[headers.claims]\n\"x-tenant\" = \"ext.tenant\"\n\"x-forwarder-team\" = \"ext.team\"\n";
    Jail::expect_with(|jail| {
        jail.create_file("c.toml", ok)?;
        Config::load(Path::new("c.toml")).expect("valid config");
        Ok(())
    });
}

#[test]
fn missing_file_is_an_error() {
    let e = Config::load(Path::new("/nonexistent/hydra-authz.toml")).expect_err("missing");
    assert!(matches!(e, ConfigError::MissingFile(_)));
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hydra-authz"))
}

fn config_check(path: &Path) -> std::process::Output {
    bin()
        .args(["config", "check", "--config"])
        .arg(path)
        .output()
        .expect("run")
}

/// `config check` of a config file holding `toml`.
fn config_check_of(toml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).expect("write");
    config_check(&path)
}

#[test]
fn config_check_prints_the_effective_config_redacted() {
    without_other_tests_env(|| {
        let out =
            config_check_of("[introspection]\nurl = \"https://user:hunter2@hydra.internal/admin/oauth2/introspect\"\n");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(": OK"));
        assert!(
            stdout.contains("scope_strategy = \"exact\""),
            "defaults are shown: {stdout}"
        );
        assert!(!stdout.contains("hunter2"), "secret in URL redacted");
        assert!(stdout.contains("REDACTED"));

        // An API key as the user name alone, or in the query, is a secret too.
        let out = config_check_of(
            "[introspection]\nurl = \"https://KEYONLY123@hydra.internal/admin/oauth2/introspect?api_key=QSECRET456\"\n",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(
            !stdout.contains("KEYONLY123") && !stdout.contains("QSECRET456"),
            "{stdout}"
        );
        assert!(stdout.contains("api_key=REDACTED"), "{stdout}");

        // The OTLP endpoint's credentials too (a vendor key in the URL).
        let out = config_check_of(
            "[telemetry]\notlp_endpoint = \"https://tenant:OTLPKEY789@otlp.vendor.example/v1?token=OTLPQ321\"\n",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            !stdout.contains("OTLPKEY789") && !stdout.contains("OTLPQ321"),
            "{stdout}"
        );
    })
}

#[test]
fn config_check_fails_with_the_key_and_exit_code_1() {
    without_other_tests_env(|| {
        let out = config_check_of("[[rules]]\nid = \"x\"\npath = \"/a/{bad name}\"\n");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("rules[0].path"));
    })
}

#[test]
fn config_check_reports_an_unreadable_secret() {
    without_other_tests_env(|| {
        let out = config_check_of("[introspection.auth]\nkind = \"bearer\"\ntoken_file = \"/nonexistent/key\"\n");
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("introspection.auth"));
    })
}

#[test]
fn shipped_config_passes_config_check() {
    without_other_tests_env(|| {
        let out = bin()
            .args(["config", "check", "--config", SHIPPED])
            .output()
            .expect("run");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    })
}

/// Issuer URLs that would carry tokens (or the keys that verify them) in
/// clear are named for the start-up warning; loopback, https and the URLs
/// a mode does not use are not.
#[test]
fn cleartext_issuer_urls_are_named() {
    use hydra_authz::config::VerifyMode;
    let mut c = Config::default();
    let named = |c: &Config| c.cleartext_issuer_urls();
    for quiet in [
        "http://127.0.0.1:4445/admin/oauth2/introspect",
        "http://localhost:4445/admin/oauth2/introspect",
        "http://[::1]:4445/admin/oauth2/introspect",
        "https://hydra-admin:4445/admin/oauth2/introspect",
    ] {
        c.introspection.url = quiet.into();
        assert!(named(&c).is_empty(), "{quiet}");
    }
    c.introspection.url = "http://hydra-admin:4445/admin/oauth2/introspect".into();
    assert_eq!(named(&c), ["introspection.url"]);
    c.introspection.mode = VerifyMode::Auto;
    c.introspection.jwt.jwks_url = "http://10.0.0.5/.well-known/jwks.json".into();
    assert_eq!(named(&c), ["introspection.url", "introspection.jwt.jwks_url"]);
    c.introspection.mode = VerifyMode::Jwt;
    assert_eq!(named(&c), ["introspection.jwt.jwks_url"], "jwt mode never introspects");
    c.introspection.jwt.jwks_url = "http://LOCALHOST:4444/.well-known/jwks.json".into();
    assert!(named(&c).is_empty());
}
