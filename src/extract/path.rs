//! Request path normalization: the one path rules are matched against.
//!
//! Policy (strict, consistent with Envoy's `normalize_path` +
//! `merge_slashes` + `path_with_escaped_slashes_action: REJECT_REQUEST`, and
//! safe when Envoy is configured without them):
//!
//! 1. the query string and fragment are dropped;
//! 2. percent-encoded **unreserved** characters (RFC 3986 §6.2.2.2: letters,
//!    digits, `-._~`) and the **sub-delimiters, `:` and `@`** a segment may
//!    hold raw (`!$&'()*+,=:@`, §3.3) are decoded, once (`/%64ate` is
//!    `/date`, `/items/42%3Apublish` is `/items/42:publish`): most upstream
//!    routers decode them before routing, so a rule naming the raw
//!    character must see the encoded one too. Every other escape stays
//!    encoded, upper-cased (`%3f` is `%3F`, never a `?`), so the result is
//!    canonical and a second pass changes nothing;
//! 3. rejected with 400: encoded slashes (`%2F`), backslashes (raw or `%5C`),
//!    `;` path parameters (raw or `%3B`: an upstream that strips them would
//!    serve another route than the one we matched), control characters (raw
//!    or encoded), malformed escapes, dot segments (`.`, `..`, raw or
//!    encoded), a path not starting with `/`, and paths over [`MAX_PATH_LEN`];
//! 4. repeated slashes are merged (`/a//date` is `/a/date`); a path that
//!    *starts* with `//` is refused before it gets here, by every front
//!    door (`AuthzRequest::with_target`: 400 `authority_like_target`).
//!
//! 5. characters a path may not hold raw (non-ASCII, space, `"<>[]^`{|}`)
//!    are escaped, upper-case: `/städte` is `/st%C3%A4dte`, the one form
//!    whichever way a front door passed it.
//!
//! Case is kept: `/DATE` is not `/date`. Non-ASCII look-alikes (`/dаte` with
//! a Cyrillic а, `/d%D0%B0te`) stay distinct and match no ASCII rule.

use super::refusal::PathProblem;

/// Longer paths are refused before any matching.
pub const MAX_PATH_LEN: usize = 4096;

/// Normalize `raw` (path plus optional query) or say why it is refused.
pub fn normalize(raw: &str) -> Result<String, PathProblem> {
    let path = raw.split(['?', '#']).next().unwrap_or("");
    if path.len() > MAX_PATH_LEN {
        return Err(PathProblem::TooLong);
    }
    if !path.starts_with('/') {
        return Err(PathProblem::NotAbsolute);
    }
    let decoded = decode_unreserved(path)?;
    let mut out = String::with_capacity(decoded.len());
    for segment in decoded.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err(PathProblem::DotSegments);
        }
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() || decoded.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

fn decode_unreserved(path: &str) -> Result<String, PathProblem> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            // Safe: we only split at ASCII bytes, so multi-byte UTF-8 stays whole.
            let next = path[i..].find('%').map_or(path.len(), |n| i + n);
            let run = &path[i..next];
            let mut kept = 0;
            for (at, c) in run.char_indices() {
                if c.is_control() {
                    return Err(PathProblem::ControlCharacters);
                }
                if c == '\\' || c == ';' {
                    check_char(c as u8)?;
                }
                if escaped_in_paths(c) {
                    out.push_str(&run[kept..at]);
                    push_escaped(&mut out, c);
                    kept = at + c.len_utf8();
                }
            }
            out.push_str(&run[kept..]);
            i = next;
            continue;
        }
        let hex = path.get(i + 1..i + 3).ok_or(PathProblem::BadPercentEncoding)?;
        let v = u8::from_str_radix(hex, 16).map_err(|_| PathProblem::BadPercentEncoding)?;
        match v {
            b'/' | b'\\' => return Err(PathProblem::EncodedSlash),
            b';' => return Err(PathProblem::Parameters),
            0..=0x1f | 0x7f => return Err(PathProblem::ControlCharacters),
            _ if decoded_in_paths(v) => out.push(char::from(v)),
            _ => {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
        }
        i += 3;
    }
    Ok(out)
}

