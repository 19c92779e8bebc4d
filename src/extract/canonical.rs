//! The forms rules are matched in: the form the upstream will act on, so a
//! request cannot skip the rule meant for it by spelling a value differently.
//!
//! - **Method**: an RFC 9110 token in upper case; any other spelling is
//!   refused (400). HTTP methods are case-sensitive, but Express, Rails and
//!   many others treat `delete` as `DELETE`, and Envoy forwards the method
//!   as sent (over HTTP/2 too). Upper-casing it for our rules would not be
//!   enough: Envoy's own route match on `:method` is case-sensitive, so a
//!   `delete` could land on a weaker route whose per-route policy
//!   (context_extensions) we would then apply. Refusing it is the one
//!   answer that is safe whichever policy source decides.
//! - **Host**: lower-case, without the port and without the trailing dot
//!   (`Admin.Example.COM.:8443` is `admin.example.com`), as DNS and virtual
//!   hosting read it.
//!
//! - **Method overrides**: a request that names another method in
//!   `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override` (any
//!   `-`/`_` spelling) or a `_method` query parameter is refused (400):
//!   Rails (`Rack::MethodOverride`, on by default), Symfony, Laravel and
//!   others run such a `POST` as the named method, so a rule matched on
//!   `POST` would decide for a `DELETE`. One naming the method the request
//!   has changes nothing and passes. (A `_method` in a form body is not
//!   something we are shown.)
//!
//! A value that is not a method or a host at all (control characters,
//! spaces, …) is refused with 400; what is kept for the log line is then an
//! escaped, bounded copy, so it cannot split or forge a line.

use super::refusal::RequestProblem;

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Header names (lower-case, `-` spelling) frameworks read a method
/// override from.
const METHOD_OVERRIDE_HEADERS: [&[u8]; 3] = [b"x-http-method-override", b"x-http-method", b"x-method-override"];

/// Why a request that names another method (in a method override header
/// or a `_method` query parameter) is refused; `None` when it names none,
/// an empty one (ignored by the frameworks) or its own (`GET` for a `HEAD`
/// too). Not only a `POST`: Rack, Symfony and ASP.NET Core override only a
/// POST, but Slim 3/4, Flask's documented middleware and flask-modus
/// override any method.
pub fn method_override(method: &str, headers: &super::headers::Headers, query: &str) -> Option<RequestProblem> {
    let other = |value: &[u8]| {
        let value = value.trim_ascii();
        let ignored = value.is_empty()
            || value.eq_ignore_ascii_case(method.as_bytes())
            || (method == "HEAD" && value.eq_ignore_ascii_case(b"GET"));
        !ignored
    };
    let overrides = headers.entries().any(|(name, value)| {
        METHOD_OVERRIDE_HEADERS
            .iter()
            .any(|h| super::headers::same_name_any_separator(name, h))
            && other(value)
    });
    let in_query = || {
        // Cheap first: names are decoded (`%5Fmethod`) by the frameworks too.
        (query.contains("method") || query.contains('%'))
            && form_urlencoded::parse(query.as_bytes())
                .any(|(k, v)| as_php_reads_it(&k) == "_method" && other(v.as_bytes()))
    };
    (overrides || in_query()).then_some(RequestProblem::MethodOverride)
}

/// A query parameter's name as PHP registers it (Symfony and Laravel read
/// `$_GET`): leading spaces dropped, a `[...]` suffix dropped, and `.`,
/// ` ` and an unmatched `[` made `_` (`.method`, `[method`, `_method[]`
/// are all `_method` there).
pub(super) fn as_php_reads_it(name: &str) -> String {
    let name = name.trim_start_matches(' ');
    let base = match name.find('[') {
        Some(i) if name[i..].contains(']') => &name[..i],
        _ => name,
    };
    base.replace([' ', '.', '['], "_")
}

/// The method to match rules with; or why it is refused.
pub fn method(raw: &str) -> Result<String, RequestProblem> {
    if raw.is_empty() || raw.len() > 64 || !raw.bytes().all(is_tchar) {
        return Err(RequestProblem::MethodNotToken);
    }
    if raw.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(RequestProblem::MethodNotUpperCase);
    }
    Ok(raw.to_owned())
}

/// RFC 3986 reg-name / IP-literal characters, plus ':' for the port.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%:[]".contains(&b)
}

/// The host to match rules with: lower-case, no port, no trailing dot.
/// Empty stays empty (HTTP/1.0 without `Host`): only host-less rules match.
/// Brackets hold an IPv6 address and nothing else, kept with its brackets
/// (`[status.example.com]` is refused, never read as the name inside);
/// after the host only `:port` may follow.
pub fn host(raw: &str) -> Result<String, RequestProblem> {
    if raw.len() > 255 + 6 || !raw.bytes().all(is_host_byte) {
        return Err(RequestProblem::HostInvalid);
    }
    let name = strip_port(raw).ok_or(RequestProblem::HostInvalid)?;
    if let Some(literal) = name.strip_prefix('[') {
        let address = literal.strip_suffix(']').ok_or(RequestProblem::HostInvalid)?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(RequestProblem::HostInvalid);
        }
        return Ok(name.to_ascii_lowercase());
    }
    // ':', '[' and ']' only ever belong to a port or an IP literal.
    if name.contains([':', '[', ']']) {
        return Err(RequestProblem::HostInvalid);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.ends_with('.') {
        return Err(RequestProblem::HostInvalid);
    }
    Ok(name.to_ascii_lowercase())
}

