//! A request's headers as a front door hands them over: lower-case names,
//! repeats joined (as Envoy sends them). A list, not a hash map: a check
//! reads two or three names among a dozen or so, and hashing every header
//! on arrival cost more than all the reads together.

use prost::bytes::Bytes;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Bytes, Bytes)>);

impl Headers {
    /// Entries as received, names lower-case, in order.
    pub fn from_entries(entries: Vec<(Bytes, Bytes)>) -> Headers {
        Headers(entries)
    }

    /// The value of `name` (lower-case) when it is text. A value that is not
    /// UTF-8 is no header we act on, as at the HTTP front door; the
    /// `authorization` header tells the two apart ([`Headers::raw`]). Of two
    /// entries with one name (Envoy never sends them; a protobuf map keeps
    /// the last), the last wins.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.raw(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `name` as bytes; the last entry wins, as in [`Headers::get`].
    pub fn raw(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.as_ref() == name.as_bytes())
            .map(|(_, v)| v.as_ref())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every entry, text or not (for the size limits).
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }

    /// Every entry whose name and value are text.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries()
            .filter_map(|(k, v)| Some((std::str::from_utf8(k).ok()?, std::str::from_utf8(v).ok()?)))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Headers {
        Headers(
            pairs
                .into_iter()
                .map(|(k, v)| (Bytes::from(k.into()), Bytes::from(v.into())))
                .collect(),
        )
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

    #[test]
    fn the_last_entry_wins_and_non_text_values_are_absent() {
        let h = Headers::from_entries(vec![
            (Bytes::from_static(b"x-a"), Bytes::from_static(b"1")),
            (Bytes::from_static(b"x-b"), Bytes::from_static(b"\xff")),
            (Bytes::from_static(b"x-a"), Bytes::from_static(b"2")),
        ]);
        assert_eq!(h.get("x-a"), Some("2"));
        assert_eq!(h.get("x-b"), None);
        assert_eq!(h.raw("x-b"), Some(&b"\xff"[..]));
        assert_eq!(h.get("X-A"), None, "names are compared as sent: lower-case");
        assert_eq!(h.iter().collect::<Vec<_>>(), [("x-a", "1"), ("x-a", "2")]);
        assert_eq!((h.len(), h.entries().count()), (3, 3));
    }

    #[test]
    fn trace_context_is_read_through_the_same_lookup() {
        use opentelemetry::propagation::Extractor;
        let h: Headers = [("traceparent", "00-ab-cd-01")].into_iter().collect();
        assert_eq!(Extractor::get(&h, "traceparent"), Some("00-ab-cd-01"));
        assert_eq!(h.keys(), ["traceparent"]);
    }
}
