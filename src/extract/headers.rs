//! A request's headers as a front door hands them over: lower-case names,
//! repeats joined (as Envoy sends them). A list, not a hash map: a check
//! reads two or three names among a dozen or so, and hashing every header
//! on arrival cost more than all the reads together.

use std::fmt;
use std::ops::Range;

/// The most `-`/`_` a header name may have for all its spellings to be
/// listed (2^n of them): the bound for names we set, read a token from, or
/// remove every spelling of (`respond::header_twins`).
pub const MAX_SPELLED_SEPARATORS: usize = 6;

/// How many `-` and `_` `name` has: its spellings are 2^this.
pub fn separators(name: &str) -> usize {
    name.bytes().filter(|b| matches!(b, b'-' | b'_')).count()
}

/// Whether header name `name` (lower-case, as received) is `wanted` in one
/// of its spellings: the same letters and digits, any other byte where
/// `wanted` has one. CGI, WSGI and PHP upstreams read `x_api_token` as
/// `x-api-token`; PHP's variable registration turns `.` and ` ` into `_`
/// as well (`X.Api.Token` is `$_SERVER['HTTP_X_API_TOKEN']` behind Caddy's
/// `php_fastcgi` or FrankenPHP), and lighttpd's CGI/FastCGI/SCGI encoding
/// turns every byte that is not a letter or digit into `_`
/// (`X+Api+Token`). All are one header to them.
pub(crate) fn same_name_any_separator(name: &[u8], wanted: &[u8]) -> bool {
    let separator = |c: &u8| !c.is_ascii_alphanumeric();
    name.len() == wanted.len()
        && name
            .iter()
            .zip(wanted)
            .all(|(a, b)| a == b || (separator(a) && separator(b)))
}

/// Forwarded facts and request-URI headers frameworks trust from their
/// proxy: the kits set or clear these by name, so a spelling with another
/// separator (`X.Forwarded.Host`) would pass every kit and reach a PHP or
/// lighttpd upstream as the real one ([`Headers::respells`]).
pub const TRUSTED_BY_FRAMEWORKS: &[&str] = &[
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-for",
    "x-forwarded-ssl",
    "x-forwarded-scheme",
    "x-forwarded-uri",
    "x-forwarded-method",
    "x-original-url",
    "x-original-uri",
    "x-original-method",
    "x-rewrite-url",
    "x-real-ip",
    "front-end-https",
    "x-url-scheme",
];

/// Header names no request may spell with another separator (see
/// [`Headers::respells`]), with their lengths as a bit set: a request's
/// name of no guarded length (nearly all) costs one bit test.
#[derive(Debug, Clone, Default)]
pub struct Guarded {
    names: Box<[Box<[u8]>]>,
    /// Bit n: some name is n bytes long; bit 127 stands for every length
    /// from 127 on.
    lengths: u128,
}

impl Guarded {
    pub fn new<N: AsRef<str>>(names: &[N]) -> Guarded {
        let names: Box<[Box<[u8]>]> = names
            .iter()
            .map(|n| n.as_ref().to_ascii_lowercase().into_bytes().into_boxed_slice())
            .collect();
        let lengths = names.iter().fold(0u128, |set, n| set | Guarded::bit(n.len()));
        Guarded { names, lengths }
    }

    fn bit(len: usize) -> u128 {
        1u128 << len.min(127)
    }

    /// `name` is a guarded name in another spelling: the same letters and
    /// digits, and some separator other than `-`/`_`. The guarded spelling
    /// itself is the header (a `token_from` header may have a '.').
    fn respelled_by(&self, name: &[u8]) -> bool {
        self.lengths & Guarded::bit(name.len()) != 0
            && self
                .names
                .iter()
                .any(|n| name != &n[..] && same_name_any_separator(name, n))
            && name
                .iter()
                .any(|c| !(c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_'))
    }
}

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    /// Every name and value, back to back, owned: one allocation, not
    /// slices of the received gRPC frame, which would keep all of it (up to
    /// the message limit, a body included) alive while the check waits for
    /// Hydra.
    bytes: Vec<u8>,
    /// (name, value) as ranges of `bytes`, in the order received.
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl Headers {
    /// From name/value pairs as received (names lower-case); the bytes are
    /// copied once.
    pub fn from_entries<'a, I>(pairs: I) -> Headers
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
        I::IntoIter: Clone,
    {
        let pairs = pairs.into_iter();
        let (count, size) = super::header_extent(pairs.clone());
        let mut h = Headers {
            bytes: Vec::with_capacity(size),
            entries: Vec::with_capacity(count),
        };
        for (k, v) in pairs {
            h.push(k, v);
        }
        h
    }

    /// From header lines (names lower-case) with the repeats of a name
    /// joined into one entry, in the order names first appear: values with
    /// ',', cookies with "; " (RFC 6265; cookie parsing also splits at the
    /// ',' Envoy's own `headers` map uses). Two `Authorization` lines thus
    /// stay two credentials. Past [`super::MAX_HEADERS`] lines or
    /// [`super::MAX_HEADER_BYTES`] the request is refused anyway and nothing
    /// is joined (no quadratic work).
    pub fn joining<'a, I>(lines: I) -> Headers
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
        I::IntoIter: Clone,
    {
        let lines = lines.into_iter();
        if super::header_limits(lines.clone()).is_some() {
            return Headers::from_entries(lines);
        }
        let mut joined: Vec<(&[u8], Vec<u8>)> = Vec::with_capacity(lines.size_hint().0);
        for (name, value) in lines {
            match joined.iter_mut().find(|(k, _)| *k == name) {
                Some((_, earlier)) => {
                    earlier.extend_from_slice(if name == b"cookie" { b"; " } else { b"," });
                    earlier.extend_from_slice(value);
                }
                None => joined.push((name, value.to_vec())),
            }
        }
        Headers::from_entries(joined.iter().map(|(k, v)| (*k, &v[..])))
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(name);
        let middle = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.entries.push((start..middle, middle..self.bytes.len()));
    }

    /// The value of `name` (lower-case) when it is text. A value that is
    /// not UTF-8 is absent here; where a credential may hide in it, the
    /// caller asks [`Headers::raw`] and refuses it. Of two entries with one
    /// name (Envoy never sends them; a protobuf map keeps the last), the
    /// last wins.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.raw(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `name` as bytes; the last entry wins, as in [`Headers::get`].
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        self.entries()
            .rev()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, text or not, in order.
    pub fn entries(&self) -> impl DoubleEndedIterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|(k, v)| (&self.bytes[k.clone()], &self.bytes[v.clone()]))
    }

