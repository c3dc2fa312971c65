//! The cell registry: reps register their cell's presence with a TTL and renew it; the BBS
//! uses the live presences to reach a cell's rep and (with convergence) to tell which cells
//! are gone. Upstream keeps presences in locket; until this BBS speaks locket, reps register
//! over HTTP (`POST /v1/cells/register`, docs/cells.md), and the presences are kept in the
//! store, so they survive a restart. Callers see only the [`CellDirectory`] trait, which a
//! locket client can implement later.

use std::collections::HashMap;
use std::sync::Arc;

use actix::{Actor, Context, Handler, Message, ResponseActFuture};
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use bbs_models as m;
use bbs_store::CellRecord;

use crate::clock::{now_nanos, Nanos, NANOS_PER_SECOND};
use crate::error::{BbsError, BbsResult};
use crate::keyed_lock::KeyedLocks;
use crate::mailbox::Mailbox;
use crate::storage::StoragePool;
use crate::write_through::{mutate, Change, OwnsRecords, Unsettled};

/// Where the BBS learns which cells are present.
#[async_trait]
pub trait CellDirectory: Send + Sync {
    /// The cell's presence, if it is present now; `Err` when the directory cannot say (an
    /// unreachable locket), which callers must not take for "gone".
    async fn cell(&self, cell_id: &str) -> BbsResult<Option<m::CellPresence>>;
    /// Every present cell, sorted by id.
    async fn cells(&self) -> BbsResult<Vec<m::CellPresence>>;
}

#[derive(Serialize, Deserialize, Default)]
struct CapacityJson {
    #[serde(default)]
    memory_mb: i32,
    #[serde(default)]
    disk_mb: i32,
    #[serde(default)]
    containers: i32,
}

#[derive(Serialize, Deserialize, Default)]
struct ProviderJson {
    name: String,
    #[serde(default)]
    properties: Vec<String>,
}

/// CellPresence in locket's JSON shape (bbs-reference §2.12).
#[derive(Serialize, Deserialize, Default)]
struct PresenceJson {
    cell_id: String,
    #[serde(default)]
    rep_address: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    capacity: Option<CapacityJson>,
    #[serde(default)]
    rootfs_provider_list: Vec<ProviderJson>,
    #[serde(default)]
    placement_tags: Vec<String>,
    #[serde(default)]
    optional_placement_tags: Vec<String>,
    #[serde(default)]
    rep_url: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

pub fn presence_to_json(p: &m::CellPresence) -> String {
    let json = PresenceJson {
        cell_id: p.cell_id.clone(),
        rep_address: p.rep_address.clone(),
        zone: p.zone.clone(),
        capacity: p.capacity.as_ref().map(|c| CapacityJson {
            memory_mb: c.memory_mb,
            disk_mb: c.disk_mb,
            containers: c.containers,
        }),
        rootfs_provider_list: p
            .rootfs_providers
            .iter()
            .map(|r| ProviderJson {
                name: r.name.clone(),
                properties: r.properties.clone(),
            })
            .collect(),
        placement_tags: p.placement_tags.clone(),
        optional_placement_tags: p.optional_placement_tags.clone(),
        rep_url: p.rep_url.clone(),
        annotations: p.annotations.clone(),
    };
    serde_json::to_string(&json).expect("plain data serializes")
}

pub fn presence_from_json(text: &str) -> BbsResult<m::CellPresence> {
    let j: PresenceJson = serde_json::from_str(text)
        .map_err(|e| BbsError::Deserialize(format!("cell presence: {e}")))?;
    Ok(m::CellPresence {
        cell_id: j.cell_id,
        rep_address: j.rep_address,
        zone: j.zone,
        capacity: j.capacity.map(|c| m::CellCapacity {
            memory_mb: c.memory_mb,
            disk_mb: c.disk_mb,
            containers: c.containers,
        }),
        rootfs_providers: j
            .rootfs_provider_list
            .into_iter()
            .map(|r| m::Provider {
                name: r.name,
                properties: r.properties,
            })
            .collect(),
        placement_tags: j.placement_tags,
        optional_placement_tags: j.optional_placement_tags,
        rep_url: j.rep_url,
        annotations: j.annotations,
    })
}

#[derive(Clone, Debug, PartialEq)]
pub struct Registered {
    pub presence: m::CellPresence,
    pub expire_time: Nanos,
}

#[derive(Message)]
#[rtype(result = "BbsResult<()>")]
pub struct RegisterCell {
    pub presence: m::CellPresence,
    pub ttl_seconds: u32,
}

#[derive(Message)]
#[rtype(result = "Vec<m::CellPresence>")]
pub struct LiveCells;

pub struct CellActor {
    cells: HashMap<String, Registered>,
    locks: KeyedLocks<String>,
    storage: StoragePool,
    unsettled: Unsettled<String>,
    log: slog::Logger,
}

impl Actor for CellActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(1024);
    }
}

/// The registrations as another server left them, for a standby's catch-up.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplaceCells {
    pub records: Vec<CellRecord>,
    pub log: slog::Logger,
}

impl Handler<ReplaceCells> for CellActor {
    type Result = ();

    fn handle(&mut self, msg: ReplaceCells, _: &mut Self::Context) {
        self.cells = decode_cells(msg.records, &msg.log);
    }
}

/// Stored registrations, decoded; one that does not decode is skipped with a log line.
fn decode_cells(records: Vec<CellRecord>, log: &slog::Logger) -> HashMap<String, Registered> {
    let mut cells = HashMap::new();
    for record in records {
        match presence_from_json(&record.presence) {
            Ok(presence) => {
                cells.insert(
                    record.cell_id,
                    Registered {
                        presence,
                        expire_time: record.expire_time,
                    },
                );
            }
            Err(e) => {
                slog::warn!(log, "cell-presence-undecodable-skipped"; "cell_id" => &record.cell_id, "error" => %e)
            }
        }
    }
    cells
}

