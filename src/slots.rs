//! Upload slots: at most `attachments.max_concurrent_uploads` attachment uploads at
//! once, and of those at most `attachments.max_concurrent_uploads_per_user` by one user,
//! so one user's slow or stalled uploads cannot take every slot (RFC 8607 §7, denial of
//! service). Over either bound the POST gets `503` with `Retry-After` before its body is
//! read.
//!
//! A user is the Basic user name; a caller with other credentials (a bearer token) is
//! keyed by a hash of them under a key drawn at start, so no credential is kept;
//! anonymous callers share one key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use crate::upstream::caller::Caller;

/// Shared by every worker thread.
pub struct UploadSlots {
    global: Arc<Semaphore>,
    total: usize,
    share: usize,
    /// Uploads in progress per user key; entries at zero are removed.
    users: Mutex<HashMap<String, usize>>,
    /// Keys the hash of credentials without a user name.
    secret: [u8; 32],
}

/// One upload in progress: its global permit and its user's count, released on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<UploadSlots>,
    user: String,
}

// === impl UploadSlots ===

impl UploadSlots {
    pub fn new(total: usize, share: usize) -> UploadSlots {
        UploadSlots {
            global: Arc::new(Semaphore::new(total)),
            total,
            share: share.clamp(1, total.max(1)),
            users: Mutex::new(HashMap::new()),
            secret: rand::random(),
        }
    }

    /// A slot for `caller`'s upload, or `Error::Busy` when the caller's share or all
    /// slots are taken.
    pub fn acquire(self: &Arc<Self>, caller: &Caller) -> Result<Slot, Error> {
        let user = self.key(caller);
        {
            let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
            let n = users.entry(user.clone()).or_insert(0);
            if *n >= self.share {
                return Err(Error::Busy(format!(
                    "{} uploads of this user in progress \
                     (attachments.max_concurrent_uploads_per_user)",
                    self.share
                )));
            }
            *n += 1;
        }
        // From here the user's count is released by `Slot`'s drop, or right below.
        match self.global.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot {
                _permit: permit,
                slots: self.clone(),
                user,
            }),
            Err(_) => {
                self.release(&user);
                Err(Error::Busy(format!(
                    "{} uploads in progress (attachments.max_concurrent_uploads)",
                    self.total
                )))
            }
        }
    }

    fn key(&self, caller: &Caller) -> String {
        match (&caller.user, caller.authorization()) {
            (Some(user), _) => format!("u:{user}"),
            (None, Some(auth)) => {
                let mut h = Sha256::new();
                h.update(self.secret);
                h.update(auth.as_bytes());
                let digest = h.finalize();
                let mut key = String::with_capacity(2 + 32);
                key.push_str("h:");
                for b in &digest[..16] {
                    key.push_str(&format!("{b:02x}"));
                }
                key
            }
            (None, None) => String::new(),
        }
    }

    fn release(&self, user: &str) {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = users.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                users.remove(user);
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.release(&self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{header, HeaderMap, HeaderValue};

    fn caller(auth: &str) -> Caller {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        Caller::from_headers(&h).unwrap()
    }

    #[test]
    fn one_user_gets_its_share_and_others_the_rest() {
        let slots = Arc::new(UploadSlots::new(4, 2));
        let a = caller("Basic dXNlcjE6cHc="); // user1:pw
        let b = caller("Basic dXNlcjI6cHc="); // user2:pw
        let a1 = slots.acquire(&a).unwrap();
        let _a2 = slots.acquire(&a).unwrap();
        assert!(matches!(slots.acquire(&a), Err(Error::Busy(_))));
        let _b1 = slots.acquire(&b).unwrap();
        drop(a1);
        let _a3 = slots.acquire(&a).unwrap();
        let _b2 = slots.acquire(&b).unwrap();
        // Every slot taken: even a user under its share waits.
        let c = caller("Bearer token-c");
        assert!(matches!(slots.acquire(&c), Err(Error::Busy(_))));
        assert_eq!(
            slots.users.lock().unwrap().len(),
            2,
            "refused users leave no entry"
        );
    }

    #[test]
    fn bearer_tokens_are_told_apart_without_keeping_them() {
        let slots = UploadSlots::new(4, 1);
        let k1 = slots.key(&caller("Bearer one"));
        let k2 = slots.key(&caller("Bearer two"));
        assert_ne!(k1, k2);
        assert!(!k1.contains("one"));
    }
}
