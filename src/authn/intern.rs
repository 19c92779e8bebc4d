//! Shared claim strings. Most cached identities repeat the same few values
//! (one issuer, `access_token`, a handful of client ids and scope sets), so
//! each distinct value is stored once and identities hold `Arc`s to it: a
//! cached token costs ~150 bytes instead of ~380.
//!
//! Bounded: past `CAPACITY` distinct values new ones are still returned, just
//! not remembered, so high-cardinality claims (per-user subjects) cannot grow
//! the table without limit.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

const CAPACITY: usize = 16_384;

/// Longer strings, and lists of more items, are returned unshared: kept for
/// the process's life, 16,384 values of 64 KiB each (a subject a caller
/// chose) would hold a gigabyte. Claim values worth sharing are short.
const LONGEST_SHARED: usize = 256;
const MOST_ITEMS_SHARED: usize = 64;

type Table<T> = LazyLock<RwLock<HashSet<Arc<T>>>>;

static STRINGS: Table<str> = LazyLock::new(RwLock::default);
static LISTS: Table<[Arc<str>]> = LazyLock::new(RwLock::default);

fn intern_in<T: ?Sized + Eq + std::hash::Hash>(
    table: &RwLock<HashSet<Arc<T>>>,
    value: &T,
    make: impl FnOnce() -> Arc<T>,
) -> Arc<T> {
    if let Some(found) = table.read().unwrap_or_else(PoisonError::into_inner).get(value) {
        return found.clone();
    }
    let mut set = table.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = set.get(value) {
        return found.clone();
    }
    let fresh = make();
    if set.len() < CAPACITY {
        set.insert(fresh.clone());
    }
    fresh
}

/// The shared copy of `s`.
pub fn string(s: &str) -> Arc<str> {
    if s.len() > LONGEST_SHARED {
        return Arc::from(s);
    }
    intern_in(&STRINGS, s, || Arc::from(s))
}

/// The shared copy of `s`, or `None` when it is absent or empty (an empty
/// `client_id` or `sub` names nobody).
pub fn non_empty(s: Option<&str>) -> Option<Arc<str>> {
    s.filter(|s| !s.is_empty()).map(string)
}

/// The shared copy of a list of strings (scopes, audiences), each shared too.
pub fn list<S: AsRef<str>>(list: &[S]) -> Arc<[Arc<str>]> {
    let owned: Vec<Arc<str>> = list.iter().map(|s| string(s.as_ref())).collect();
    if owned.len() > MOST_ITEMS_SHARED {
        return Arc::from(owned);
    }
    intern_in(&LISTS, &owned[..], || Arc::from(owned.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_not_kept() {
        let long = "s".repeat(LONGEST_SHARED + 1);
        let a = string(&long);
        assert!(!Arc::ptr_eq(&a, &string(&long)), "a long value was kept");
        let short = "a-short-claim-value-for-this-test";
        assert!(Arc::ptr_eq(&string(short), &string(short)));
        let many: Vec<String> = (0..=MOST_ITEMS_SHARED).map(|i| format!("scope-{i}")).collect();
        assert!(!Arc::ptr_eq(&list(&many), &list(&many)), "a long list was kept");
        assert!(STRINGS
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(long.as_str())
            .is_none());
    }

    #[test]
    fn equal_values_share_one_allocation() {
        let (a, b) = (string("http://hydra.example"), string("http://hydra.example"));
        assert!(Arc::ptr_eq(&a, &b));
        let (x, y) = (list(&["read_date", "post_echo"]), list(&["read_date", "post_echo"]));
        assert!(Arc::ptr_eq(&x, &y));
        assert_eq!(&*x[0], "read_date");
        assert!(!Arc::ptr_eq(&x, &list(&["post_echo", "read_date"])), "order is kept");
    }
}
