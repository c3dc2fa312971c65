//! The records the store persists. They mirror the upstream tables column for column; the
//! blob fields hold already-encoded (and, once configured, encrypted) text, so the store never
//! sees plaintext secrets and never needs a key.

use serde::{Deserialize, Serialize};

/// Nanoseconds since the Unix epoch, as upstream stores every timestamp.
pub type Nanos = i64;

/// Which copy of an actual LRP a row is: upstream's `presence` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Presence {
    Ordinary,
    Evacuating,
    Suspect,
}

impl Presence {
    pub fn as_i32(self) -> i32 {
        match self {
            Presence::Ordinary => 0,
            Presence::Evacuating => 1,
            Presence::Suspect => 2,
        }
    }

    pub fn from_i32(value: i32) -> Option<Self> {
        match value {
            0 => Some(Presence::Ordinary),
            1 => Some(Presence::Evacuating),
            2 => Some(Presence::Suspect),
            _ => None,
        }
    }

    /// The leaf name used in the etcd key layout.
    pub fn key_leaf(self) -> &'static str {
        match self {
            Presence::Ordinary => "instance",
            Presence::Evacuating => "evacuating",
            Presence::Suspect => "suspect",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub domain: String,
    /// When the domain stops being fresh; `i64::MAX` means never.
    pub expire_time: Nanos,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub guid: String,
    pub domain: String,
    pub created_at: Nanos,
    pub updated_at: Nanos,
    pub first_completed_at: Nanos,
    /// `Task.State` number: Pending 1, Running 2, Completed 3, Resolving 4.
    pub state: i32,
    pub cell_id: String,
    pub result: String,
    pub failed: bool,
    pub failure_reason: String,
    /// Encoded `TaskDefinition` blob.
    pub task_definition: String,
    pub rejection_count: i32,
    pub rejection_reason: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
}

/// The scheduling half of a desired LRP: what the auctioneer, nsync and the route emitter read
/// in bulk. It never carries the run info, so bulk reads stay small.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLrpSchedulingRecord {
    pub process_guid: String,
    pub domain: String,
    pub log_guid: String,
    pub annotation: String,
    pub instances: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub rootfs: String,
    /// Encoded routes JSON.
    pub routes: String,
    /// Encoded `VolumePlacement` blob.
    pub volume_placement: String,
    pub modification_tag_epoch: String,
    pub modification_tag_index: i32,
    /// Plaintext JSON array, or none.
    pub placement_tags: Option<String>,
    pub max_pids: i32,
    /// Encoded metric tags JSON, or none for rows older than the column.
    pub metric_tags: Option<String>,
    /// 0 rolling, 1 recreate.
    pub update_strategy: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredLrpRecord {
    pub scheduling: DesiredLrpSchedulingRecord,
    /// Encoded `DesiredLRPRunInfo` blob, stored apart from the scheduling info.
    pub run_info: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredLrpFilter {
    pub domain: Option<String>,
    /// `None` means all; `Some(empty)` matches nothing.
    pub process_guids: Option<Vec<String>>,
}

/// The primary key of an actual LRP row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ActualLrpKey {
    pub process_guid: String,
    pub index: i32,
    pub presence: Presence,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActualLrpRecord {
    pub process_guid: String,
    pub index: i32,
    pub presence: Presence,
    pub domain: String,
    /// UNCLAIMED, CLAIMED, RUNNING or CRASHED.
    pub state: String,
    pub instance_guid: String,
    pub cell_id: String,
    pub placement_error: String,
    pub since: Nanos,
    /// Encoded `ActualLRPNetInfo` blob.
    pub net_info: String,
    pub modification_tag_epoch: String,
    pub modification_tag_index: i32,
    pub crash_count: i32,
    pub crash_reason: String,
    /// Encoded internal routes JSON.
    pub internal_routes: Option<String>,
    /// Encoded metric tags JSON.
    pub metric_tags: Option<String>,
    pub routable: bool,
    pub availability_zone: String,
}

impl ActualLrpRecord {
    pub fn key(&self) -> ActualLrpKey {
        ActualLrpKey {
            process_guid: self.process_guid.clone(),
            index: self.index,
            presence: self.presence,
        }
    }
}

/// One record write in an atomic batch: `R` is the record, `K` its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write<R, K> {
    /// Fails the batch with `Exists` if the record is there.
    Insert(R),
    /// Fails the batch with `NotFound` if the record is missing.
    Update(R),
    /// Fails the batch with `NotFound` if the record is missing.
    Delete(K),
}

/// One row write in an atomic batch of actual LRP changes (an instance's ordinary,
/// evacuating and suspect rows change together, e.g. a start that clears the others).
pub type ActualLrpWrite = Write<ActualLrpRecord, ActualLrpKey>;
/// A desired LRP write; a delete names the process guid.
pub type DesiredLrpWrite = Write<DesiredLrpRecord, String>;
/// A task write; a delete names the task guid.
pub type TaskWrite = Write<TaskRecord, String>;

/// One write of a group commit: independent requests' writes committed together
/// ([`crate::Store::write_records`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordWrite {
    Actual(ActualLrpWrite),
    Desired(DesiredLrpWrite),
    Task(TaskWrite),
}

impl RecordWrite {
    pub fn is_insert(&self) -> bool {
        matches!(
            self,
            RecordWrite::Actual(Write::Insert(_))
                | RecordWrite::Desired(Write::Insert(_))
                | RecordWrite::Task(Write::Insert(_))
        )
    }

