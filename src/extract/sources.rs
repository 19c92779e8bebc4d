//! Where a rule may find its bearer token (rule key `token_from`): the
//! `Authorization` header (the default), another header, a cookie (browser
//! and WebSocket clients cannot send `Authorization`), or a query parameter
//! (only when a rule asks: RFC 6750 §2.3 warns that URLs end up in logs).
//! Sources are tried in order; two different tokens in one request are 400.

use super::credential::{parse_authorization, parse_raw_token, Credential, CredentialProblem, Token};
use super::AuthzRequest;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Authorization,
    /// A header carrying the token itself (or `Bearer <token>`).
    Header(String),
    Cookie(String),
    Query(String),
}

impl TokenSource {
    /// Whether this source reads the query's `access_token` itself (a
    /// source named `access.token` does not: the plain name is another
    /// parameter to it, and PHP's `$_GET['access_token']` to an upstream).
    pub fn is_query_access_token(&self) -> bool {
        matches!(self, TokenSource::Query(name) if name == "access_token")
    }

    /// `"header"`, `"header:<name>"`, `"cookie:<name>"`, `"query:<name>"`.
    pub fn parse(s: &str) -> Result<TokenSource, String> {
        let bad = |why: &str| Err(format!("{s:?}: {why}"));
        let (kind, name) = match s.split_once(':') {
            None if s == "header" => return Ok(TokenSource::Authorization),
            None => return bad("expected header, header:<name>, cookie:<name> or query:<name>"),
            Some(pair) => pair,
        };
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token_char) {
            return bad("the name must be a non-empty token (letters, digits, - _ . and the like)");
        }
        match kind {
            "header" if name.eq_ignore_ascii_case("authorization") => Ok(TokenSource::Authorization),
            "header" if name.bytes().any(|b| b.is_ascii_uppercase()) => bad("header names are lower-case"),
            // Every -/_ spelling is read as the token and stripped; past
            // six separators they are too many to list (2^n).
            "header" if super::headers::separators(name) > super::headers::MAX_SPELLED_SEPARATORS => bad(&format!(
                "at most {} '-' or '_' in a token header's name",
                super::headers::MAX_SPELLED_SEPARATORS
            )),
            "header" => Ok(TokenSource::Header(name.to_owned())),
            "cookie" => Ok(TokenSource::Cookie(name.to_owned())),
            "query" => Ok(TokenSource::Query(name.to_owned())),
            _ => bad("expected header, header:<name>, cookie:<name> or query:<name>"),
        }
    }
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Authorization => f.write_str("header"),
            TokenSource::Header(n) => write!(f, "header:{n}"),
            TokenSource::Cookie(n) => write!(f, "cookie:{n}"),
            TokenSource::Query(n) => write!(f, "query:{n}"),
        }
    }
}

/// The token a request carries in `sources`, and where it was found. The
/// `Authorization` header has been parsed (and refused when malformed) at
/// extraction; the others are read here, once a rule has named them.
pub fn find<'r>(req: &'r AuthzRequest, sources: &'r [TokenSource]) -> Result<Option<Found>, CredentialProblem> {
    let mut found: Option<Found> = None;
    for source in sources {
        let credential = match source {
            TokenSource::Authorization => req.credential.clone(),
            TokenSource::Header(name) => one(header_spellings(req, name)?.into_iter(), header_token)?,
            TokenSource::Cookie(name) => one(cookies(req, name)?, parse_raw_token)?,
            TokenSource::Query(name) => one(query(req, name)?.into_iter(), parse_raw_token)?,
        };
        let token = match credential {
            Credential::Missing => continue,
            Credential::Malformed(why) => return Err(why),
            Credential::Bearer(t) => t,
        };
        match &mut found {
            Some(earlier) if earlier.token != token => return Err(CredentialProblem::TwoCredentials),
            // The same token again: one credential, but stripping must
            // remove this copy too.
            Some(earlier) => earlier.also.push(source.clone()),
            None => {
                found = Some(Found {
                    token,
                    source: source.clone(),
                    also: Vec::new(),
                })
            }
        }
    }
    Ok(found)
}

