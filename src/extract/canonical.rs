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
//! A value that is not a method or a host at all (control characters,
//! spaces, …) is refused with 400; what is kept for the log line is then an
//! escaped, bounded copy, so it cannot split or forge a line.

use super::refusal::RequestProblem;

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
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
pub fn host(raw: &str) -> Result<String, RequestProblem> {
    if raw.len() > 255 + 6 || !raw.bytes().all(is_host_byte) {
        return Err(RequestProblem::HostInvalid);
    }
    let name = strip_port(raw);
    if name.starts_with('[') != name.ends_with(']') {
        return Err(RequestProblem::HostInvalid);
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.ends_with('.') {
        return Err(RequestProblem::HostInvalid);
    }
    Ok(name.to_ascii_lowercase())
}

/// `host:port` → `host`, `[v6]:port` → `[v6]`. Envoy's `host` is the `:authority`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
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