    /// Whether a header name is one of `guarded` spelled with a separator
    /// other than `-` or `_`: `x.client.id` or `x+client+id` for
    /// `x-client-id`. Proxies remove (or we overwrite) the names we set and
    /// their `_` spellings, but none knows the others, which PHP and
    /// lighttpd upstreams read as the same header
    /// ([`same_name_any_separator`]).
    pub fn respells(&self, guarded: &Guarded) -> bool {
        self.entries().any(|(name, _)| guarded.respelled_by(name))
    }

    /// Every entry whose name and value are text.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries()
            .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Headers {
        let mut h = Headers::default();
        for (k, v) in pairs {
            h.push(k.as_ref().as_bytes(), v.as_ref().as_bytes());
        }
        h
    }
}

/// Names and value sizes only: a value may be a credential.
impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.entries()
                    .map(|(k, v)| (String::from_utf8_lossy(k), format!("<{} bytes>", v.len()))),
            )
            .finish()
    }
}

/// The client's trace context (W3C `traceparent`, B3) for our span's parent.
impl opentelemetry::propagation::Extractor for Headers {
    fn get(&self, key: &str) -> Option<&str> {
        Headers::get(self, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.iter().map(|(k, _)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Another separator than '-'/'_' in a guarded name is caught; the
    /// guarded spelling itself (a token header named with a '.') and names
    /// of another length or other letters are not.
    #[test]
    fn respellings_of_guarded_names() {
        let guarded = Guarded::new(&["x-client-id", "x.api.token"]);
        let has = |name: &str| Headers::from_entries([(name.as_bytes(), &b"v"[..])]).respells(&guarded);
        for name in [
            "x.client.id",
            "x+client+id",
            "x client id",
            "x-client~id",
            "x-api-token.",
            "x+api+token",
        ] {
            let expected = name.len() == 11;
            assert_eq!(has(name), expected, "{name}");
        }
        for name in [
            "x-client-id",
            "x_client_id",
            "x.api.token",
            "x-api-token",
            "x.client.idx",
            "y.client.id",
        ] {
            assert!(!has(name), "{name}");
        }
    }

    #[test]
    fn the_last_entry_wins_and_non_text_values_are_absent() {
        let h = Headers::from_entries([(&b"x-a"[..], &b"1"[..]), (b"x-b", b"\xff"), (b"x-a", b"2"), (b"", b"")]);
        assert_eq!(h.get("x-a"), Some("2"));
        assert_eq!(h.get("x-b"), None);
        assert_eq!(h.raw("x-b"), Some(&b"\xff"[..]));
        assert_eq!(h.get("X-A"), None, "names are compared as sent: lower-case");
        assert_eq!(h.get(""), Some(""), "an empty name is a name like any other");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("x-a", "1"), ("x-a", "2"), ("", "")]);
        assert_eq!((h.len(), h.entries().count()), (4, 4));
    }

    #[test]
    fn debug_shows_no_value() {
        let h: Headers = [("authorization", "Bearer s3cr3t")].into_iter().collect();
        let shown = format!("{h:?}");
        assert!(!shown.contains("s3cr3t") && shown.contains("authorization"), "{shown}");
    }

    #[test]
    fn trace_context_is_read_through_the_same_lookup() {
        use opentelemetry::propagation::Extractor;
        let h: Headers = [("traceparent", "00-ab-cd-01")].into_iter().collect();
        assert_eq!(Extractor::get(&h, "traceparent"), Some("00-ab-cd-01"));
        assert_eq!(h.keys(), ["traceparent"]);
    }
}