impl CellActor {
    pub async fn start(storage: StoragePool, log: &slog::Logger) -> BbsResult<Mailbox<CellActor>> {
        let records = storage.run(|s| async move { s.cells().await }).await?;
        let actor = CellActor {
            cells: decode_cells(records, log),
            locks: KeyedLocks::default(),
            storage,
            unsettled: Unsettled::default(),
            log: log.clone(),
        };
        Ok(Mailbox::new(actor.start(), "cells", 1024))
    }
}

impl OwnsRecords for CellActor {
    type Key = String;
    type Record = Registered;
    type Held<'a> = &'a Registered;
    type Report = ();

    fn locks(&self) -> &KeyedLocks<String> {
        &self.locks
    }

    fn record(&self, key: &String) -> Option<&Registered> {
        self.cells.get(key)
    }

    fn persist(
        &self,
        key: &String,
        _before: Option<&Registered>,
        change: &Change<Registered>,
    ) -> BoxFuture<'static, BbsResult<()>> {
        let storage = self.storage.clone();
        let record = match change {
            Change::Insert(r) | Change::Update(r) => Some(CellRecord {
                cell_id: key.clone(),
                presence: presence_to_json(&r.presence),
                expire_time: r.expire_time,
            }),
            Change::Delete => None,
            Change::Unchanged => return async { Ok(()) }.boxed(),
        };
        let cell_id = key.clone();
        async move {
            storage
                .run_write(move |store| async move {
                    match record {
                        Some(record) => store.upsert_cell(&record).await,
                        None => store.delete_cell(&cell_id).await,
                    }
                })
                .await
        }
        .boxed()
    }

    type Stored = Option<CellRecord>;

    fn unsettled(&mut self) -> &mut Unsettled<String> {
        &mut self.unsettled
    }

    fn reload(&self, key: &String) -> BoxFuture<'static, BbsResult<Option<CellRecord>>> {
        let (storage, cell_id) = (self.storage.clone(), key.clone());
        async move {
            let cells = storage.run(|s| async move { s.cells().await }).await?;
            Ok(cells.into_iter().find(|c| c.cell_id == cell_id))
        }
        .boxed()
    }

    fn settle(&mut self, key: &String, stored: Option<CellRecord>) {
        self.cells.remove(key);
        self.cells
            .extend(decode_cells(stored.into_iter().collect(), &self.log));
    }

    fn apply(&mut self, key: String, change: Change<Registered>, _: ()) {
        match change {
            Change::Insert(r) | Change::Update(r) => {
                self.cells.insert(key, r);
            }
            Change::Delete => {
                self.cells.remove(&key);
            }
            Change::Unchanged => {}
        }
    }
}

impl Handler<RegisterCell> for CellActor {
    type Result = ResponseActFuture<Self, BbsResult<()>>;

    fn handle(&mut self, msg: RegisterCell, _: &mut Self::Context) -> Self::Result {
        let registered = Registered {
            expire_time: now_nanos().saturating_add(i64::from(msg.ttl_seconds) * NANOS_PER_SECOND),
            presence: msg.presence,
        };
        mutate(self, registered.presence.cell_id.clone(), move |current| {
            Ok((
                if current.is_some() {
                    Change::Update(registered)
                } else {
                    Change::Insert(registered)
                },
                (),
            ))
        })
    }
}

impl Handler<LiveCells> for CellActor {
    type Result = Vec<m::CellPresence>;

    fn handle(&mut self, _: LiveCells, _: &mut Self::Context) -> Self::Result {
        let now = now_nanos();
        let mut live: Vec<m::CellPresence> = self
            .cells
            .values()
            .filter(|r| r.expire_time > now)
            .map(|r| r.presence.clone())
            .collect();
        live.sort_by(|a, b| a.cell_id.cmp(&b.cell_id));
        live
    }
}

crate::metered_handlers!(CellActor: RegisterCell, LiveCells, ReplaceCells);

/// The registry as a [`CellDirectory`].
#[derive(Clone)]
pub struct RegisteredCells {
    pub mailbox: Mailbox<CellActor>,
}

#[async_trait]
impl CellDirectory for RegisteredCells {
    async fn cell(&self, cell_id: &str) -> BbsResult<Option<m::CellPresence>> {
        Ok(self
            .cells()
            .await?
            .into_iter()
            .find(|c| c.cell_id == cell_id))
    }

    async fn cells(&self) -> BbsResult<Vec<m::CellPresence>> {
        self.mailbox.call(LiveCells).await
    }
}

pub type Directory = Arc<dyn CellDirectory>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presences_round_trip_through_lockets_json() {
        let presence = m::CellPresence {
            cell_id: "cell-1".into(),
            rep_address: "http://10.0.0.1:1800".into(),
            zone: "z1".into(),
            capacity: Some(m::CellCapacity {
                memory_mb: 1024,
                disk_mb: 2048,
                containers: 250,
            }),
            rootfs_providers: vec![m::Provider {
                name: "preloaded".into(),
                properties: vec!["cflinuxfs4".into()],
            }],
            placement_tags: vec!["a".into()],
            optional_placement_tags: vec![],
            rep_url: "https://cell-1.service.cf.internal:1801".into(),
            annotations: Default::default(),
        };
        let json = presence_to_json(&presence);
        assert!(json.contains("\"rootfs_provider_list\""));
        assert_eq!(presence_from_json(&json).unwrap(), presence);
    }
}
