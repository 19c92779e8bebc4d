//! RFC 6750 bearer credentials: parse the `authorization` header into a
//! [`Token`] whose `Debug`/`Display` never show the secret.

pub use super::refusal::CredentialProblem;
use std::fmt;
use std::sync::OnceLock;

/// Longest token we accept. Real access tokens (opaque `ory_at_…` or JWT) are
/// far shorter; the bound keeps a hostile header from being forwarded to Hydra.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// A bearer token. The raw value is only reachable through [`Token::expose`],
/// so it cannot end up in a log line by accident.
#[derive(Clone)]
pub struct Token {
    raw: String,
    /// SHA-256 of `raw`, computed once: the cache key and the logged
    /// fingerprint of one check both come from it.
    digest: OnceLock<[u8; 32]>,
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Token {}

impl Token {
    pub fn new(raw: impl Into<String>) -> Self {
        Token {
            raw: raw.into(),
            digest: OnceLock::new(),
        }
    }

    /// The secret itself, for the introspection request body only.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// SHA-256 of the token (the cache key on a single replica).
    pub fn digest(&self) -> &[u8; 32] {
        self.digest.get_or_init(|| crate::sha256::of(self.raw.as_bytes()))
    }

    /// First 8 hex digits of SHA-256: enough to correlate log lines, useless
    /// to replay.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self.digest())
    }
}

/// Fingerprint of an arbitrary secret; see [`Token::fingerprint`].
pub fn fingerprint(secret: &str) -> Fingerprint {
    Fingerprint::of(&crate::sha256::of(secret.as_bytes()))
}

/// The first four bytes of a secret's SHA-256 in hex: what a log line may
/// carry instead of the secret. A value, not a `String`: every decision
/// carries one, and it need not cost an allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 8]);

impl Fingerprint {
    fn of(digest: &[u8; 32]) -> Fingerprint {
        let mut hex = [b'?'; 8];
        // Cannot fail (4 bytes, 8 digits); if it did, the `?`s would show it.
        let _ = hex::encode_to_slice(&digest[..4], &mut hex);
        Fingerprint(hex)
    }

    pub fn as_str(&self) -> &str {
        // Hex digits or `?`: always ASCII.
        std::str::from_utf8(&self.0).unwrap_or("????????")
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.as_str())
    }
}

impl PartialEq<&str> for Fingerprint {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(fp:{})", self.fingerprint())
    }
}

/// What the request carried in its `authorization` header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credential {
    /// No `authorization` header at all.
    #[default]
    Missing,
    Bearer(Token),
    /// Present but not a single well-formed bearer token. The reason is safe
    /// to show to the client: it never contains the header value.
    Malformed(CredentialProblem),
}

/// Parse an `authorization` header value per RFC 6750 §2.1:
/// `credentials = "Bearer" 1*SP b64token`, scheme case-insensitive.
///
/// Envoy joins repeated headers with `,`, and `,` is not a b64token
/// character, so two credentials are rejected here too.
pub fn parse_authorization(value: Option<&str>) -> Credential {
    let Some(value) = value else {
        return Credential::Missing;
    };
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    if value.is_empty() {
        return Credential::Malformed(CredentialProblem::EmptyHeader);
    }
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Credential::Malformed(CredentialProblem::NotBearerForm);
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Credential::Malformed(CredentialProblem::SchemeNotBearer);
    }
    let token = rest.trim_start_matches(' ');
    if token.is_empty() {
        return Credential::Malformed(CredentialProblem::EmptyToken);
    }
    if token.len() > MAX_TOKEN_LEN {
        return Credential::Malformed(CredentialProblem::TooLong);
    }
    if !is_b64token(token) {
        return Credential::Malformed(CredentialProblem::NotB64Token);
    }
    Credential::Bearer(Token::new(token))
}

/// A token sent without a scheme (a cookie, a query parameter, a custom
/// header): the same length and character rules as a bearer token.
pub fn parse_raw_token(value: &str) -> Credential {
    let token = value.trim_matches(|c| c == ' ' || c == '\t');
    if token.is_empty() {
        return Credential::Missing;
    }
    if token.len() > MAX_TOKEN_LEN {
        return Credential::Malformed(CredentialProblem::TooLong);
    }
    if !is_b64token(token) {
        return Credential::Malformed(CredentialProblem::NotB64Token);
    }
    Credential::Bearer(Token::new(token))
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| B64TOKEN[usize::from(b)])
}

/// RFC 6750 b64token characters (before the trailing `=`): one look-up per
/// byte, as every check pays this for its token.
static B64TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~' | b'+' | b'/');
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(s: &str) -> Credential {
        Credential::Bearer(Token::new(s))
    }

    #[test]
    fn accepts_well_formed_tokens_any_scheme_case() {
        assert_eq!(
            parse_authorization(Some("Bearer abc.DEF-_~+/1==")),
            bearer("abc.DEF-_~+/1==")
        );
        assert_eq!(parse_authorization(Some("bearer ory_at_x")), bearer("ory_at_x"));
        assert_eq!(parse_authorization(Some("BEARER  t")), bearer("t"));
    }

    #[test]
    fn missing_header_is_missing_not_malformed() {
        assert_eq!(parse_authorization(None), Credential::Missing);
    }

    #[test]
    fn rejects_malformed_headers() {
        for bad in [
            "",
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            "Token abc",
            "Bearer a b",
            "Bearer a,Bearer b",
            "Bearer abc\"",
            "Bearer ===",
            "Bearer a=b",
            "Bearer tok\u{e9}n",
            "Bearerabc",
        ] {
            assert!(
                matches!(parse_authorization(Some(bad)), Credential::Malformed(_)),
                "{bad:?} should be malformed"
            );
        }
    }

    #[test]
    fn rejects_oversized_token() {
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert_eq!(
            parse_authorization(Some(&long)),
            Credential::Malformed(CredentialProblem::TooLong)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let t = Token::new("super-secret-token");
        let shown = format!("{t:?} {:?}", Credential::Bearer(t.clone()));
        assert!(!shown.contains("super-secret-token"));
        assert!(shown.contains(t.fingerprint().as_str()));
        assert_eq!(t.fingerprint().as_str().len(), 8);
    }

    /// The fingerprint is the first 8 hex digits of SHA-256 (FIPS 180-2's
    /// "abc" vector), the same for a token and for a bare secret.
    #[test]
    fn fingerprint_is_the_digest_prefix() {
        assert_eq!(Token::new("abc").fingerprint(), "ba7816bf");
        assert_eq!(fingerprint("abc"), "ba7816bf");
    }

    /// Every byte: the table says what the RFC 6750 grammar says.
    #[test]
    fn b64token_table_matches_the_grammar() {
        for b in 0..=255u8 {
            let allowed = b.is_ascii_alphanumeric() || b"-._~+/".contains(&b);
            assert_eq!(B64TOKEN[usize::from(b)], allowed, "byte {b:#04x}");
        }
        assert!(is_b64token("a=="));
        assert!(!is_b64token("=="));
    }
}
