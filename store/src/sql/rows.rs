//! Row structs that match the tables exactly, and their conversions to the store records.
//! Upstream's nullable columns become plain values here, with the column default for NULL.

use diesel::prelude::*;

use super::schema::*;
use crate::error::StoreError;
use crate::records::*;

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = tasks)]
#[diesel(treat_none_as_null = true)]
pub struct TaskRow {
    pub guid: String,
    pub domain: String,
    pub updated_at: Option<i64>,
    pub created_at: Option<i64>,
    pub first_completed_at: Option<i64>,
    pub state: Option<i32>,
    pub cell_id: String,
    pub result: Option<String>,
    pub failed: Option<bool>,
    pub failure_reason: String,
    pub task_definition: String,
    pub rejection_count: i32,
    pub rejection_reason: String,
}

impl From<TaskRow> for TaskRecord {
    fn from(row: TaskRow) -> Self {
        TaskRecord {
            guid: row.guid,
            domain: row.domain,
            created_at: row.created_at.unwrap_or_default(),
            updated_at: row.updated_at.unwrap_or_default(),
            first_completed_at: row.first_completed_at.unwrap_or_default(),
            state: row.state.unwrap_or_default(),
            cell_id: row.cell_id,
            result: row.result.unwrap_or_default(),
            failed: row.failed.unwrap_or_default(),
            failure_reason: row.failure_reason,
            task_definition: row.task_definition,
            rejection_count: row.rejection_count,
            rejection_reason: row.rejection_reason,
        }
    }
}

impl From<&TaskRecord> for TaskRow {
    fn from(task: &TaskRecord) -> Self {
        TaskRow {
            guid: task.guid.clone(),
            domain: task.domain.clone(),
            updated_at: Some(task.updated_at),
            created_at: Some(task.created_at),
            first_completed_at: Some(task.first_completed_at),
            state: Some(task.state),
            cell_id: task.cell_id.clone(),
            result: Some(task.result.clone()),
            failed: Some(task.failed),
            failure_reason: task.failure_reason.clone(),
            task_definition: task.task_definition.clone(),
            rejection_count: task.rejection_count,
            rejection_reason: task.rejection_reason.clone(),
        }
    }
}

#[derive(Queryable, Selectable, Clone, Debug)]
#[diesel(table_name = desired_lrps)]
pub struct SchedulingRow {
    pub process_guid: String,
    pub domain: String,
    pub log_guid: String,
    pub annotation: Option<String>,
    pub instances: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub rootfs: String,
    pub routes: String,
    pub volume_placement: String,
    pub modification_tag_epoch: String,
    pub modification_tag_index: Option<i32>,
    pub placement_tags: Option<String>,
    pub max_pids: Option<i32>,
    pub metric_tags: Option<String>,
    pub update_strategy: i32,
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = desired_lrps)]
#[diesel(treat_none_as_null = true)]
pub struct DesiredLrpRow {
    pub process_guid: String,
    pub domain: String,
    pub log_guid: String,
    pub annotation: Option<String>,
    pub instances: i32,
    pub memory_mb: i32,
    pub disk_mb: i32,
    pub rootfs: String,
    pub routes: String,
    pub volume_placement: String,
    pub modification_tag_epoch: String,
    pub modification_tag_index: Option<i32>,
    pub run_info: String,
    pub placement_tags: Option<String>,
    pub max_pids: Option<i32>,
    pub metric_tags: Option<String>,
    pub update_strategy: i32,
}

impl From<SchedulingRow> for DesiredLrpSchedulingRecord {
    fn from(row: SchedulingRow) -> Self {
        DesiredLrpSchedulingRecord {
            process_guid: row.process_guid,
            domain: row.domain,
            log_guid: row.log_guid,
            annotation: row.annotation.unwrap_or_default(),
            instances: row.instances,
            memory_mb: row.memory_mb,
            disk_mb: row.disk_mb,
            rootfs: row.rootfs,
            routes: row.routes,
            volume_placement: row.volume_placement,
            modification_tag_epoch: row.modification_tag_epoch,
            modification_tag_index: row.modification_tag_index.unwrap_or_default(),
            placement_tags: row.placement_tags,
            max_pids: row.max_pids.unwrap_or_default(),
            metric_tags: row.metric_tags,
            update_strategy: row.update_strategy,
        }
    }
}

impl From<DesiredLrpRow> for DesiredLrpRecord {
    fn from(row: DesiredLrpRow) -> Self {
        DesiredLrpRecord {
            run_info: row.run_info,
            scheduling: DesiredLrpSchedulingRecord {
                process_guid: row.process_guid,
                domain: row.domain,
                log_guid: row.log_guid,
                annotation: row.annotation.unwrap_or_default(),
                instances: row.instances,
                memory_mb: row.memory_mb,
                disk_mb: row.disk_mb,
                rootfs: row.rootfs,
                routes: row.routes,
                volume_placement: row.volume_placement,
                modification_tag_epoch: row.modification_tag_epoch,
                modification_tag_index: row.modification_tag_index.unwrap_or_default(),
                placement_tags: row.placement_tags,
                max_pids: row.max_pids.unwrap_or_default(),
                metric_tags: row.metric_tags,
                update_strategy: row.update_strategy,
            },
        }
    }
}

