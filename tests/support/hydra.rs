//! A Hydra-shaped introspection server for contract and fault tests.
//!
//! Normally it answers exactly as Hydra v2's admin port does (it serves the
//! library's dev issuer, which mirrors Hydra's field names and error shape).
//! A [`Fault`] switches it to one of the failure modes a real Hydra or the
//! network in between can show. It also counts requests and connections.

use hydra_authz::demo::issuer::{seed_clients, DevIssuer};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Answer as Hydra does.
    None,
    /// Answer correctly, but only after this long.
    Delay(Duration),
    /// Accept the connection, read the request, never answer.
    Hang,
    /// This status with a Hydra-style JSON error body (and optional Retry-After).
    Status(u16, Option<u32>),
    /// 200 application/json whose body is not JSON.
    Garbage,
    /// 200 with `{"active":"true"}`: a string, not a bool.
    ActiveAsString,
    /// 200 with `[true, …]`: the fields as a JSON array, not an object.
    ArrayBody,
    /// 200 with a valid-looking JSON body of this many bytes.
    Huge(usize),
    /// 200 with a valid active body but `Content-Type: text/html`.
    WrongContentType,
    /// Headers and part of the body, then a TCP reset.
    ResetMidBody,
    /// Accept, then reset at once.
    ResetOnAccept,
}

pub struct FakeHydra {
    pub addr: SocketAddr,
    pub issuer: DevIssuer,
    /// Shared with every connection the server accepts.
    state: Conn,
    connections: Arc<AtomicU64>,
}

impl FakeHydra {
    pub async fn start() -> FakeHydra {
        Self::start_with_tls(None).await
    }

    /// Serve HTTPS with this PEM certificate and key.
    pub async fn start_tls(cert_pem: &[u8], key_pem: &[u8]) -> FakeHydra {
        Self::start_mtls(cert_pem, key_pem, None).await
    }

