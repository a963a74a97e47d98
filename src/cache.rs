//! The small time-bounded caches calattach keeps per process (identities, calendar
//! look-ups), keyed by a hash of the caller's credentials so that no credential is kept
//! and one caller's entry is never served to another.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::HeaderValue;
use sha2::{Digest, Sha256};

/// Entries live for `ttl`; at most `size` of them are kept (when full, expired entries
/// go, and if all are fresh, all go: the cache never grows past its bound).
pub struct TtlCache<K, V> {
    ttl: Duration,
    size: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration, size: usize) -> Self {
        TtlCache {
            ttl,
            size,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// A fresh entry for `key`.
    pub fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().ok()?;
        let (at, v) = entries.get(key)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    /// Entries kept now, fresh or not.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn put(&self, key: K, value: V) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.size {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.size {
                // Still full of fresh entries: drop everything rather than grow.
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

/// SHA-256 of an `Authorization` value under a key drawn at start: equal credentials
/// give equal hashes within one process, and nothing about them can be read back.
pub struct CredentialHash {
    key: [u8; 32],
}

impl Default for CredentialHash {
    fn default() -> Self {
        CredentialHash {
            key: rand::random(),
        }
    }
}

impl CredentialHash {
    /// The hash of `authorization` (anonymous callers share one).
    pub fn of(&self, authorization: Option<&HeaderValue>) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        if let Some(a) = authorization {
            h.update(a.as_bytes());
        }
        h.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_size_is_bounded() {
        let c = TtlCache::new(Duration::from_millis(50), 2);
        c.put(1, "a");
        assert_eq!(c.get(&1), Some("a"));
        c.put(2, "b");
        c.put(3, "c"); // full of fresh entries: cleared, then 3 inserted
        assert_eq!(c.get(&1), None);
        assert_eq!(c.get(&3), Some("c"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&3), None);
    }

    #[test]
    fn credential_hashes_differ_by_credentials_and_by_process_key() {
        let a = CredentialHash::default();
        let b = CredentialHash::default();
        let x = HeaderValue::from_static("Basic eDp5");
        let y = HeaderValue::from_static("Basic eDp6");
        assert_eq!(a.of(Some(&x)), a.of(Some(&x)));
        assert_ne!(a.of(Some(&x)), a.of(Some(&y)));
        assert_ne!(a.of(Some(&x)), b.of(Some(&x)));
    }
}
