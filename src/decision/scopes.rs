//! Scope matching strategies, with the semantics Ory Oathkeeper (and fosite)
//! give them, so rules written for Oathkeeper mean the same here.

use serde::{Deserialize, Serialize};

/// An RFC 6749 §3.3 scope-token: visible ASCII but `"` and `\\`, no space.
/// Required scopes (rules, route metadata) must be one: they are quoted in
/// the `WWW-Authenticate` challenge.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeStrategy {
    /// A granted scope satisfies only the identical required scope.
    #[default]
    Exact,
    /// Granted `a` satisfies `a`, `a.b`, `a.b.c` (a parent grants its children).
    Hierarchic,
    /// Granted `a.*` satisfies `a.b` and `a.b.c`; `*` matches one non-empty
    /// segment, and a trailing `*` also matches any deeper path.
    Wildcard,
}

impl ScopeStrategy {
    /// Does any of `granted` satisfy `required`?
    pub fn grants<S: AsRef<str>>(self, granted: &[S], required: &str) -> bool {
        granted.iter().any(|g| {
            let g = g.as_ref();
            match self {
                ScopeStrategy::Exact => g == required,
                ScopeStrategy::Hierarchic => hierarchic(g, required),
                ScopeStrategy::Wildcard => wildcard(g, required),
            }
        })
    }

    /// The required scopes that `granted` does not satisfy, in order.
    pub fn missing<'r, S: AsRef<str>>(self, granted: &[S], required: &'r [String]) -> Vec<&'r str> {
        required
            .iter()
            .map(String::as_str)
            .filter(|r| !self.grants(granted, r))
            .collect()
    }

    /// What a route needs that `granted` lacks: all of `required`, and one
    /// full set of `any_of` when alternatives are given (OpenAPI-style).
    /// `None` when granted; otherwise the scopes the RFC 6750 challenge
    /// names (the required ones plus the first alternative, as a client
    /// can only be told one way to succeed).
    pub fn unmet<S: AsRef<str>>(self, granted: &[S], required: &[String], any_of: &[Vec<String>]) -> Option<Unmet> {
        let mut missing: Vec<String> = self.missing(granted, required).into_iter().map(str::to_owned).collect();
        let alternative_ok = any_of.is_empty() || any_of.iter().any(|set| self.missing(granted, set).is_empty());
        if !alternative_ok {
            missing.extend(any_of[0].iter().cloned());
        }
        if missing.is_empty() {
            return None;
        }
        let mut needed = required.to_vec();
        if !alternative_ok {
            needed.extend(any_of[0].iter().cloned());
        }
        Some(Unmet {
            missing,
            needed,
            no_alternative: !alternative_ok,
        })
    }
}

/// Why a token's scopes fall short; see [`ScopeStrategy::unmet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unmet {
    /// The scopes not granted.
    pub missing: Vec<String>,
    /// What the route needs, for the challenge's `scope` attribute.
    pub needed: Vec<String>,
    /// None of the alternative sets was granted in full.
    pub no_alternative: bool,
}

fn hierarchic(granted: &str, required: &str) -> bool {
    granted == required
        || (required.len() > granted.len()
            && required.starts_with(granted)
            && required.as_bytes()[granted.len()] == b'.')
}

fn wildcard(granted: &str, required: &str) -> bool {
    let g: Vec<&str> = granted.split('.').collect();
    let r: Vec<&str> = required.split('.').collect();
    if g.len() > r.len() {
        return false;
    }
    let last = g.len() - 1;
    for (i, part) in g.iter().enumerate() {
        // A trailing `*` with a longer required scope covers the whole rest.
        if i == last && g.len() != r.len() {
            return *part == "*" && !r[i].is_empty();
        }
        let ok = if *part == "*" { !r[i].is_empty() } else { *part == r[i] };
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::ScopeStrategy::*;

    #[test]
    fn exact() {
        assert!(Exact.grants(&["read_date"], "read_date"));
        assert!(!Exact.grants(&["read_date"], "read_date.x"));
        assert!(!Exact.grants(&["read"], "read_date"));
        assert!(!Exact.grants::<&str>(&[], "read_date"));
    }

    #[test]
    fn hierarchic() {
        assert!(Hierarchic.grants(&["photos"], "photos"));
        assert!(Hierarchic.grants(&["photos"], "photos.read"));
        assert!(Hierarchic.grants(&["photos"], "photos.read.thumbs"));
        assert!(!Hierarchic.grants(&["photos.read"], "photos"));
        assert!(!Hierarchic.grants(&["photo"], "photos.read"));
        assert!(!Hierarchic.grants(&["photos"], "photosx"));
    }

    #[test]
    fn wildcard() {
        assert!(Wildcard.grants(&["photos.*"], "photos.read"));
        assert!(Wildcard.grants(&["photos.*"], "photos.read.thumbs"));
        assert!(Wildcard.grants(&["*.read"], "photos.read"));
        assert!(Wildcard.grants(&["photos.read"], "photos.read"));
        assert!(!Wildcard.grants(&["photos.*"], "photos"));
        assert!(!Wildcard.grants(&["photos.*"], "photos."));
        assert!(!Wildcard.grants(&["*.read"], "photos.write"));
        assert!(!Wildcard.grants(&["photos.read.x"], "photos.read"));
    }

    #[test]
    fn missing_lists_unsatisfied_in_order() {
        let req = vec!["a".to_string(), "b".to_string(), "c".to_string()];
        assert_eq!(Exact.missing(&["b"], &req), vec!["a", "c"]);
        assert!(Exact.missing(&["a", "b", "c"], &req).is_empty());
    }
}
