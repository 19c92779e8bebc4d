//! The demo's upstream API: answers every request with the method, path and
//! headers it received as JSON, so you can see what hydra-authz injected.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::Json;
use axum::Router;
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub fn router() -> Router {
    Router::new().fallback(echo)
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Json<Value> {
    let mut h = Map::new();
    for name in headers.keys() {
        // Repeated headers become a list so a smuggled duplicate is visible.
        let values: Vec<Value> = headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(shown_value(name.as_str(), &String::from_utf8_lossy(v.as_bytes()))))
            .collect();
        let value = if values.len() == 1 {
            values.into_iter().next().unwrap_or(Value::Null)
        } else {
            Value::Array(values)
        };
        h.insert(name.as_str().to_owned(), value);
    }
    Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "headers": h,
        "body_bytes": body.len(),
        "date": crate::authn::introspection::now_unix(),
    }))
}

/// Never echo a credential back, even the caller's own: show its fingerprint.
fn shown_value(name: &str, value: &str) -> String {
    if name == "authorization" {
        format!(
            "<redacted, sha256 fp {}>",
            crate::extract::credential::fingerprint(value)
        )
    } else {
        value.to_owned()
    }
}

/// Serve on `addr` (loopback only) in the background; returns the bound address.
pub async fn serve(addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "the demo upstream binds loopback addresses only"
    );
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router()).await });
    Ok(bound)
}