    /// Serve HTTPS, and with `client_ca_pem` require a client certificate it signed.
    pub async fn start_mtls(cert_pem: &[u8], key_pem: &[u8], client_ca_pem: Option<&[u8]>) -> FakeHydra {
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .expect("certs");
        let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key");
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca_pem {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in CertificateDer::pem_slice_iter(pem) {
                    roots.add(ca.expect("ca")).expect("add ca");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .expect("verifier");
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder.with_single_cert(certs, key).expect("server config");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self::start_with_tls(Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
    }

    async fn start_with_tls(tls: Option<tokio_rustls::TlsAcceptor>) -> FakeHydra {
        let listener = TcpListener::bind(super::lo0()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let issuer = DevIssuer::new(format!("http://{addr}"), seed_clients(), 3600);
        let connections = Arc::new(AtomicU64::new(0));
        let state = Conn {
            issuer: issuer.clone(),
            fault: Arc::new(Mutex::new(Fault::None)),
            requests: Default::default(),
            last_auth: Default::default(),
            last_traceparent: Default::default(),
            last_baggage: Default::default(),
            budget: Arc::new(AtomicI64::new(-1)),
            in_flight: Default::default(),
            max_in_flight: Default::default(),
        };
        let accepted = state.clone();
        let conns = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                match &tls {
                    None => {
                        tokio::spawn(accepted.clone().handle(stream));
                    }
                    Some(acceptor) => {
                        let (acceptor, state) = (acceptor.clone(), accepted.clone());
                        tokio::spawn(async move {
                            if let Ok(tls) = acceptor.accept(stream).await {
                                state.serve(TokioIo::new(tls)).await;
                            }
                        });
                    }
                }
            }
        });
        FakeHydra {
            addr,
            issuer,
            state,
            connections,
        }
    }

    /// The fault for the next `n` requests only, then normal answers.
    pub fn set_fault_times(&self, f: Fault, n: i64) {
        *self.state.fault.lock().expect("lock") = f;
        self.state.budget.store(n, Ordering::SeqCst);
    }

    /// The most introspection requests seen in flight at once.
    pub fn max_in_flight(&self) -> i64 {
        self.state.max_in_flight.load(Ordering::SeqCst)
    }

    pub fn introspection_url(&self) -> String {
        format!("http://{}/admin/oauth2/introspect", self.addr)
    }

    pub fn https_introspection_url(&self) -> String {
        format!("https://localhost:{}/admin/oauth2/introspect", self.addr.port())
    }

    pub fn set_fault(&self, f: Fault) {
        self.set_fault_times(f, -1);
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    pub fn last_authorization(&self) -> Option<String> {
        self.state.last_auth.lock().expect("lock").clone()
    }

    pub fn last_traceparent(&self) -> Option<String> {
        self.state.last_traceparent.lock().expect("lock").clone()
    }

    /// The `baggage` header of the last introspection request, if any.
    pub fn last_baggage(&self) -> Option<String> {
        self.state.last_baggage.lock().expect("lock").clone()
    }
}

#[derive(Clone)]
struct Conn {
    issuer: DevIssuer,
    fault: Arc<Mutex<Fault>>,
    requests: Arc<AtomicU64>,
    last_auth: Arc<Mutex<Option<String>>>,
    last_traceparent: Arc<Mutex<Option<String>>>,
    last_baggage: Arc<Mutex<Option<String>>>,
    budget: Arc<AtomicI64>,
    in_flight: Arc<AtomicI64>,
    max_in_flight: Arc<AtomicI64>,
}

impl Conn {
    /// The fault that applies to this request (spending the budget).
    fn take_fault(&self) -> Fault {
        let fault = self.fault.lock().expect("lock").clone();
        let left = self.budget.load(Ordering::SeqCst);
        if left < 0 {
            return fault;
        }
        if left == 0
            || self
                .budget
                .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
        {
            return Fault::None;
        }
        fault
    }

    async fn handle(self, mut stream: TcpStream) {
        let fault = self.fault.lock().expect("lock").clone();
        match fault {
            Fault::ResetOnAccept => reset(stream),
            Fault::Hang | Fault::ResetMidBody => {
                let _ = read_request_head(&mut stream).await;
                self.requests.fetch_add(1, Ordering::SeqCst);
                if fault == Fault::Hang {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                } else {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n";
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(br#"{"active":true,"scope":"read_"#).await;
                    let _ = stream.flush().await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    reset(stream);
                }
            }
            _ => self.serve(TokioIo::new(stream)).await,
        }
    }

    /// Serve HTTP (1.1 or 2) on an accepted connection, plain or TLS.
    async fn serve<I>(self, io: TokioIo<I>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let router = self
            .issuer
            .admin_router()
            .layer(axum::middleware::from_fn(move |req, next| {
                let c = self.clone();
                async move { c.respond(req, next).await }
            }));
        let service = TowerToHyperService::new(router);
        let _ = auto::Builder::new(TokioExecutor::new())
            .serve_connection(io, service)
            .await;
    }

    async fn respond(self, req: axum::extract::Request, next: axum::middleware::Next) -> axum::response::Response {
        use axum::http::header;
        self.requests.fetch_add(1, Ordering::SeqCst);
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *self.last_auth.lock().expect("lock") = auth;
        let tp = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *self.last_traceparent.lock().expect("lock") = tp;
        let baggage = req
            .headers()
            .get("baggage")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        *self.last_baggage.lock().expect("lock") = baggage;
        let fault = self.take_fault();
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let resp = self.clone().answer(fault, req, next).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        resp
    }

    async fn answer(
        self,
        fault: Fault,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        use axum::http::{header, StatusCode};
        use axum::response::IntoResponse;
        let json = [(header::CONTENT_TYPE, "application/json")];
        match fault {
            Fault::Delay(d) => {
                tokio::time::sleep(d).await;
                next.run(req).await
            }
            Fault::Status(code, retry_after) => {
                let status = StatusCode::from_u16(code).expect("status");
                let body =
                    format!(r#"{{"error":"request_failed","error_description":"injected","status_code":{code}}}"#);
                let mut resp = (status, json, body).into_response();
                if let Some(s) = retry_after {
                    resp.headers_mut().insert(header::RETRY_AFTER, s.into());
                }
                resp
            }
            Fault::Garbage => (StatusCode::OK, json, "<html>not json</html>").into_response(),
            Fault::ActiveAsString => (
                StatusCode::OK,
                json,
                r#"{"active":"true","scope":"read_date post_echo"}"#,
            )
                .into_response(),
            Fault::ArrayBody => (StatusCode::OK, json, r#"[true, "read_date post_echo", "reader"]"#).into_response(),
            Fault::Huge(n) => {
                // Built in one allocation: a char-by-char loop is slow enough in a
                // debug build to turn this case into a timeout on a loaded machine.
                let head = r#"{"active":true,"scope":"read_date","pad":""#;
                let body = format!("{head}{}\"}}", "x".repeat(n.saturating_sub(head.len() + 2)));
                (StatusCode::OK, json, body).into_response()
            }
            Fault::WrongContentType => {
                let body = r#"{"active":true,"scope":"read_date post_echo","client_id":"reader"}"#;
                (StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], body).into_response()
            }
            // Connection-level faults on an already pooled connection: hang,
            // or abort the body half-way (hyper then drops the connection).
            Fault::Hang => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                next.run(req).await
            }
            Fault::ResetMidBody | Fault::ResetOnAccept => {
                let chunks: Vec<Result<&'static [u8], std::io::Error>> = vec![
                    Ok(br#"{"active":true,"scope":"read_"#),
                    Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "injected reset",
                    )),
                ];
                let body = axum::body::Body::from_stream(futures_util::stream::iter(chunks));
                let mut resp = (StatusCode::OK, json, body).into_response();
                resp.headers_mut().insert(header::CONTENT_LENGTH, 1000.into());
                resp
            }
            Fault::None => next.run(req).await,
        }
    }
}

async fn read_request_head(stream: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Close with RST instead of FIN.
fn reset(stream: TcpStream) {
    if let Ok(std) = stream.into_std() {
        let sock = socket2::SockRef::from(&std);
        let _ = sock.set_linger(Some(Duration::ZERO));
    }
}
