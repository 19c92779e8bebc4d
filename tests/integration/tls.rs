//! Transport security: TLS and mTLS on our gRPC listener; HTTPS to Hydra
//! with a private CA, and a handshake failure answered 503.

use crate::support;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use support::hydra::FakeHydra;
use support::pki::Pki;
use support::{bearer, check_request, config_for, start_authz, Answer, Checker};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

async fn tls_channel(
    addr: std::net::SocketAddr,
    pki: &Pki,
    client_cert: bool,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read(&pki.ca)))
        .domain_name("localhost");
    if client_cert {
        tls = tls.identity(Identity::from_pem(
            pki.read(&pki.client_cert),
            pki.read(&pki.client_key),
        ));
    }
    Channel::from_shared(format!("https://127.0.0.1:{}", addr.port()))
        .expect("uri")
        .tls_config(tls)?
        .connect()
        .await
}

async fn allowed_over(ch: Channel, token: &str) -> Result<i32, tonic::Status> {
    let mut client = AuthorizationClient::new(ch);
    let r = client
        .check(check_request("GET", "/date", &[("authorization", &bearer(token))], &[]))
        .await?;
    Ok(Answer::of(r.get_ref()).http_status)
}

#[tokio::test]
async fn grpc_listener_with_tls_and_mtls() {
    let pki = Pki::new();
    let hydra = FakeHydra::start().await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");

    // TLS: a client trusting our CA gets answers; a plaintext client gets none.
    let mut c = config_for(&hydra.introspection_url());
    c.server.tls.cert_file = Some(pki.server_cert.clone());
    c.server.tls.key_file = Some(pki.server_key.clone());
    let server = start_authz(&c).await;
    let ch = tls_channel(server.grpc_addr, &pki, false).await.expect("TLS connect");
    assert_eq!(allowed_over(ch, &token).await.expect("check over TLS"), 200);
    let plain = Channel::from_shared(format!("http://{}", server.grpc_addr))
        .expect("uri")
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(allowed_over(ch, &token).await.is_err(), "plaintext must not be served");
    }

    // mTLS: a client without a certificate is refused, one with a certificate from the CA is served.
    c.server.tls.client_ca_file = Some(pki.ca.clone());
    let server = start_authz(&c).await;
    let anonymous = match tls_channel(server.grpc_addr, &pki, false).await {
        Ok(ch) => allowed_over(ch, &token).await.is_err(),
        Err(_) => true,
    };
    assert!(anonymous, "a client without a certificate must be refused");
    let ch = tls_channel(server.grpc_addr, &pki, true).await.expect("mTLS connect");
    assert_eq!(allowed_over(ch, &token).await.expect("check over mTLS"), 200);
}

/// cert-manager renews, Kubernetes swaps the Secret's files: new
/// connections get the new certificate (and client CA) without a restart,
/// and a broken renewal keeps the working one.
#[tokio::test]
async fn renewed_certificates_are_served_without_a_restart() {
    let (old, new) = (Pki::new(), Pki::new());
    let hydra = FakeHydra::start().await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let live = tempfile::tempdir().expect("tempdir");
    let file = |name: &str| live.path().join(name);
    // As Kubernetes does: write aside, then rename into place.
    let place = |name: &str, bytes: &[u8]| {
        let tmp = live.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, file(name)).expect("rename");
    };
    let install = |pki: &Pki| {
        place("tls.crt", &pki.read(&pki.server_cert));
        place("tls.key", &pki.read(&pki.server_key));
        place("ca.crt", &pki.read(&pki.ca));
    };
    install(&old);
    let mut c = config_for(&hydra.introspection_url());
    c.server.tls.cert_file = Some(file("tls.crt"));
    c.server.tls.key_file = Some(file("tls.key"));
    c.server.tls.client_ca_file = Some(file("ca.crt"));
    c.server.tls.reload_interval_ms = 50;
    let server = start_authz(&c).await;
    let ch = tls_channel(server.grpc_addr, &old, true).await.expect("mTLS connect");
    assert_eq!(allowed_over(ch, &token).await.expect("check"), 200);

    install(&new);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(ch) = tls_channel(server.grpc_addr, &new, true).await {
            if allowed_over(ch, &token).await.ok() == Some(200) {
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A client of the old PKI no longer gets through (its CA no longer signs ours, nor ours its).
    let old_client = match tls_channel(server.grpc_addr, &old, true).await {
        Ok(ch) => allowed_over(ch, &token).await.is_err(),
        Err(_) => true,
    };
    assert!(old_client, "the old certificate must be gone");

    // A broken renewal: the key is garbage. Several reload intervals later
    // the working certificate is still served.
    place(
        "tls.key",
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ch = tls_channel(server.grpc_addr, &new, true).await.expect("still served");
    assert_eq!(allowed_over(ch, &token).await.expect("check"), 200);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn https_to_hydra_with_a_private_ca_and_handshake_failure_is_503() {
    let pki = Pki::new();
    let hydra = FakeHydra::start_tls(&pki.read(&pki.server_cert), &pki.read(&pki.server_key)).await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");

    let mut c = config_for(&hydra.https_introspection_url());
    c.introspection.tls.ca_file = Some(pki.ca.clone());
    let server = start_authz(&c).await;
    let check = Checker::connect(server.grpc_addr).await;
    let a = Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(&token))]).await);
    assert_eq!(a.http_status, 200, "{}", a.body);

    // Without our CA the handshake fails: fail closed with 503, never allow.
    let c = config_for(&hydra.https_introspection_url());
    let server = start_authz(&c).await;
    let check = Checker::connect(server.grpc_addr).await;
    let a = Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(&token))]).await);
    assert_eq!(a.http_status, 503);
    // ...and the service stays healthy.
    let r = reqwest::get(format!("http://{}/readyz", server.http_addr))
        .await
        .expect("probe");
    assert_eq!(r.status(), 200);
}