    /// About how many bytes the write sends (its blobs and text; keys and small columns
    /// ignored), so a batch stays inside a request or packet size limit.
    pub fn approximate_bytes(&self) -> usize {
        match self {
            RecordWrite::Desired(Write::Insert(lrp) | Write::Update(lrp)) => {
                let s = &lrp.scheduling;
                lrp.run_info.len()
                    + s.routes.len()
                    + s.volume_placement.len()
                    + s.annotation.len()
                    + s.placement_tags.as_ref().map_or(0, String::len)
                    + s.metric_tags.as_ref().map_or(0, String::len)
            }
            RecordWrite::Task(Write::Insert(task) | Write::Update(task)) => {
                task.task_definition.len()
                    + task.result.len()
                    + task.failure_reason.len()
                    + task.rejection_reason.len()
            }
            RecordWrite::Actual(Write::Insert(lrp) | Write::Update(lrp)) => {
                lrp.net_info.len()
                    + lrp.crash_reason.len()
                    + lrp.placement_error.len()
                    + lrp.internal_routes.as_ref().map_or(0, String::len)
                    + lrp.metric_tags.as_ref().map_or(0, String::len)
            }
            RecordWrite::Desired(Write::Delete(_))
            | RecordWrite::Task(Write::Delete(_))
            | RecordWrite::Actual(Write::Delete(_)) => 0,
        }
    }

    /// How many etcd operations the write takes (a desired LRP is two keys), so a batch stays
    /// inside etcd's per-transaction limit.
    pub fn store_ops(&self) -> usize {
        match self {
            RecordWrite::Desired(_) => 2,
            RecordWrite::Actual(_) | RecordWrite::Task(_) => 1,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActualLrpFilter {
    pub domain: Option<String>,
    pub cell_id: Option<String>,
    /// `None` means all; `Some(empty)` matches nothing.
    pub process_guids: Option<Vec<String>>,
    pub index: Option<i32>,
}

impl TaskFilter {
    pub fn matches(&self, task: &TaskRecord) -> bool {
        self.domain.as_ref().is_none_or(|d| *d == task.domain)
            && self.cell_id.as_ref().is_none_or(|c| *c == task.cell_id)
    }
}

impl DesiredLrpFilter {
    pub fn matches(&self, lrp: &DesiredLrpSchedulingRecord) -> bool {
        self.domain.as_ref().is_none_or(|d| *d == lrp.domain)
            && self
                .process_guids
                .as_ref()
                .is_none_or(|guids| guids.contains(&lrp.process_guid))
    }
}

impl ActualLrpFilter {
    pub fn matches(&self, lrp: &ActualLrpRecord) -> bool {
        self.domain.as_ref().is_none_or(|d| *d == lrp.domain)
            && self.cell_id.as_ref().is_none_or(|c| *c == lrp.cell_id)
            && self.index.is_none_or(|i| i == lrp.index)
            && self
                .process_guids
                .as_ref()
                .is_none_or(|guids| guids.contains(&lrp.process_guid))
    }
}

/// A cell's presence: what its rep registered, and until when it counts as present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellRecord {
    pub cell_id: String,
    /// The CellPresence as JSON, in locket's shape.
    pub presence: String,
    pub expire_time: Nanos,
}

/// Configuration record ids upstream uses in the `configurations` table.
pub mod configuration_ids {
    pub const VERSION: &str = "version";
    pub const ENCRYPTION_KEY_LABEL: &str = "encryption_key_label";
}

/// A row of upstream locket's `locks` table: a lock (the BBS's active/passive lock) or a cell
/// presence. Locket's columns are nullable; a NULL reads as empty or zero, as locket's scans
/// into Go strings and ints do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The `path` column: the lock's key (`bbs`, or a cell id for a presence).
    pub key: String,
    pub owner: String,
    pub value: String,
    /// The `type` column: `lock` or `presence`.
    pub lock_type: String,
    /// Bumped by every successful lock or refresh, so a watcher can tell a live holder from a
    /// dead one without comparing clocks.
    pub modified_index: i64,
    /// A guid set when the row is created and kept while its owner refreshes it.
    pub modified_id: String,
    /// Seconds.
    pub ttl: i64,
}

/// The columns that change whenever a task changes (every transition sets `updated_at`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskVersion {
    pub updated_at: Nanos,
    pub state: i32,
    pub rejection_count: i32,
}

/// The columns that change whenever a desired LRP changes (an update bumps its tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredLrpVersion {
    pub modification_tag_epoch: String,
    pub modification_tag_index: i32,
    pub instances: i32,
}

/// The columns that change whenever an actual LRP row changes (every change bumps its tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActualLrpVersion {
    pub modification_tag_epoch: String,
    pub modification_tag_index: i32,
    pub state: String,
    pub since: Nanos,
}

/// Every record's version, cheap to read: what a standby server compares with the records it
/// loaded to find those another server changed since, without decoding them all again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordVersions {
    pub tasks: Vec<(String, TaskVersion)>,
    pub desired_lrps: Vec<(String, DesiredLrpVersion)>,
    pub actual_lrps: Vec<(ActualLrpKey, ActualLrpVersion)>,
}

impl TaskRecord {
    pub fn version(&self) -> TaskVersion {
        TaskVersion {
            updated_at: self.updated_at,
            state: self.state,
            rejection_count: self.rejection_count,
        }
    }
}

impl DesiredLrpSchedulingRecord {
    pub fn version(&self) -> DesiredLrpVersion {
        DesiredLrpVersion {
            modification_tag_epoch: self.modification_tag_epoch.clone(),
            modification_tag_index: self.modification_tag_index,
            instances: self.instances,
        }
    }
}

impl ActualLrpRecord {
    pub fn version(&self) -> ActualLrpVersion {
        ActualLrpVersion {
            modification_tag_epoch: self.modification_tag_epoch.clone(),
            modification_tag_index: self.modification_tag_index,
            state: self.state.clone(),
            since: self.since,
        }
    }
}
