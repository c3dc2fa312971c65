//! Records keyed by guid, shared between the actor that owns them (their only writer) and
//! readers on any thread. Reads take a short read lock instead of a turn in the actor's
//! mailbox, so a bulk list neither waits behind a burst of writes nor delays them: a read
//! copies what it needs (shared pointers, where the records are large) under the lock and
//! does the rest after releasing it.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{MappedRwLockReadGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub struct SharedMap<V>(Arc<RwLock<HashMap<String, V>>>);

impl<V> Clone for SharedMap<V> {
    fn clone(&self) -> Self {
        SharedMap(Arc::clone(&self.0))
    }
}

impl<V> SharedMap<V> {
    pub(crate) fn new(entries: HashMap<String, V>) -> Self {
        SharedMap(Arc::new(RwLock::new(entries)))
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, HashMap<String, V>> {
        self.0.read()
    }

    /// Only the owning actor writes.
    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, V>> {
        self.0.write()
    }

    /// Part of the entry under `key` (through `project`), borrowed under the read lock.
    pub(crate) fn entry<T: ?Sized>(
        &self,
        key: &str,
        project: impl FnOnce(&V) -> &T,
    ) -> Option<MappedRwLockReadGuard<'_, T>> {
        RwLockReadGuard::try_map(self.0.read(), |entries| entries.get(key).map(project)).ok()
    }
}

impl<V: Clone> SharedMap<V> {
    /// A copy of the entry under `key`.
    pub fn get(&self, key: &str) -> Option<V> {
        self.0.read().get(key).cloned()
    }
}
