//! The EncryptorActor: keeps every record sealed under the active key (bbs-reference §6.4).
//!
//! At start-up it compares the key label recorded in the store with the active one. When they
//! differ it rewrites every blob under the active key, record by record, through the store's
//! atomic read-modify-write (so a concurrent change by a domain actor is never lost), while
//! the API keeps serving; then it records the active label. Only the encryption layer
//! changes, never a record's content, so the actors' in-memory copies stay valid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::{Actor, Context, Handler, Message, ResponseFuture};
use futures::StreamExt;
use slog::{info, warn, Logger};

use bbs_store::{
    configuration_ids, ActualLrpFilter, DesiredLrpFilter, StoreError, StoreResult, TaskFilter,
};

use crate::codec::Codec;
use crate::error::{BbsError, BbsResult};
use crate::mailbox::Mailbox;
use crate::storage::StoragePool;

/// Concurrent record rewrites during a rotation.
const PARALLEL_REWRITES: usize = 16;
/// The mutation's way of saying "already current, write nothing".
const UNCHANGED: &str = "already sealed under the active key";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RotationReport {
    pub from: Option<String>,
    pub to: Option<String>,
    pub examined: u64,
    pub rewritten: u64,
    pub failed: u64,
}

/// Rotates if the recorded label is not the active one; answers what it did.
#[derive(Message)]
#[rtype(result = "BbsResult<RotationReport>")]
pub struct Rotate;

pub struct EncryptorActor {
    storage: StoragePool,
    codec: Codec,
    log: Logger,
}

impl Actor for EncryptorActor {
    type Context = Context<Self>;
}

impl EncryptorActor {
    pub fn start(storage: StoragePool, codec: Codec, log: Logger) -> Mailbox<EncryptorActor> {
        Mailbox::new(
            EncryptorActor {
                storage,
                codec,
                log,
            }
            .start(),
            "encryptor",
            16,
        )
    }
}

/// Refuses to go on when the store names a key label this server does not have, as upstream
/// does: records sealed with it could not be read.
pub async fn check_recorded_label(
    storage: &StoragePool,
    codec: &Codec,
) -> BbsResult<Option<String>> {
    let recorded = storage
        .run(|store| async move {
            store
                .configuration(configuration_ids::ENCRYPTION_KEY_LABEL)
                .await
        })
        .await?;
    if let (Some(label), Some(keys)) = (&recorded, codec.keys()) {
        if !label.is_empty() && !keys.has_label(label) {
            return Err(BbsError::UnknownKeyLabel(label.clone()));
        }
    }
    Ok(recorded)
}

fn reencode_field(codec: &Codec, blob: &mut String, changed: &mut bool) -> StoreResult<()> {
    match codec.reencode(blob) {
        Ok(Some(sealed)) => {
            *blob = sealed;
            *changed = true;
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(e) => Err(StoreError::Rejected(e.to_string())),
    }
}

fn reencode_optional(
    codec: &Codec,
    blob: &mut Option<String>,
    changed: &mut bool,
) -> StoreResult<()> {
    match blob {
        Some(b) => reencode_field(codec, b, changed),
        None => Ok(()),
    }
}

fn finish(changed: bool) -> StoreResult<()> {
    if changed {
        Ok(())
    } else {
        Err(StoreError::Rejected(UNCHANGED.into()))
    }
}

struct Progress {
    examined: AtomicU64,
    rewritten: AtomicU64,
    failed: AtomicU64,
}

impl Progress {
    fn record(&self, result: BbsResult<()>, log: &Logger, what: &str) {
        let examined = self.examined.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("bbs_encryption_records_examined").set(examined as f64);
        match result {
            Ok(()) => {
                self.rewritten.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("bbs_encryption_records_rewritten_total").increment(1);
            }
            // The storage pool hands a mutation's refusal back as its message.
            Err(BbsError::Unknown(m)) if m == UNCHANGED => {}
            // Deleted while we worked: nothing left to seal.
            Err(BbsError::NotFound) => {}
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                warn!(log, "encryption-rewrite-failed"; "record" => what, "error" => %e);
            }
        }
        if examined.is_multiple_of(10_000) {
            info!(log, "encryption-progress"; "examined" => examined, "rewritten" => self.rewritten.load(Ordering::Relaxed));
        }
    }
}

