//! Per-key exclusion for async read-modify-write inside an actor.
//!
//! Async handlers interleave, so two requests for the same record could each read, write and
//! apply out of order. Holding a key's lock from read to apply keeps one record's changes in
//! order while every other key proceeds: there is no global serialization point.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

pub struct KeyedLocks<K: Eq + Hash + Clone> {
    locks: Arc<Mutex<HashMap<K, Arc<AsyncMutex<()>>>>>,
}

impl<K: Eq + Hash + Clone> Clone for KeyedLocks<K> {
    fn clone(&self) -> Self {
        KeyedLocks {
            locks: Arc::clone(&self.locks),
        }
    }
}

impl<K: Eq + Hash + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            locks: Arc::default(),
        }
    }
}

/// Holds one key; the key's entry is dropped with the last holder or waiter.
pub struct KeyGuard<K: Eq + Hash + Clone> {
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
    locks: Arc<Mutex<HashMap<K, Arc<AsyncMutex<()>>>>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits until `key` is free and takes it.
    pub async fn lock(&self, key: K) -> KeyGuard<K> {
        let mutex = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(key.clone()).or_default())
        };
        let guard = mutex.lock_owned().await;
        KeyGuard {
            key,
            guard: Some(guard),
            locks: Arc::clone(&self.locks),
        }
    }

    /// Keys currently held or awaited (for tests and metrics).
    pub fn len(&self) -> usize {
        self.locks.lock().map(|l| l.len()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash + Clone> Drop for KeyGuard<K> {
    fn drop(&mut self) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        drop(self.guard.take());
        // The map's own reference is the last one: nobody holds or awaits this key.
        if locks
            .get(&self.key)
            .is_some_and(|entry| Arc::strong_count(entry) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_key_is_exclusive_and_others_are_not() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").await;
        // Another key is free at once.
        let b = tokio::time::timeout(Duration::from_millis(100), locks.lock("b")).await;
        assert!(b.is_ok());
        // The same key waits.
        let again = tokio::time::timeout(Duration::from_millis(100), locks.lock("a")).await;
        assert!(again.is_err());
        drop(a);
        let again = tokio::time::timeout(Duration::from_millis(100), locks.lock("a")).await;
        assert!(again.is_ok());
    }

    #[tokio::test]
    async fn entries_are_removed_when_free() {
        let locks = KeyedLocks::default();
        {
            let _a = locks.lock(1).await;
            assert_eq!(locks.len(), 1);
        }
        assert!(locks.is_empty());
    }
}