/// `host:port` → `host`, `[v6]:port` → `[v6]` (an empty port too, as RFC
/// 3986 allows); `None` when a bracket is not closed or the literal is
/// followed by anything but a port. Envoy's `host` is the `:authority`.
fn strip_port(host: &str) -> Option<&str> {
    let is_port = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    if host.starts_with('[') {
        let end = host.find(']')?;
        let (literal, rest) = host.split_at(end + 1);
        return match rest.strip_prefix(':') {
            None if rest.is_empty() => Some(literal),
            Some(port) if is_port(port) => Some(literal),
            _ => None,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if is_port(port) => Some(h),
        _ => Some(host),
    }
}

/// A bounded copy of an attacker-chosen value with every character that is
/// not visible ASCII replaced by `?`: what a refused value leaves in logs.
pub fn shown(raw: &str) -> String {
    raw.chars()
        .take(256)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of an override naming another method is refused;
    /// none, or one naming the request's own method, passes.
    #[test]
    fn a_method_override_naming_another_method_is_refused() {
        let h = |pairs: &[(&str, &str)]| {
            super::super::headers::Headers::from_entries(pairs.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
        };
        let refused = [
            ("POST", h(&[("x-http-method-override", "DELETE")]), ""),
            ("POST", h(&[("x_http_method_override", "DELETE")]), ""),
            ("POST", h(&[("x-http_method-override", "PUT")]), ""),
            ("POST", h(&[("x-http-method", "delete")]), ""),
            ("POST", h(&[("x-method-override", "PATCH")]), ""),
            ("POST", h(&[("x-http-method-override", "POST,DELETE")]), ""),
            ("POST", h(&[("x-http-method-override", "GET")]), ""),
            ("POST", h(&[]), "_method=DELETE"),
            ("POST", h(&[]), "a=1&_method=delete"),
            ("POST", h(&[]), "%5Fmethod=DELETE"),
            ("POST", h(&[]), "_m%65thod=PUT"),
            // PHP's spellings of `_method`.
            ("POST", h(&[]), ".method=DELETE"),
            ("POST", h(&[]), "[method=DELETE"),
            ("POST", h(&[]), "+_method=DELETE"),
            ("POST", h(&[]), "%20_method=DELETE"),
            ("POST", h(&[]), "_method[]=DELETE"),
            ("POST", h(&[]), "_method[x]=DELETE"),
            // Any method: Slim 3/4, Flask's middleware, flask-modus.
            ("GET", h(&[("x-http-method-override", "DELETE")]), ""),
            ("GET", h(&[]), "_method=DELETE"),
            ("PUT", h(&[("x-http-method-override", "DELETE")]), ""),
            ("HEAD", h(&[("x-http-method-override", "DELETE")]), ""),
        ];
        for (method, headers, query) in &refused {
            assert_eq!(
                method_override(method, headers, query),
                Some(RequestProblem::MethodOverride),
                "{method} {headers:?} {query:?}"
            );
        }
        let passed = [
            ("POST", h(&[("x-http-method-override", "POST")]), ""),
            ("POST", h(&[("x-http-method-override", " post ")]), ""),
            ("POST", h(&[("x-http-method-overrides", "DELETE")]), ""),
            ("POST", h(&[("x-method", "DELETE")]), ""),
            ("POST", h(&[]), "method=DELETE&x_method=PUT"),
            ("POST", h(&[]), "_method=POST"),
            ("GET", h(&[("accept", "*/*")]), "q=1"),
            // Empty: ignored by the frameworks.
            ("POST", h(&[("x-http-method-override", " ")]), "_method="),
            ("HEAD", h(&[("x-http-method-override", "GET")]), ""),
            ("POST", h(&[]), "x_method=DELETE&_methods=DELETE"),
        ];
        for (method, headers, query) in &passed {
            assert_eq!(
                method_override(method, headers, query),
                None,
                "{method} {headers:?} {query:?}"
            );
        }
    }

    #[test]
    fn methods_must_be_upper_case_tokens() {
        for ok in ["GET", "DELETE", "PROPFIND", "M-SEARCH"] {
            assert_eq!(method(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "delete",
            "Delete",
            "get",
            "GET ",
            "G\nET",
            "GET\r\nX-Injected: 1",
            "DEL\0ETE",
            "GÉT",
            &"A".repeat(65),
        ] {
            assert!(method(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hosts_in_canonical_form() {
        for (raw, want) in [
            ("admin.example.com", "admin.example.com"),
            ("Admin.Example.COM", "admin.example.com"),
            ("admin.example.com.", "admin.example.com"),
            ("ADMIN.example.com.:8443", "admin.example.com"),
            ("admin.example.com:80", "admin.example.com"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
            ("[2001:DB8::1]:", "[2001:db8::1]"),
            ("[::ffff:127.0.0.1]:9", "[::ffff:127.0.0.1]"),
            ("127.0.0.1:9", "127.0.0.1"),
            ("", ""),
        ] {
            assert_eq!(host(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "admin.example.com..",
            "a b",
            "a\r\nb",
            "a/b",
            "a@b",
            "[::1",
            // Brackets hold an IPv6 address, nothing else: a name inside
            // must not be matched as that name (a rule for
            // status.example.com), nor anything after the literal dropped.
            "[status.example.com]",
            "[status.example.com]:443",
            "[admin]",
            "[::1]junk",
            "[::1]:80x",
            "[::1]]",
            "[]",
            "[v1.fe]",
            "::1",
            "a:b:80",
            "admin.example.com:x",
            "admin]",
            "x\u{0}",
            "ädmin.example.com",
        ] {
            assert!(host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shown_values_are_printable() {
        assert_eq!(shown("a\r\nb c\u{1b}[31m"), "a??b?c?[31m");
        assert_eq!(shown(&"x".repeat(1000)).len(), 256);
    }
}
