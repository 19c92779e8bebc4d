//! Signing keys and an independent JWT verifier for the `[upstream_jwt]`
//! tests: fresh PKCS#8 PEM keys (as src/respond/upstream_jwt.rs's unit tests
//! make them), and Node's `jose` (tests/support/verify-jwt.mjs) checking
//! what hydra-authz signed against its live JWKS.

use base64::Engine as _;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A fresh PKCS#8 PEM private key: P-256 for `ES256`, Ed25519 (PKCS#8 v1)
/// for `EdDSA`.
pub fn pem(alg: &str) -> String {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = SystemRandom::new();
    let der = match alg {
        "EdDSA" => Ed25519KeyPair::generate_pkcs8v1(&rng)
            .expect("ed25519")
            .as_ref()
            .to_vec(),
        "ES256" => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("p256")
            .as_ref()
            .to_vec(),
        other => panic!("no key for {other}"),
    };
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

/// Write a fresh key for `alg` to `path` atomically (a temp file renamed
/// over it), so a poller never reads half a key.
pub fn write_key(path: &Path, alg: &str) {
    let tmp = path.with_extension("pem.new");
    std::fs::write(&tmp, pem(alg)).expect("write key");
    std::fs::rename(&tmp, path).expect("rename key into place");
}

fn script() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/oauth2-server/node_modules/jose").is_dir(),
        "jose missing: run `npm ci` in tests/oauth2-server (scripts/test.sh does it)"
    );
    root.join("tests/support/verify-jwt.mjs")
}

/// One answer line of verify-jwt.mjs: the payload and protected header, or
/// jose's error.
fn answer(line: &str) -> Result<(Value, Value), String> {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("verify-jwt.mjs said {line:?}: {e}"));
    if v["ok"] == true {
        Ok((v["payload"].clone(), v["header"].clone()))
    } else {
        Err(v["error"].as_str().unwrap_or("?").to_owned())
    }
}

/// Verify `jwts` in one `node verify-jwt.mjs` run: whether it exited 0, and
/// each JWT's (payload, header) or jose's error.
pub async fn verify_once(
    jwks_url: &str,
    issuer: &str,
    audience: &str,
    jwts: &[&str],
) -> (bool, Vec<Result<(Value, Value), String>>) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new("node")
            .arg(script())
            .args([jwks_url, issuer, audience])
            .args(jwts)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node verify-jwt.mjs finishes")
    .expect("run node (PATH: scripts/install-node.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<_> = stdout.lines().map(answer).collect();
    assert_eq!(
        answers.len(),
        jwts.len(),
        "one line per JWT: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), answers)
}

/// A long-running `node verify-jwt.mjs` reading JWTs on stdin: no start-up
/// cost per check, for the rotation test's short overlap window.
pub struct Jose {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Jose {
    pub async fn start(jwks_url: &str, issuer: &str, audience: &str) -> Jose {
        let mut child = Command::new("node")
            .arg(script())
            .args([jwks_url, issuer, audience])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start node verify-jwt.mjs (PATH: scripts/install-node.sh)");
        let stdin = child.stdin.take().expect("stdin");
        let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        Jose {
            _child: child,
            stdin,
            lines,
        }
    }

    /// The JWT's (payload, header) when jose verifies it against the JWKS
    /// as it is now; else jose's error.
    pub async fn verify(&mut self, jwt: &str) -> Result<(Value, Value), String> {
        self.stdin
            .write_all(format!("{jwt}\n").as_bytes())
            .await
            .expect("write to verify-jwt.mjs");
        self.stdin.flush().await.expect("flush");
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("verify-jwt.mjs answers")
            .expect("read")
            .expect("verify-jwt.mjs still running");
        answer(&line)
    }
}
