//! Upstream's start-up behaviour with both an etcd-era store (`etcd_cluster_urls`) and a SQL
//! store configured: the etcd data is copied once into the empty SQL store, and etcd is marked
//! as copied so no later start copies again (bbs-reference §7.4).

use bbs_actors::codec::Codec;
use bbs_store::{Store, StoreError};

use super::etcd_v2::{self, EtcdV2, EtcdV2Config, EtcdV2Error};
use super::inventory::Unreadable;
use super::kinds::{ActualLrps, DesiredLrps, Domains, RecordKind, Tasks};

/// What the copy did.
#[derive(Debug, Default)]
pub struct StartupCopy {
    pub copied: usize,
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupCopyError {
    #[error("etcd_cluster_urls: {0}")]
    EtcdV2(#[from] EtcdV2Error),
    #[error(
        "the etcd data is at upstream version {0}, before the last etcd-era migration ({last}); \
         let the Go BBS of that era finish its migrations first",
        last = etcd_v2::LAST_ETCD_VERSION
    )]
    TooOld(i64),
    #[error(
        "the SQL store already holds records but etcd is not marked as copied: an earlier copy \
         did not finish, or the store was filled another way; finish with `bbs migrate \
         --from-etcd-v2 --resume` or empty the SQL store, or remove etcd_cluster_urls"
    )]
    NotEmpty,
    #[error("the store: {0}")]
    Store(#[from] StoreError),
    #[error("writing {kind} {key}: {error}")]
    Write {
        kind: &'static str,
        key: String,
        error: StoreError,
    },
}

/// Whether the store holds any record upstream's copy would write.
async fn is_empty(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(Domains::read(store).await?.is_empty()
        && DesiredLrps::read(store).await?.is_empty()
        && ActualLrps::read(store).await?.is_empty()
        && Tasks::read(store).await?.is_empty())
}

async fn insert<K: RecordKind>(
    store: &dyn Store,
    records: &[K::Record],
    copy: &mut StartupCopy,
) -> Result<(), StartupCopyError> {
    for record in records {
        match K::insert(store, std::slice::from_ref(record)).await {
            Ok(()) => copy.copied += 1,
            // A node starting beside this one copies the same records.
            Err(StoreError::Exists) => {}
            Err(error) => {
                return Err(StartupCopyError::Write {
                    kind: K::NAME,
                    key: K::key(record),
                    error,
                })
            }
        }
    }
    Ok(())
}

/// Copies when etcd's data is at the last etcd-era version and not yet copied, and the SQL
/// store is empty (upstream copied when its SQL store had no version yet). Upstream's rules:
/// domains expire now plus their etcd TTL, evacuating instances are dropped. `None` when there
/// was nothing to copy.
pub async fn copy_etcd_v2_at_start(
    config: &EtcdV2Config,
    store: &dyn Store,
    codec: &Codec,
) -> Result<Option<StartupCopy>, StartupCopyError> {
    let etcd = EtcdV2::connect(config)?;
    match etcd.version().await? {
        None => return Ok(None),
        Some(v) if v >= etcd_v2::COPIED_ETCD_VERSION => return Ok(None),
        Some(v) if v < etcd_v2::LAST_ETCD_VERSION => return Err(StartupCopyError::TooOld(v)),
        Some(_) => {}
    }
    if !is_empty(store).await? {
        return Err(StartupCopyError::NotEmpty);
    }
    let snapshot = etcd
        .snapshot(
            codec,
            bbs_actors::clock::now_nanos(),
            etcd_v2::Carry { evacuating: false },
        )
        .await?;
    let mut copy = StartupCopy {
        unreadable: snapshot.unreadable.clone(),
        ..StartupCopy::default()
    };
    insert::<Domains>(store, &snapshot.domains, &mut copy).await?;
    insert::<DesiredLrps>(store, &snapshot.desired, &mut copy).await?;
    insert::<ActualLrps>(store, &snapshot.actual, &mut copy).await?;
    insert::<Tasks>(store, &snapshot.tasks, &mut copy).await?;
    etcd.mark_copied().await?;
    Ok(Some(copy))
}
