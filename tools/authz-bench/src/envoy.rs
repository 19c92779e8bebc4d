//! Envoy rows: a real Envoy answering direct_response, driven by wrk,
//! alone, with the no-op ext_authz and with hydra-authz.

use crate::*;

pub(crate) const ENVOY_DIRECT: &str = r#"
admin: {address: {socket_address: {address: 127.0.0.1, port_value: ADMIN}}}
static_resources:
  listeners:
  - address: {socket_address: {address: 127.0.0.1, port_value: LISTEN}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: "/"}
                direct_response: {status: 200, body: {inline_string: "ok"}}
          http_filters:
FILTERS          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: authz
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: authz
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: AUTHZ}}}}]}]
"#;

pub(crate) const EXT_AUTHZ: &str = r#"          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service: {envoy_grpc: {cluster_name: authz}, timeout: 2s}
              transport_api_version: V3
              failure_mode_allow: false
"#;

pub(crate) async fn envoy_rows(
    args: &Args,
    dir: &Path,
    noop: SocketAddr,
    authz: SocketAddr,
    token: &str,
    dur: Duration,
) -> anyhow::Result<Vec<Row>> {
    let envoy = args
        .envoy
        .clone()
        .or_else(hydra_authz::demo::envoy::find_binary)
        .ok_or_else(|| anyhow::anyhow!("no Envoy binary"))?;
    which("wrk").ok_or_else(|| anyhow::anyhow!("wrk not installed (apt-get install wrk)"))?;
    let mut rows = Vec::new();
    let mut plain_rps = 0.0;
    let mut noop_rps = 0.0;
    for (name, target) in [
        ("e1. Envoy direct_response (plain)", None),
        ("e2. Envoy + no-op ext_authz", Some(noop)),
        ("e3. Envoy + hydra-authz (cached)", Some(authz)),
    ] {
        let (admin, listen) = (free_addr(), free_addr());
        let cfg = ENVOY_DIRECT
            .replace("ADMIN", &admin.port().to_string())
            .replace("LISTEN", &listen.port().to_string())
            .replace("AUTHZ", &target.map_or(1, |t| t.port()).to_string())
            .replace("FILTERS", if target.is_some() { EXT_AUTHZ } else { "" });
        let path = dir.join("envoy-bench.yaml");
        std::fs::write(&path, cfg)?;
        let mut child = Command::new(&envoy)
            .arg("-c")
            .arg(&path)
            .args(["--log-level", "error", "--disable-hot-restart", "--concurrency", "1"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        wait_port(listen).await?;
        let (mut row, non_2xx) = run_wrk(listen, token, 32, dur).await?;
        let rss = rss_mib(child.id().unwrap_or(0));
        let _ = child.start_kill();
        row.name = name.into();
        row.rss_mib = rss;
        if non_2xx {
            row.note = "NON-2XX ANSWERS: check the setup; ".into();
        }
        match target {
            None => plain_rps = row.rps,
            Some(t) if t == noop => {
                noop_rps = row.rps;
                row.note.push_str(&format!("{:.2}x plain", row.rps / plain_rps));
            }
            Some(_) => row
                .note
                .push_str(&format!("{:.2}x Envoy + no-op (target ≥ 0.9)", row.rps / noop_rps)),
        }
        rows.push(row);
    }
    Ok(rows)
}
