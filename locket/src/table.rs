//! Locket's rules applied to the `locks` rows of a BBS store, each call one atomic
//! read-modify-write (upstream: locket db/lock_db.go).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bbs_store::{LockRecord, Store, StoreError};

use crate::error::{LocketError, LocketResult};
use crate::models::{Resource, TypeCode};
use crate::rules::{self, Expiry};

#[derive(Clone)]
pub struct LockTable {
    store: Arc<dyn Store>,
}

/// A rule's refusal, carried through the store's mutation and recognised on the way out.
fn refusal(error: LocketError) -> StoreError {
    StoreError::Rejected(error.to_string())
}

fn locket_error(error: StoreError) -> LocketError {
    match error {
        StoreError::Rejected(why) if why == LocketError::LockCollision.to_string() => {
            LocketError::LockCollision
        }
        other => LocketError::Store(other),
    }
}

impl LockTable {
    pub fn new(store: Arc<dyn Store>) -> Self {
        LockTable { store }
    }

    /// Takes or refreshes `resource` (already validated) and returns the row as written, for
    /// the expiry to watch.
    pub async fn lock(&self, resource: &Resource, ttl_seconds: i64) -> LocketResult<LockRecord> {
        let written = self
            .store
            .modify_lock(&resource.key, &|current| {
                rules::lock(current.as_ref(), resource, ttl_seconds, || {
                    uuid::Uuid::new_v4().to_string()
                })
                .map(Some)
                .map_err(refusal)
            })
            .await
            .map_err(locket_error)?;
        written.ok_or_else(|| LocketError::Store(StoreError::Other("lock row not written".into())))
    }

    pub async fn release(&self, resource: &Resource) -> LocketResult<()> {
        self.store
            .modify_lock(&resource.key, &|current| {
                rules::release(current.as_ref(), &resource.owner).map_err(refusal)?;
                Ok(None)
            })
            .await
            .map_err(locket_error)?;
        Ok(())
    }

    pub async fn fetch(&self, key: &str) -> LocketResult<Resource> {
        let row = self.store.lock(key).await?;
        rules::fetched(row.as_ref())
    }

    /// The owned rows of one type (validated by the caller), sorted by key.
    pub async fn fetch_all(&self, type_code: TypeCode) -> LocketResult<Vec<Resource>> {
        let lock_type = rules::type_string(type_code as i32, "");
        Ok(self
            .store
            .locks(Some(&lock_type))
            .await?
            .iter()
            .filter(|row| !row.owner.is_empty())
            .map(rules::resource_of)
            .collect())
    }

    /// Every row, owned or not, with its version: what the expiry watches.
    pub async fn rows(&self) -> LocketResult<Vec<LockRecord>> {
        Ok(self.store.locks(None).await?)
    }

    /// Releases `seen` if it has not changed since; answers whether this call released it.
    pub async fn expire(&self, seen: &LockRecord) -> LocketResult<Expiry> {
        let released = AtomicBool::new(false);
        let refreshed = AtomicBool::new(false);
        self.store
            .modify_lock(&seen.key, &|current| {
                let outcome = rules::expire(current.as_ref(), seen);
                released.store(outcome == Expiry::Released, Ordering::Relaxed);
                refreshed.store(outcome == Expiry::Refreshed, Ordering::Relaxed);
                Ok(if outcome == Expiry::Released {
                    None
                } else {
                    current
                })
            })
            .await?;
        Ok(if released.load(Ordering::Relaxed) {
            Expiry::Released
        } else if refreshed.load(Ordering::Relaxed) {
            Expiry::Refreshed
        } else {
            Expiry::Gone
        })
    }
}