async fn rotate(storage: StoragePool, codec: Codec, log: Logger) -> BbsResult<RotationReport> {
    let recorded = check_recorded_label(&storage, &codec).await?;
    let Some(active) = codec.keys().map(|k| k.active_label().to_owned()) else {
        return Ok(RotationReport::default());
    };
    if recorded.as_deref() == Some(active.as_str()) {
        return Ok(RotationReport {
            from: recorded,
            to: Some(active),
            ..Default::default()
        });
    }
    let started = Instant::now();
    info!(log, "encryption-rotation-started"; "from" => recorded.clone().unwrap_or_default(), "to" => &active);
    metrics::gauge!("bbs_encryption_rotation_in_progress").set(1.0);
    let progress = Arc::new(Progress {
        examined: AtomicU64::new(0),
        rewritten: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });

    let tasks = storage
        .run(|s| async move { s.tasks(&TaskFilter::default()).await })
        .await?;
    let desired = storage
        .run(|s| async move {
            s.desired_lrp_scheduling_infos(&DesiredLrpFilter::default())
                .await
        })
        .await?;
    let actual = storage
        .run(|s| async move { s.actual_lrps(&ActualLrpFilter::default()).await })
        .await?;
    metrics::gauge!("bbs_encryption_records_total")
        .set((tasks.len() + desired.len() + actual.len()) as f64);

    let task_work = tasks.into_iter().map(|t| {
        let (storage, codec, progress, log) = (
            storage.clone(),
            codec.clone(),
            progress.clone(),
            log.clone(),
        );
        async move {
            let guid = t.guid;
            let result = storage
                .run(move |store| async move {
                    store
                        .modify_task(&guid, &|mut task| {
                            let mut changed = false;
                            reencode_field(&codec, &mut task.task_definition, &mut changed)?;
                            finish(changed)?;
                            Ok(task)
                        })
                        .await
                        .map(drop)
                })
                .await;
            progress.record(result, &log, "task");
        }
        .boxed_local()
    });
    let desired_work = desired.into_iter().map(|d| {
        let (storage, codec, progress, log) = (
            storage.clone(),
            codec.clone(),
            progress.clone(),
            log.clone(),
        );
        async move {
            let guid = d.process_guid;
            let result = storage
                .run(move |store| async move {
                    store
                        .modify_desired_lrp(&guid, &|mut lrp| {
                            let mut changed = false;
                            reencode_field(&codec, &mut lrp.run_info, &mut changed)?;
                            reencode_field(&codec, &mut lrp.scheduling.routes, &mut changed)?;
                            reencode_field(
                                &codec,
                                &mut lrp.scheduling.volume_placement,
                                &mut changed,
                            )?;
                            reencode_optional(
                                &codec,
                                &mut lrp.scheduling.metric_tags,
                                &mut changed,
                            )?;
                            finish(changed)?;
                            Ok(lrp)
                        })
                        .await
                        .map(drop)
                })
                .await;
            progress.record(result, &log, "desired_lrp");
        }
        .boxed_local()
    });
    let actual_work = actual.into_iter().map(|a| {
        let (storage, codec, progress, log) = (
            storage.clone(),
            codec.clone(),
            progress.clone(),
            log.clone(),
        );
        async move {
            let key = a.key();
            let result = storage
                .run(move |store| async move {
                    store
                        .modify_actual_lrp(&key, &|mut lrp| {
                            let mut changed = false;
                            reencode_field(&codec, &mut lrp.net_info, &mut changed)?;
                            reencode_optional(&codec, &mut lrp.internal_routes, &mut changed)?;
                            reencode_optional(&codec, &mut lrp.metric_tags, &mut changed)?;
                            finish(changed)?;
                            Ok(lrp)
                        })
                        .await
                        .map(drop)
                })
                .await;
            progress.record(result, &log, "actual_lrp");
        }
        .boxed_local()
    });
    futures::stream::iter(task_work.chain(desired_work).chain(actual_work))
        .buffer_unordered(PARALLEL_REWRITES)
        .collect::<Vec<()>>()
        .await;

    let report = RotationReport {
        from: recorded,
        to: Some(active.clone()),
        examined: progress.examined.load(Ordering::Relaxed),
        rewritten: progress.rewritten.load(Ordering::Relaxed),
        failed: progress.failed.load(Ordering::Relaxed),
    };
    metrics::gauge!("bbs_encryption_rotation_in_progress").set(0.0);
    metrics::gauge!("bbs_encryption_duration_seconds").set(started.elapsed().as_secs_f64());
    if report.failed > 0 {
        // The label stays as it was, so the next start tries again.
        warn!(log, "encryption-rotation-incomplete"; "failed" => report.failed);
        return Ok(report);
    }
    storage
        .run(move |store| async move {
            store
                .set_configuration(configuration_ids::ENCRYPTION_KEY_LABEL, &active)
                .await
        })
        .await?;
    info!(log, "encryption-rotation-finished"; "examined" => report.examined, "rewritten" => report.rewritten, "seconds" => started.elapsed().as_secs_f64());
    Ok(report)
}

impl Handler<Rotate> for EncryptorActor {
    type Result = ResponseFuture<BbsResult<RotationReport>>;

    fn handle(&mut self, _: Rotate, _: &mut Self::Context) -> Self::Result {
        Box::pin(rotate(
            self.storage.clone(),
            self.codec.clone(),
            self.log.clone(),
        ))
    }
}

use futures::FutureExt as _;

crate::metered_handlers!(EncryptorActor: Rotate);