/// The CA (or client certificate) towards Hydra is renewed on disk: later
/// introspections use it without a restart; a broken file keeps the
/// working client.
#[tokio::test]
async fn renewed_hydra_ca_is_used_without_a_restart() {
    let (hydra_pki, other) = (Pki::new(), Pki::new());
    let hydra = FakeHydra::start_tls(
        &hydra_pki.read(&hydra_pki.server_cert),
        &hydra_pki.read(&hydra_pki.server_key),
    )
    .await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let live = tempfile::tempdir().expect("tempdir");
    let ca = live.path().join("hydra-ca.crt");
    let place = |bytes: &[u8]| {
        let tmp = live.path().join(".hydra-ca.crt.tmp");
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, &ca).expect("rename");
    };
    // First the wrong CA: Hydra's certificate is not trusted.
    place(&other.read(&other.ca));
    let mut c = config_for(&hydra.https_introspection_url());
    c.introspection.tls.ca_file = Some(ca.clone());
    c.introspection.tls.reload_interval_ms = 50;
    c.introspection.resilience.breaker_failures = 1_000_000;
    let server = start_authz(&c).await;
    let check = Checker::connect(server.grpc_addr).await;
    let status =
        || async { Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(&token))]).await).http_status };
    assert_eq!(status().await, 503, "untrusted Hydra: fail closed");

    place(&hydra_pki.read(&hydra_pki.ca));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status().await != 200 {
        assert!(std::time::Instant::now() < deadline, "the renewed CA was never used");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A broken renewal is refused: several intervals later Hydra is still trusted.
    place(b"not a PEM bundle");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let fresh = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let a = Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(&fresh))]).await);
    assert_eq!(a.http_status, 200, "{}", a.body);
}

/// mTLS towards Hydra: with our client certificate the introspection
/// succeeds; without one the handshake fails and the check is 503.
#[tokio::test]
async fn client_certificate_towards_hydra() {
    let pki = Pki::new();
    let hydra = FakeHydra::start_mtls(
        &pki.read(&pki.server_cert),
        &pki.read(&pki.server_key),
        Some(&pki.read(&pki.ca)),
    )
    .await;
    let token = hydra.issuer.mint("reader", &["read_date"]).expect("mint");
    let status = |c: hydra_authz::config::Config| {
        let token = token.clone();
        async move {
            let server = start_authz(&c).await;
            let check = Checker::connect(server.grpc_addr).await;
            Answer::of(&check.check("GET", "/date", &[("authorization", &bearer(&token))]).await).http_status
        }
    };
    let mut c = config_for(&hydra.https_introspection_url());
    c.introspection.tls.ca_file = Some(pki.ca.clone());
    assert_eq!(
        status(c.clone()).await,
        503,
        "no client certificate: refused, fail closed"
    );
    c.introspection.tls.client_cert_file = Some(pki.client_cert.clone());
    c.introspection.tls.client_key_file = Some(pki.client_key.clone());
    assert_eq!(status(c).await, 200);
}

#[test]
fn half_configured_tls_is_a_config_error() {
    let mut c = config_for("http://127.0.0.1:1/x");
    c.server.tls.cert_file = Some("/x.pem".into());
    assert!(c
        .validate()
        .expect_err("key missing")
        .to_string()
        .contains("server.tls"));
    let mut c = config_for("http://127.0.0.1:1/x");
    c.introspection.tls.client_cert_file = Some("/x.pem".into());
    assert!(c
        .validate()
        .expect_err("key missing")
        .to_string()
        .contains("introspection.tls"));
}

/// The admin API's client CA must not be Envoy's: every client Envoy's CA
/// signs (every sidecar, in a mesh) would be an administrator. Refused by
/// path at validation, and by content (the same CA under another name) at
/// start.
#[tokio::test]
async fn the_admin_ca_cannot_be_envoys() {
    let pki = Pki::new();
    let hydra = FakeHydra::start().await;
    let mut c = config_for(&hydra.introspection_url());
    c.server.tls.cert_file = Some(pki.server_cert.clone());
    c.server.tls.key_file = Some(pki.server_key.clone());
    c.server.tls.client_ca_file = Some(pki.ca.clone());
    c.server.admin_addr = "127.0.0.1:0".parse().expect("addr");
    c.server.admin_client_ca_file = Some(pki.ca.clone());
    let err = c.validate().expect_err("same path").to_string();
    assert!(err.contains("server.admin_client_ca_file"), "{err}");

    // A copy; and a bundle of another CA with Envoy's, in CRLF line endings.
    let envoy_ca = String::from_utf8(pki.read(&pki.ca)).expect("pem");
    let other = Pki::new();
    let bundle = format!(
        "{}{}",
        String::from_utf8(other.read(&other.ca)).expect("pem"),
        envoy_ca.replace('\n', "\r\n")
    );
    for (what, content) in [("a copy", envoy_ca.clone()), ("a bundle holding it", bundle)] {
        let copy = tempfile::NamedTempFile::new().expect("temp");
        std::fs::write(copy.path(), content).expect("copy");
        c.server.admin_client_ca_file = Some(copy.path().to_owned());
        c.validate().expect("different paths validate");
        let err = match hydra_authz::server::start(&c).await {
            Ok(_) => panic!("{what} of Envoy's CA must not start"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains("same CA"), "{what}: {err}");
    }
    // Its own CA: starts.
    c.server.admin_client_ca_file = Some(other.ca.clone());
    let server = hydra_authz::server::start(&c).await.expect("a CA of its own");
    server.shutdown().await.expect("shutdown");
}