impl From<&DesiredLrpRecord> for DesiredLrpRow {
    fn from(lrp: &DesiredLrpRecord) -> Self {
        let s = &lrp.scheduling;
        DesiredLrpRow {
            process_guid: s.process_guid.clone(),
            domain: s.domain.clone(),
            log_guid: s.log_guid.clone(),
            annotation: Some(s.annotation.clone()),
            instances: s.instances,
            memory_mb: s.memory_mb,
            disk_mb: s.disk_mb,
            rootfs: s.rootfs.clone(),
            routes: s.routes.clone(),
            volume_placement: s.volume_placement.clone(),
            modification_tag_epoch: s.modification_tag_epoch.clone(),
            modification_tag_index: Some(s.modification_tag_index),
            run_info: lrp.run_info.clone(),
            placement_tags: s.placement_tags.clone(),
            max_pids: Some(s.max_pids),
            metric_tags: s.metric_tags.clone(),
            update_strategy: s.update_strategy,
        }
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = actual_lrps)]
#[diesel(treat_none_as_null = true)]
pub struct ActualLrpRow {
    pub process_guid: String,
    pub instance_index: i32,
    pub presence: i32,
    pub domain: String,
    pub state: String,
    pub instance_guid: String,
    pub cell_id: String,
    pub placement_error: String,
    pub since: Option<i64>,
    pub net_info: String,
    pub modification_tag_epoch: String,
    pub modification_tag_index: Option<i32>,
    pub crash_count: i32,
    pub crash_reason: String,
    pub internal_routes: Option<String>,
    pub metric_tags: Option<String>,
    pub routable: Option<bool>,
    pub availability_zone: String,
}

impl TryFrom<ActualLrpRow> for ActualLrpRecord {
    type Error = StoreError;

    fn try_from(row: ActualLrpRow) -> Result<Self, StoreError> {
        let presence = Presence::from_i32(row.presence).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "actual LRP {}/{} has unknown presence {}",
                row.process_guid, row.instance_index, row.presence
            ))
        })?;
        Ok(ActualLrpRecord {
            process_guid: row.process_guid,
            index: row.instance_index,
            presence,
            domain: row.domain,
            state: row.state,
            instance_guid: row.instance_guid,
            cell_id: row.cell_id,
            placement_error: row.placement_error,
            since: row.since.unwrap_or_default(),
            net_info: row.net_info,
            modification_tag_epoch: row.modification_tag_epoch,
            modification_tag_index: row.modification_tag_index.unwrap_or_default(),
            crash_count: row.crash_count,
            crash_reason: row.crash_reason,
            internal_routes: row.internal_routes,
            metric_tags: row.metric_tags,
            routable: row.routable.unwrap_or_default(),
            availability_zone: row.availability_zone,
        })
    }
}

impl From<&ActualLrpRecord> for ActualLrpRow {
    fn from(lrp: &ActualLrpRecord) -> Self {
        ActualLrpRow {
            process_guid: lrp.process_guid.clone(),
            instance_index: lrp.index,
            presence: lrp.presence.as_i32(),
            domain: lrp.domain.clone(),
            state: lrp.state.clone(),
            instance_guid: lrp.instance_guid.clone(),
            cell_id: lrp.cell_id.clone(),
            placement_error: lrp.placement_error.clone(),
            since: Some(lrp.since),
            net_info: lrp.net_info.clone(),
            modification_tag_epoch: lrp.modification_tag_epoch.clone(),
            modification_tag_index: Some(lrp.modification_tag_index),
            crash_count: lrp.crash_count,
            crash_reason: lrp.crash_reason.clone(),
            internal_routes: lrp.internal_routes.clone(),
            metric_tags: lrp.metric_tags.clone(),
            routable: Some(lrp.routable),
            availability_zone: lrp.availability_zone.clone(),
        }
    }
}

#[derive(Queryable, Selectable, Insertable, AsChangeset, Clone, Debug)]
#[diesel(table_name = locks)]
#[diesel(treat_none_as_null = true)]
pub struct LockRow {
    pub path: String,
    pub owner: Option<String>,
    pub value: Option<String>,
    pub lock_type: Option<String>,
    pub modified_index: Option<i64>,
    pub modified_id: Option<String>,
    pub ttl: Option<i64>,
}

impl From<LockRow> for LockRecord {
    fn from(row: LockRow) -> Self {
        LockRecord {
            key: row.path,
            owner: row.owner.unwrap_or_default(),
            value: row.value.unwrap_or_default(),
            lock_type: row.lock_type.unwrap_or_default(),
            modified_index: row.modified_index.unwrap_or_default(),
            modified_id: row.modified_id.unwrap_or_default(),
            ttl: row.ttl.unwrap_or_default(),
        }
    }
}

impl From<&LockRecord> for LockRow {
    fn from(lock: &LockRecord) -> Self {
        LockRow {
            path: lock.key.clone(),
            owner: Some(lock.owner.clone()),
            value: Some(lock.value.clone()),
            lock_type: Some(lock.lock_type.clone()),
            modified_index: Some(lock.modified_index),
            modified_id: Some(lock.modified_id.clone()),
            ttl: Some(lock.ttl),
        }
    }
}