/// A token and where it came from (so it can be removed before the upstream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub token: Token,
    pub source: TokenSource,
    /// Later sources holding the same token (removed too when stripping).
    pub also: Vec<TokenSource>,
}

/// Header `name` as text. One that is present but not text may hide a
/// second credential (or one that must be stripped): refused, as the
/// `Authorization` header is, never read as absent.
fn text<'r>(req: &'r AuthzRequest, name: &str) -> Result<Option<&'r str>, CredentialProblem> {
    match req.headers.raw(name) {
        None => Ok(None),
        Some(raw) => std::str::from_utf8(raw)
            .map(Some)
            .map_err(|_| CredentialProblem::NotText),
    }
}

/// A token header's value: the token itself, or `Bearer <token>`.
fn header_token(v: &str) -> Credential {
    // Envoy joins repeated headers with ','; never a b64token character.
    // `get`, not slicing: the value is the client's, and byte 7 may fall
    // inside a multi-byte character.
    if v.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("bearer ")) {
        parse_authorization(Some(v))
    } else {
        parse_raw_token(v)
    }
}

/// The values of header `name` and of every `-`/`_` spelling of it: CGI,
/// WSGI and PHP upstreams read `x_api_token` as `x-api-token`, so a copy
/// under another spelling is the same header to them, and must be read
/// (and stripped) as one.
fn header_spellings<'r>(req: &'r AuthzRequest, name: &str) -> Result<Vec<&'r str>, CredentialProblem> {
    req.headers
        .entries()
        .filter(|(k, _)| super::headers::same_name_any_separator(k, name.as_bytes()))
        .map(|(_, v)| std::str::from_utf8(v).map_err(|_| CredentialProblem::NotText))
        .collect()
}

/// Every value of cookie `name` in the request's `cookie` header(s).
fn cookies<'r>(req: &'r AuthzRequest, name: &'r str) -> Result<impl Iterator<Item = &'r str>, CredentialProblem> {
    Ok(text(req, "cookie")?
        .into_iter()
        // Repeated cookie headers arrive joined with ',' (Envoy's `headers`) or
        // "; " (RFC 6265: the forward-auth door, Envoy's raw `header_map`).
        .flat_map(|h| h.split([';', ',']))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            // `session =x` is `session` to most cookie parsers (npm
            // `cookie`, Python's, Go's): compared trimmed, as they do.
            reads_as(k.trim(), name).then(|| v.trim().trim_matches('"'))
        }))
}

/// Every value of query parameter `name`. The name must be spelled as is:
/// Envoy's `query_parameters_to_remove` matches raw names, so another
/// spelling an upstream reads as the same name would be authorized here
/// and then not stripped: percent-encoded (`access%5Ftoken`), or as PHP
/// reads it (`access.token`, `access_token[]`). Such a request is refused.
fn query(req: &AuthzRequest, name: &str) -> Result<Vec<String>, CredentialProblem> {
    let mut values = Vec::new();
    // Rack 2 and older Python servers split a query at ';' too: a token
    // parameter after one would be read by them, and neither found nor
    // stripped here. Refused.
    if req
        .query
        .split('&')
        .any(|p| p.split(';').skip(1).any(|q| reads_as(&query_key(q), name)))
    {
        return Err(CredentialProblem::SemicolonQuery);
    }
    for pair in req.query.split('&').filter(|p| !p.is_empty()) {
        let raw_key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let Some((key, value)) = form_urlencoded::parse(pair.as_bytes()).next() else {
            continue;
        };
        if !reads_as(&key, name) {
            continue;
        }
        if raw_key != name {
            return Err(CredentialProblem::EncodedQueryName);
        }
        values.push(value.into_owned());
    }
    Ok(values)
}

