//! Request path normalization: the one path rules are matched against.
//!
//! Policy (strict, consistent with Envoy's `normalize_path` +
//! `merge_slashes` + `path_with_escaped_slashes_action: REJECT_REQUEST`, and
//! safe when Envoy is configured without them):
//!
//! 1. the query string and fragment are dropped;
//! 2. percent-encoding is decoded **once** (`/%64ate` is `/date`; `%2564`
//!    stays `%64` and so matches no literal rule);
//! 3. rejected with 400: encoded slashes (`%2F`), backslashes (raw or `%5C`),
//!    dot segments (`.`, `..`, raw or encoded), `;` path parameters (an
//!    upstream that strips them would serve a different route than the one
//!    we matched), control characters, NUL, invalid UTF-8 after decoding, a
//!    path not starting with `/`, and paths over [`MAX_PATH_LEN`];
//! 4. repeated slashes are merged (`//date` is `/date`).
//!
//! Case is kept: `/DATE` is not `/date`. Non-ASCII look-alikes (`/dаte` with
//! a Cyrillic а) stay distinct and match no ASCII rule.

use percent_encoding::percent_decode_str;

/// Longer paths are refused before any matching.
pub const MAX_PATH_LEN: usize = 4096;

/// Normalize `raw` (path plus optional query) or say why it is refused.
pub fn normalize(raw: &str) -> Result<String, &'static str> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if path.len() > MAX_PATH_LEN {
        return Err("path too long");
    }
    if !path.starts_with('/') {
        return Err("path must start with '/'");
    }
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || path.contains('\\') {
        return Err("encoded slashes and backslashes are not allowed in the path");
    }
    let decoded = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| "path is not valid UTF-8")?;
    if decoded.chars().any(|c| c.is_control()) {
        return Err("control characters are not allowed in the path");
    }
    if decoded.contains(';') {
        return Err("path parameters (';') are not allowed");
    }
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err("dot segments ('.', '..') are not allowed in the path");
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The corpus: each input and its answer.
    #[test]
    fn corpus() {
        let ok = [
            ("/date", "/date"),
            ("/date?tz=utc#x", "/date"),
            ("/%64ate", "/date"),
            ("/%64%61%74%65", "/date"),
            ("//date", "/date"),
            ("/date//", "/date/"),
            ("/a//b///c", "/a/b/c"),
            ("/", "/"),
            ("/DATE", "/DATE"),
            ("/%2564ate", "/%64ate"),
            ("/d\u{0430}te", "/d\u{0430}te"),
            ("/caf%C3%A9", "/caf\u{e9}"),
            ("/files/a.json", "/files/a.json"),
            ("/.well-known/x", "/.well-known/x"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize(raw).as_deref(), Ok(want), "{raw}");
        }
        let refused = [
            "/date/../echo",
            "/date/%2e%2e/echo",
            "/%2E%2E/etc/passwd",
            "/./date",
            "/date/.",
            "/..",
            "/date%2Fecho",
            "/date%2fecho",
            "/date\\echo",
            "/date%5Cecho",
            "/date;x",
            "/date%3Bx",
            "/date%00",
            "/date%0d%0aX-Injected:%201",
            "/caf%E9",
            "date",
            "",
        ];
        for raw in refused {
            assert!(normalize(raw).is_err(), "{raw:?} must be refused");
        }
        assert!(normalize(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
    }
}