/// Characters a path may not hold raw (RFC 3986 §3.3): non-ASCII, space
/// and `"<>[]^`{|}`. A door that passes them raw (nginx's `$request_uri`
/// passes `|`, Envoy a UTF-8 path) and one that escapes them reach the
/// same upstream route, so both are matched as the escape: `/städte` and
/// `/st%C3%A4dte` are one path here, as they are to the upstream.
fn escaped_in_paths(c: char) -> bool {
    !c.is_ascii() || matches!(c, ' ' | '"' | '<' | '>' | '[' | ']' | '^' | '`' | '{' | '|' | '}')
}

/// `c`'s UTF-8 bytes as upper-case `%XX` escapes.
fn push_escaped(out: &mut String, c: char) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut utf8 = [0; 4];
    for b in c.encode_utf8(&mut utf8).bytes() {
        out.push('%');
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
}

/// Unreserved characters, sub-delimiters (`;` is refused before this),
/// `:` and `@`: the bytes a segment may hold raw, decoded when escaped.
fn decoded_in_paths(v: u8) -> bool {
    v.is_ascii_alphanumeric()
        || matches!(
            v,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// Whether a rule pattern's literal `text` is already in the form requests
/// are matched in: no escape that [`normalize`] decodes or upper-cases, and
/// nothing it refuses. A pattern that is not could never match anything.
pub fn is_canonical_pattern_text(text: &str) -> bool {
    decode_unreserved(text).is_ok_and(|d| d == text)
}

/// The form [`is_canonical_pattern_text`] wants for `text`, if it has one
/// (for the loader's error message).
pub fn canonical_pattern_text(text: &str) -> Option<String> {
    decode_unreserved(text).ok()
}

/// `text` in that form, or as it is when it has none (a pattern the rule
/// loader will then refuse, naming why): for paths read from elsewhere,
/// an OpenAPI document or an Envoy route table.
pub fn in_matched_form(text: &str) -> String {
    canonical_pattern_text(text).unwrap_or_else(|| text.to_owned())
}

fn check_char(b: u8) -> Result<(), PathProblem> {
    match b {
        b'\\' => Err(PathProblem::EncodedSlash),
        b';' => Err(PathProblem::Parameters),
        0..=0x1f | 0x7f => Err(PathProblem::ControlCharacters),
        _ => Ok(()),
    }
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
            ("/%2564ate", "/%2564ate"),
            ("/d\u{0430}te", "/d%D0%B0te"),
            ("/d%d0%b0te", "/d%D0%B0te"),
            ("/st\u{e4}dte/1", "/st%C3%A4dte/1"),
            ("/a b|c\"<>[]^`{}", "/a%20b%7Cc%22%3C%3E%5B%5D%5E%60%7B%7D"),
            ("/\u{1F600}", "/%F0%9F%98%80"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/a%3fb", "/a%3Fb"),
            ("/a%2a", "/a*"),
            ("/items/42%3Apublish", "/items/42:publish"),
            ("/users/%40me", "/users/@me"),
            ("/a%21%24%26%27%28%29%2B%2C%3D", "/a!$&'()+,="),
            ("/a%3Db%23c%25d%20e", "/a=b%23c%25d%20e"),
            ("/a%5b%5D%7B%7c", "/a%5B%5D%7B%7C"),
            ("/%7euser", "/~user"),
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
            "/a%zz",
            "/a%4",
            "date",
            "",
        ];
        for raw in refused {
            assert!(normalize(raw).is_err(), "{raw:?} must be refused");
        }
        assert!(normalize(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
    }

    /// A character passed raw by one front door and escaped by another is
    /// one path, and that path is its own normal form.
    #[test]
    fn raw_and_escaped_spellings_are_one_path() {
        for (raw, escaped) in [
            ("/st\u{e4}dte/1", "/st%c3%a4dte/1"),
            ("/a|b", "/a%7Cb"),
            ("/a b", "/a%20b"),
            ("/x[1]{2}", "/x%5B1%5D%7B2%7D"),
        ] {
            let (a, b) = (normalize(raw), normalize(escaped));
            assert_eq!(a, b, "{raw:?} and {escaped:?}");
            let a = a.expect("normalized");
            assert_eq!(normalize(&a).as_deref(), Ok(a.as_str()));
            assert!(is_canonical_pattern_text(&a) && !is_canonical_pattern_text(raw));
        }
    }
}