/// Whether an upstream reads the decoded query name (or cookie name) `key`
/// as `name`: itself; in another case (ASP.NET Core's query and cookie
/// collections ignore it); or the name PHP makes of it (`$_GET`,
/// `$_COOKIE`: `session.id` is `session_id`; Symfony, Laravel), which also
/// ends at a NUL byte.
pub(super) fn reads_as(key: &str, name: &str) -> bool {
    let key = key.split('\0').next().unwrap_or(key);
    key.eq_ignore_ascii_case(name)
        || (key.contains([' ', '.', '[']) && super::canonical::as_php_reads_it(key).eq_ignore_ascii_case(name))
}

/// A query pair's name, decoded as a server would read it.
fn query_key(pair: &str) -> String {
    form_urlencoded::parse(pair.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// One credential from repeated occurrences, each read by `parse`: the
/// same value any number of times is one; two different values are refused.
fn one<S: AsRef<str>>(
    values: impl Iterator<Item = S>,
    parse: impl Fn(&str) -> Credential,
) -> Result<Credential, CredentialProblem> {
    let mut out = Credential::Missing;
    for v in values {
        let c = parse(v.as_ref());
        match (&out, &c) {
            (_, Credential::Malformed(why)) => return Err(*why),
            (Credential::Missing, _) => out = c,
            (earlier, now) if earlier != now => return Err(CredentialProblem::TwoCredentials),
            _ => {}
        }
    }
    Ok(out)
}

/// The `cookie` header without cookie `name`, for the upstream when the
/// credential is stripped; `None` when nothing else is left.
pub fn cookie_without(header: &str, name: &str) -> Option<String> {
    // Split exactly as `cookies` does (',' never occurs in a cookie value,
    // RFC 6265), or a comma-joined copy of the credential would survive.
    let kept: Vec<&str> = header
        .split([';', ','])
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && !reads_as(pair.split_once('=').map_or(*pair, |(k, _)| k).trim(), name))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)], query: &str, authorization: Option<&str>) -> AuthzRequest {
        AuthzRequest {
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            query: query.into(),
            credential: parse_authorization(authorization),
            ..Default::default()
        }
    }

    fn sources(list: &[&str]) -> Vec<TokenSource> {
        list.iter().map(|s| TokenSource::parse(s).expect("source")).collect()
    }

    fn token(r: Result<Option<Found>, CredentialProblem>) -> Result<Option<(String, String)>, CredentialProblem> {
        r.map(|f| f.map(|f| (f.token.expose().to_owned(), f.source.to_string())))
    }

    #[test]
    fn a_token_header_with_too_many_spellings_is_refused() {
        assert!(TokenSource::parse("header:x-a-b-c-d-e-f").is_ok());
        assert!(TokenSource::parse("header:x-a-b-c-d-e-f-g").is_err());
        assert!(TokenSource::parse("header:x_a-b-c-d-e-f-g").is_err());
    }

    #[test]
    fn parse_and_print_sources() {
        for s in ["header", "header:x-api-token", "cookie:session", "query:access_token"] {
            assert_eq!(TokenSource::parse(s).expect(s).to_string(), s);
        }
        assert_eq!(
            TokenSource::parse("header:authorization"),
            Ok(TokenSource::Authorization)
        );
        for bad in [
            "",
            "cookie",
            "cookie:",
            "body:x",
            "header:X-Token",
            "cookie:a b",
            "query:a;b",
        ] {
            assert!(TokenSource::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cookie_among_several() {
        let r = req(&[("cookie", "theme=dark; session=t0k; lang=en")], "", None);
        assert_eq!(
            token(find(&r, &sources(&["header", "cookie:session"]))),
            Ok(Some(("t0k".into(), "cookie:session".into())))
        );
        let r = req(&[("cookie", "session=a; session=b")], "", None);
        assert!(find(&r, &sources(&["cookie:session"])).is_err(), "two session cookies");
        let r = req(&[("cookie", "session=a; session=a")], "", None);
        assert!(find(&r, &sources(&["cookie:session"])).is_ok(), "the same one twice");
        let r = req(&[("cookie", "session=bad token")], "", None);
        assert!(find(&r, &sources(&["cookie:session"])).is_err(), "not a b64token");
        // PHP reads `session.id` (and `session id`, `session[id`) as
        // `session_id`, the first one winning: another value under such a
        // spelling is a second credential, and stripping drops every copy.
        for spelling in ["session.id", "session id", "session[id"] {
            let header = format!("{spelling}=forged; session_id=t0k");
            let r = req(&[("cookie", &header)], "", None);
            assert_eq!(
                token(find(&r, &sources(&["cookie:session_id"]))),
                Err(CredentialProblem::TwoCredentials),
                "{spelling}"
            );
            assert_eq!(
                cookie_without(&format!("{header}; a=1"), "session_id").as_deref(),
                Some("a=1")
            );
        }
        let r = req(&[("cookie", "Session_Id=other; session_id=t0k")], "", None);
        assert_eq!(
            token(find(&r, &sources(&["cookie:session_id"]))),
            Err(CredentialProblem::TwoCredentials),
            "ASP.NET Core reads cookie names in any case"
        );
        assert_eq!(
            cookie_without("Session_Id=x; a=1", "session_id").as_deref(),
            Some("a=1")
        );
    }

    #[test]
    fn order_and_conflicts() {
        let r = req(&[("x-api-token", "h1")], "access_token=q1", Some("Bearer h1"));
        assert_eq!(
            token(find(&r, &sources(&["header", "header:x-api-token"]))),
            Ok(Some(("h1".into(), "header".into()))),
            "the same token twice is one credential"
        );
        assert_eq!(
            find(&r, &sources(&["header", "header:x-api-token"])).map(|f| f.map(|f| f.also)),
            Ok(Some(vec![TokenSource::Header("x-api-token".into())])),
            "the second copy is remembered, to be stripped too"
        );
        assert!(
            find(&r, &sources(&["header", "query:access_token"])).is_err(),
            "two different credentials: 400"
        );
        assert_eq!(
            token(find(&r, &sources(&["query:access_token"]))),
            Ok(Some(("q1".into(), "query:access_token".into())))
        );
        let none = req(&[], "", None);
        assert_eq!(
            token(find(&none, &sources(&["header", "cookie:s", "query:t"]))),
            Ok(None)
        );
        let bearer = req(&[("x-api-token", "Bearer b1")], "", None);
        assert_eq!(
            token(find(&bearer, &sources(&["header:x-api-token"]))),
            Ok(Some(("b1".into(), "header:x-api-token".into())))
        );
    }

    /// A header a rule reads its token from that is not text could hide a
    /// second credential (that would then also reach the upstream): 400,
    /// never "no token here".
    #[test]
    fn a_token_source_that_is_not_text_is_refused() {
        let raw = |name: &'static [u8], value: &'static [u8]| AuthzRequest {
            headers: crate::extract::headers::Headers::from_entries([(name, value)]),
            credential: parse_authorization(Some("Bearer a")),
            ..Default::default()
        };
        let both = sources(&["header", "header:x-api-token", "cookie:session"]);
        for (name, value) in [
            (&b"x-api-token"[..], &b"b\xff"[..]),
            (b"cookie", b"session=b; x=caf\xe9"),
        ] {
            assert_eq!(
                token(find(&raw(name, value), &both)),
                Err(CredentialProblem::NotText),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
        // A header no rule reads may be anything.
        assert_eq!(
            token(find(&raw(b"x-other", b"\xff"), &both)),
            Ok(Some(("a".into(), "header".into())))
        );
    }

    #[test]
    fn cookie_header_without_the_credential() {
        assert_eq!(
            cookie_without("a=1; session=t; b=2", "session").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(cookie_without("session=t", "session"), None);
    }

    /// Found in review: slicing a client's header at byte 7 panicked on a
    /// multi-byte character; a percent-encoded query name and a
    /// comma-joined cookie escaped stripping.
    #[test]
    fn hostile_spellings() {
        let r = req(&[("x-api-token", "abcdef\u{e9}")], "", None);
        assert!(
            find(&r, &sources(&["header:x-api-token"])).is_err(),
            "refused, not a panic"
        );
        let r = req(&[("x-api-token", "b\u{e9}arer x")], "", None);
        assert!(find(&r, &sources(&["header:x-api-token"])).is_err());
        let r = req(&[], "access%5Ftoken=t0k", None);
        assert_eq!(
            token(find(&r, &sources(&["query:access_token"]))),
            Err(CredentialProblem::EncodedQueryName)
        );
        assert_eq!(
            cookie_without("a=1,session=t; b=2", "session").as_deref(),
            Some("a=1; b=2")
        );
    }

    /// Other spellings of a token's place that an upstream reads as the
    /// same one: each is found (and so verified, and stripped) or refused,
    /// never passed over as "no token".
    #[test]
    fn every_spelling_an_upstream_reads_is_found_or_refused() {
        // `session =x` is cookie `session` to most parsers.
        let r = req(&[("cookie", "a=1; session =t0k")], "", None);
        assert_eq!(
            token(find(&r, &sources(&["cookie:session"]))),
            Ok(Some(("t0k".into(), "cookie:session".into())))
        );
        let r = req(&[("cookie", "session=good; session =evil")], "", None);
        assert_eq!(
            token(find(&r, &sources(&["cookie:session"]))),
            Err(CredentialProblem::TwoCredentials)
        );
        assert_eq!(cookie_without("session =x; a=1", "session").as_deref(), Some("a=1"));
        // `x_api_token` is `x-api-token` to CGI, WSGI and PHP.
        let r = req(&[("x_api_token", "evil")], "", None);
        assert_eq!(
            token(find(&r, &sources(&["header:x-api-token"]))),
            Ok(Some(("evil".into(), "header:x-api-token".into())))
        );
        let r = req(&[("x-api-token", "good"), ("x_api-token", "evil")], "", None);
        assert_eq!(
            token(find(&r, &sources(&["header:x-api-token"]))),
            Err(CredentialProblem::TwoCredentials)
        );
        let r = req(&[("x-api-token", "same"), ("x_api_token", "Bearer same")], "", None);
        assert_eq!(
            token(find(&r, &sources(&["header:x-api-token"]))),
            Ok(Some(("same".into(), "header:x-api-token".into())))
        );
        // `;` separates query pairs to Rack 2 and older Python servers.
        for q in ["x=1;access_token=evil", "access_token=good&x=1;access_token=evil"] {
            let r = req(&[], q, None);
            assert_eq!(
                token(find(&r, &sources(&["query:access_token"]))),
                Err(CredentialProblem::SemicolonQuery),
                "{q}"
            );
        }
        let r = req(&[], "x=a;b&access_token=t0k", None);
        assert_eq!(
            token(find(&r, &sources(&["query:access_token"]))),
            Ok(Some(("t0k".into(), "query:access_token".into())))
        );
        assert!(crate::extract::query_has_access_token("/date?x=1;access_token=evil"));
        // PHP (`$_GET`) reads these as `access_token`: the last one wins
        // there, and Envoy's query_parameters_to_remove would not strip it.
        for spelt in [
            "access.token",
            "access+token",
            "access%20token",
            "+access_token",
            "access_token[]",
            "access[token",
            "access_token%00",
            "access_token%00x",
            "ACCESS_TOKEN",
            "Access.Token",
        ] {
            let q = format!("access_token=good&{spelt}=evil");
            let r = req(&[], &q, None);
            assert_eq!(
                token(find(&r, &sources(&["query:access_token"]))),
                Err(CredentialProblem::EncodedQueryName),
                "{q}"
            );
            assert!(
                crate::extract::query_has_access_token(&format!("/date?{spelt}=evil")),
                "{spelt}"
            );
        }
        assert!(!crate::extract::query_has_access_token(
            "/date?access.tokens=x&access_token_x=y"
        ));
    }
}
