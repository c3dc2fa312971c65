//! `bbs migrate`: copies every record from one store to another (any of SQLite, MySQL,
//! PostgreSQL, etcd on either side), re-sealed under the target's active key, then proves the
//! copy by comparing a digest of every record's plaintext on both sides (docs/migration.md).
//!
//! The order of work is what makes it safe to stop at any point: every source record is
//! opened before anything is written (a missing key stops the run with the target
//! untouched), each write is atomic, and a run with `--resume` writes only what the target
//! lacks or holds differently, so a killed run finishes with nothing doubled.

pub mod etcd_v2;
mod handback;
mod inventory;
mod kinds;
pub mod startup;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};

use bbs_actors::codec::Codec;
use bbs_store::{configuration_ids, Backend, Store, StoreConfig, StoreError};

use crate::config::Settings;
use inventory::{Comparison, Inventory, MissingKey, Opened, Unreadable};
use kinds::{ActualLrps, Cells, DesiredLrps, Domains, RecordKind, Tasks};

/// Records written so far in this run, for the test hook below.
static WRITTEN: AtomicUsize = AtomicUsize::new(0);

/// Test hook, in debug builds only: with `BBS_MIGRATE_PAUSE_AFTER=N`, once N records are
/// written the run stops writing and waits to be killed, so a test can kill it half-way at a
/// known point.
fn count_written(n: usize) {
    if !cfg!(debug_assertions) {
        return;
    }
    static PAUSE_AFTER: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let pause_after = *PAUSE_AFTER.get_or_init(|| {
        std::env::var("BBS_MIGRATE_PAUSE_AFTER")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let written = WRITTEN.fetch_add(n, Ordering::Relaxed) + n;
    if pause_after.is_some_and(|after| written >= after) {
        eprintln!("paused after {written} records (BBS_MIGRATE_PAUSE_AFTER)");
        // Blocks the thread that drives the copy, so no further batch starts.
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Records per write: one transaction (or etcd txn) for actual LRPs, well under etcd's
/// default limit of 128 operations per txn.
const BATCH: usize = 100;

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The source server's configuration file (its store and encryption keys).
    #[arg(long, value_name = "CONFIG")]
    pub from: PathBuf,
    /// The target server's configuration file; records are sealed under its active key.
    #[arg(long, value_name = "CONFIG", required_unless_present = "verify_only")]
    pub to: Option<PathBuf>,
    /// Continue an interrupted migration into a target that already holds some records:
    /// only what is missing or different is written.
    #[arg(long)]
    pub resume: bool,
    /// Write nothing. With --to: compare the two stores record by record. Without it: check
    /// that the --from database can be handed back to the Go BBS.
    #[arg(long)]
    pub verify_only: bool,
    /// Read the source from upstream's etcd-era store through the etcd v2 API, at the
    /// `etcd_cluster_urls` the --from config names (opened with its encryption keys).
    #[arg(long)]
    pub from_etcd_v2: bool,
}

#[derive(Debug, thiserror::Error)]
enum MigrateError {
    #[error("{0}")]
    Usage(String),
    #[error(
        "the {side} holds {kind} sealed with key label {label:?} (first: {key}), which is not \
         among {flag}'s encryption_keys; nothing was written"
    )]
    MissingKey {
        side: &'static str,
        flag: &'static str,
        label: String,
        kind: &'static str,
        key: String,
    },
    #[error("{side}: {error}")]
    Store {
        side: &'static str,
        error: StoreError,
    },
    #[error("source: {0}")]
    EtcdV2(#[from] etcd_v2::EtcdV2Error),
    #[error(
        "the target already holds records ({0}); run with --resume to finish an interrupted \
         migration into it, or empty it first"
    )]
    TargetNotEmpty(String),
    #[error(
        "writing {kind} to the target failed: {error}; nothing is lost: run again with --resume \
         to finish"
    )]
    Write {
        kind: &'static str,
        error: StoreError,
    },
}

impl MigrateError {
    fn exit_code(&self) -> i32 {
        match self {
            MigrateError::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl MissingKey {
    fn on(self, side: &Side) -> MigrateError {
        MigrateError::MissingKey {
            side: side.name,
            flag: if side.name == "target" {
                "--to"
            } else {
                "--from"
            },
            label: self.label,
            kind: self.kind,
            key: self.key,
        }
    }
}

/// Where a side's records come from: a store, or everything read at once from upstream's
/// etcd-era store (read once, so the copy and the verification see the same records).
enum Records {
    Store(Arc<dyn Store>),
    EtcdV2(etcd_v2::Snapshot),
}

/// One end of the migration: its records and the codec its keys make.
struct Side {
    name: &'static str,
    records: Records,
    codec: Codec,
}

impl Side {
    fn store_error(&self) -> impl Fn(StoreError) -> MigrateError + '_ {
        move |error| MigrateError::Store {
            side: self.name,
            error,
        }
    }

    /// The side's store; only a source read from etcd v2 has none, and it is never written.
    fn store(&self) -> Result<&dyn Store, MigrateError> {
        match &self.records {
            Records::Store(store) => Ok(store.as_ref()),
            Records::EtcdV2(_) => Err(MigrateError::Usage(format!(
                "the {} is an etcd v2 snapshot, which can only be read",
                self.name
            ))),
        }
    }

    /// Every record of a kind, and those the source already found unreadable.
    async fn read<K: RecordKind>(&self) -> Result<(Vec<K::Record>, Vec<Unreadable>), MigrateError> {
        match &self.records {
            Records::Store(store) => Ok((
                K::read(store.as_ref()).await.map_err(self.store_error())?,
                Vec::new(),
            )),
            Records::EtcdV2(snapshot) => Ok((
                K::from_etcd_v2(snapshot),
                snapshot
                    .unreadable
                    .iter()
                    .filter(|u| u.kind == K::NAME)
                    .cloned()
                    .collect(),
            )),
        }
    }

    async fn inventory<K: RecordKind>(&self) -> Result<Inventory, MigrateError> {
        let (records, unreadable) = self.read::<K>().await?;
        let mut inventory =
            inventory::inventory::<K>(&self.codec, records).map_err(|m| m.on(self))?;
        inventory.unreadable.extend(unreadable);
        Ok(inventory)
    }
}

/// A side's settings, read without the `BBS_*` environment overrides: they could not say
/// which side they mean.
fn load_settings(flag: &str, path: &Path) -> Result<Settings, MigrateError> {
    Settings::load(Some(path), std::iter::empty())
        .map_err(|e| MigrateError::Usage(format!("{flag} {}: {e}", path.display())))
}

struct Opening {
    flag: &'static str,
    path: PathBuf,
    settings: Settings,
    store: StoreConfig,
    codec: Codec,
}

fn opening(flag: &'static str, path: &Path) -> Result<Opening, MigrateError> {
    let settings = load_settings(flag, path)?;
    let usage = |e: crate::config::ConfigError| {
        MigrateError::Usage(format!("{flag} {}: {e}", path.display()))
    };
    let store = settings.store_config().map_err(usage)?;
    let codec = match settings.key_ring().map_err(usage)? {
        Some(keys) => Codec::with_keys(Arc::new(keys)),
        None => Codec::new(),
    };
    Ok(Opening {
        flag,
        path: path.to_owned(),
        settings,
        store,
        codec,
    })
}

/// How each end is opened: the target as a server would open it; the source brought forward
/// if the Go BBS left it older, but never given a schema; anything only read, read-only.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Source,
    Target,
    Checked,
}

async fn open_side(name: &'static str, opening: Opening, role: Role) -> Result<Side, MigrateError> {
    // The keys are lent to upstream's record-rewriting migrations only when there are keys:
    // without them those migrations must refuse, not rewrite under no key.
    let codec = opening
        .codec
        .keys()
        .is_some()
        .then_some(&opening.codec as &dyn bbs_store::UpgradeCodec);
    let schema = match role {
        Role::Target => bbs_store::SchemaUse::Migrate(codec),
        Role::Source => bbs_store::SchemaUse::Existing(codec),
        Role::Checked => bbs_store::SchemaUse::ReadOnly,
    };
    let store = bbs_store::connect_with(&opening.store, schema)
        .await
        .map_err(|error| MigrateError::Store { side: name, error })?;
    Ok(Side {
        name,
        records: Records::Store(store),
        codec: opening.codec,
    })
}

/// The source read from upstream's etcd-era store named by the config's `etcd_cluster_urls`.
async fn open_etcd_v2(opening: Opening) -> Result<Side, MigrateError> {
    let usage = |e: crate::config::ConfigError| {
        MigrateError::Usage(format!("{} {}: {e}", opening.flag, opening.path.display()))
    };
    let Some(config) = opening.settings.etcd_v2().map_err(usage)? else {
        return Err(MigrateError::Usage(format!(
            "--from-etcd-v2: {} names no etcd_cluster_urls",
            opening.path.display()
        )));
    };
    let etcd = etcd_v2::EtcdV2::connect(&config)?;
    match etcd.version().await? {
        Some(v) if v < etcd_v2::LAST_ETCD_VERSION => {
            return Err(MigrateError::Usage(format!(
                "--from-etcd-v2: the etcd data is at upstream version {v}, before the last \
                 etcd-era migration ({}); let the Go BBS of that era finish its migrations first",
                etcd_v2::LAST_ETCD_VERSION
            )))
        }
        Some(etcd_v2::COPIED_ETCD_VERSION) => eprintln!(
            "note: the etcd data was already copied to SQL once by the Go BBS (version {})",
            etcd_v2::COPIED_ETCD_VERSION
        ),
        _ => {}
    }
    let started = Instant::now();
    let snapshot = etcd
        .snapshot(
            &opening.codec,
            bbs_actors::clock::now_nanos(),
            etcd_v2::Carry { evacuating: true },
        )
        .await?;
    eprintln!(
        "read the etcd v2 store in {:.1} s: {} domains, {} desired LRPs, {} actual LRPs, {} tasks, {} unreadable",
        started.elapsed().as_secs_f64(),
        snapshot.domains.len(),
        snapshot.desired.len(),
        snapshot.actual.len(),
        snapshot.tasks.len(),
        snapshot.unreadable.len()
    );
    Ok(Side {
        name: "source",
        records: Records::EtcdV2(snapshot),
        codec: opening.codec,
    })
}

/// A SQLite source that does not exist would be created empty and "migrated" as such.
fn check_source_exists(config: &StoreConfig) -> Result<(), MigrateError> {
    if config.backend == Backend::Sqlite && !Path::new(&config.connection_string).exists() {
        return Err(MigrateError::Usage(format!(
            "--from: the SQLite database {} does not exist",
            config.connection_string
        )));
    }
    Ok(())
}

fn same_store(a: &StoreConfig, b: &StoreConfig) -> bool {
    a.backend == b.backend
        && a.connection_string.trim() == b.connection_string.trim()
        && a.etcd_root == b.etcd_root
}

fn bar(len: usize, message: String) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_message(message);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:<28} [{bar:30}] {pos}/{len} {per_sec} ({elapsed}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn rate(count: usize, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if count == 0 || secs <= 0.0 {
        return String::from("-");
    }
    format!("{:.0}/s", count as f64 / secs)
}

/// Every source record of one kind, opened, and the target's records of it.
struct Lane<K: RecordKind> {
    opened: Vec<Opened<K::Record>>,
    unreadable: Vec<Unreadable>,
    existing: Inventory,
}

#[derive(Debug, Default)]
struct CopyCounts {
    inserted: usize,
    replaced: usize,
    unchanged: usize,
}

impl<K: RecordKind> Lane<K> {
    async fn load(source: &Side, target: &Side) -> Result<Lane<K>, MigrateError> {
        let started = Instant::now();
        let (records, mut unreadable) = source.read::<K>().await?;
        let mut opened = Vec::with_capacity(records.len());
        for record in records {
            match inventory::open::<K>(&source.codec, record).map_err(|m| m.on(source))? {
                Ok(record) => opened.push(record),
                Err(u) => unreadable.push(u),
            }
        }
        eprintln!(
            "read {} {} from the source in {:.1} s ({} unreadable)",
            opened.len() + unreadable.len(),
            K::NAME,
            started.elapsed().as_secs_f64(),
            unreadable.len()
        );
        let existing = target.inventory::<K>().await?;
        Ok(Lane {
            opened,
            unreadable,
            existing,
        })
    }

    fn existing_count(&self) -> usize {
        self.existing.digests.len() + self.existing.unreadable.len()
    }

    /// The source as this run read it: what the verification compares the target with.
    fn source_inventory(&self) -> Inventory {
        Inventory {
            digests: self
                .opened
                .iter()
                .map(|o| (o.key.clone(), o.digest))
                .collect(),
            unreadable: self.unreadable.clone(),
            stale: Default::default(),
        }
    }

    /// Writes what the target lacks or holds differently, sealed under its key.
    async fn copy(self, target: &Side) -> Result<(CopyCounts, Vec<Unreadable>), MigrateError> {
        let started = Instant::now();
        let progress = bar(self.opened.len(), format!("copying {}", K::NAME));
        let mut counts = CopyCounts::default();
        let mut inserts = Vec::new();
        let mut replaces = Vec::new();
        let target_unreadable: std::collections::BTreeSet<&str> = self
            .existing
            .unreadable
            .iter()
            .map(|u| u.key.as_str())
            .collect();
        for opened in self.opened {
            let Opened {
                key,
                digest,
                mut record,
                payloads,
            } = opened;
            let current = self.existing.digests.get(&key);
            if current == Some(&digest) && !self.existing.stale.contains(&key) {
                counts.unchanged += 1;
                continue;
            }
            for (blob, payload) in K::blobs(&mut record).into_iter().zip(&payloads) {
                *blob = target.codec.seal(payload);
            }
            if current.is_some() || target_unreadable.contains(key.as_str()) {
                replaces.push(record);
            } else {
                inserts.push(record);
            }
        }
        progress.inc(counts.unchanged as u64);
        let write_error = |error| MigrateError::Write {
            kind: K::NAME,
            error,
        };
        let store = target.store()?;
        futures::stream::iter(inserts.chunks(BATCH))
            .map(|batch| async {
                K::insert(store, batch).await.map_err(write_error)?;
                progress.inc(batch.len() as u64);
                count_written(batch.len());
                Ok::<usize, MigrateError>(batch.len())
            })
            .buffer_unordered(K::WRITERS)
            .try_for_each(|n| {
                counts.inserted += n;
                futures::future::ready(Ok(()))
            })
            .await?;
        futures::stream::iter(&replaces)
            .map(|record| async {
                K::replace(store, record).await.map_err(write_error)?;
                progress.inc(1);
                count_written(1);
                Ok::<(), MigrateError>(())
            })
            .buffer_unordered(K::WRITERS)
            .try_for_each(|()| {
                counts.replaced += 1;
                futures::future::ready(Ok(()))
            })
            .await?;
        progress.finish_and_clear();
        let written = counts.inserted + counts.replaced;
        eprintln!(
            "copied {}: {} written ({} new, {} replaced), {} already there, in {:.1} s ({})",
            K::NAME,
            written,
            counts.inserted,
            counts.replaced,
            counts.unchanged,
            started.elapsed().as_secs_f64(),
            rate(written, started.elapsed())
        );
        Ok((counts, self.unreadable))
    }
}

/// The verification of one kind: both sides re-read and compared record by record.
struct Verified {
    kind: &'static str,
    source_count: usize,
    target_count: usize,
    unreadable: Vec<Unreadable>,
    comparison: Comparison,
}

/// Compares the target, read again, with the source's inventory record by record.
async fn compare<K: RecordKind>(
    source: Inventory,
    target: &Side,
) -> Result<Verified, MigrateError> {
    let target_inventory = target.inventory::<K>().await?;
    Ok(Verified {
        kind: K::NAME,
        source_count: source.digests.len() + source.unreadable.len(),
        target_count: target_inventory.digests.len() + target_inventory.unreadable.len(),
        comparison: Comparison::of(&source, &target_inventory),
        unreadable: source.unreadable,
    })
}

async fn verify<K: RecordKind>(source: &Side, target: &Side) -> Result<Verified, MigrateError> {
    compare::<K>(source.inventory::<K>().await?, target).await
}

async fn verify_all(source: &Side, target: &Side) -> Result<Vec<Verified>, MigrateError> {
    Ok(vec![
        verify::<Domains>(source, target).await?,
        verify::<DesiredLrps>(source, target).await?,
        verify::<ActualLrps>(source, target).await?,
        verify::<Tasks>(source, target).await?,
        verify::<Cells>(source, target).await?,
    ])
}

/// Names at most this many keys per list in the report.
const LISTED: usize = 20;

fn list(keys: &[String]) -> String {
    let mut shown: Vec<&str> = keys.iter().take(LISTED).map(String::as_str).collect();
    if keys.len() > LISTED {
        shown.push("...");
    }
    shown.join(", ")
}

/// Prints the verification; true when every record matched and none was unreadable.
fn report(verified: &[Verified]) -> bool {
    let mut clean = true;
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>11}",
        "kind", "source", "target", "matching", "missing", "extra", "different", "unreadable"
    );
    for v in verified {
        let c = &v.comparison;
        println!(
            "{:<16} {:>9} {:>9} {:>9} {:>8} {:>8} {:>10} {:>11}",
            v.kind,
            v.source_count,
            v.target_count,
            c.matching,
            c.missing.len(),
            c.extra.len(),
            c.different.len(),
            v.unreadable.len()
        );
    }
    for v in verified {
        let c = &v.comparison;
        clean &= c.is_clean() && v.unreadable.is_empty();
        for (what, keys) in [
            ("missing from the target", &c.missing),
            ("only in the target", &c.extra),
            ("different in the target", &c.different),
        ] {
            if !keys.is_empty() {
                println!("{} {what}: {}", v.kind, list(keys));
            }
        }
        for u in &v.unreadable {
            println!(
                "unreadable in the source, not copied: {} {}: {}",
                u.kind, u.key, u.error
            );
        }
    }
    println!(
        "verification: {}",
        if clean {
            "every record matches"
        } else {
            "DIFFERENCES (see above)"
        }
    );
    clean
}

fn describe_existing(counts: &[(&str, usize)]) -> Option<String> {
    let held: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    (!held.is_empty()).then(|| held.join(", "))
}

async fn copy_all(source: Side, target: Side, resume: bool) -> Result<bool, MigrateError> {
    let started = Instant::now();
    // Everything is read and opened before the first write: a missing key stops here.
    let domains = Lane::<Domains>::load(&source, &target).await?;
    let desired = Lane::<DesiredLrps>::load(&source, &target).await?;
    let actual = Lane::<ActualLrps>::load(&source, &target).await?;
    let tasks = Lane::<Tasks>::load(&source, &target).await?;
    let cells = Lane::<Cells>::load(&source, &target).await?;
    if !resume {
        if let Some(held) = describe_existing(&[
            (Domains::NAME, domains.existing_count()),
            (DesiredLrps::NAME, desired.existing_count()),
            (ActualLrps::NAME, actual.existing_count()),
            (Tasks::NAME, tasks.existing_count()),
            (Cells::NAME, cells.existing_count()),
        ]) {
            return Err(MigrateError::TargetNotEmpty(held));
        }
    }
    // The source is stopped while it is copied (docs/migration.md), so what was read is what
    // the target must now hold; re-reading it would only lengthen the cut-over.
    let sources = (
        domains.source_inventory(),
        desired.source_inventory(),
        actual.source_inventory(),
        tasks.source_inventory(),
        cells.source_inventory(),
    );
    domains.copy(&target).await?;
    desired.copy(&target).await?;
    actual.copy(&target).await?;
    tasks.copy(&target).await?;
    cells.copy(&target).await?;
    if let Some(keys) = target.codec.keys() {
        target
            .store()?
            .set_configuration(configuration_ids::ENCRYPTION_KEY_LABEL, keys.active_label())
            .await
            .map_err(target.store_error())?;
    }
    eprintln!(
        "copy finished in {:.1} s; verifying",
        started.elapsed().as_secs_f64()
    );
    let verify_started = Instant::now();
    let verified = vec![
        compare::<Domains>(sources.0, &target).await?,
        compare::<DesiredLrps>(sources.1, &target).await?,
        compare::<ActualLrps>(sources.2, &target).await?,
        compare::<Tasks>(sources.3, &target).await?,
        compare::<Cells>(sources.4, &target).await?,
    ];
    eprintln!(
        "verified in {:.1} s ({:.1} s in all)",
        verify_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    Ok(report(&verified))
}

async fn run_async(args: MigrateArgs) -> Result<bool, MigrateError> {
    let from = opening("--from", &args.from)?;
    if !args.from_etcd_v2 {
        check_source_exists(&from.store)?;
    }
    let Some(to_path) = &args.to else {
        if args.from_etcd_v2 {
            return Err(MigrateError::Usage(
                "--verify-only with --from-etcd-v2 compares with a target: give --to".into(),
            ));
        }
        let source = open_side("source", from, Role::Checked).await?;
        return handback::check(&source).await;
    };
    let to = opening("--to", to_path)?;
    if !args.from_etcd_v2 && same_store(&from.store, &to.store) {
        return Err(MigrateError::Usage(
            "--from and --to name the same store".into(),
        ));
    }
    if args.verify_only && args.from_etcd_v2 {
        return Err(MigrateError::Usage(
            "--verify-only cannot re-check an etcd v2 source: its domains' expiry is computed \
             when it is read (now plus the etcd TTL); the copy's own verification checked it"
                .into(),
        ));
    }
    let (source_role, target_role) = if args.verify_only {
        (Role::Checked, Role::Checked)
    } else {
        (Role::Source, Role::Target)
    };
    let source = if args.from_etcd_v2 {
        open_etcd_v2(from).await?
    } else {
        open_side("source", from, source_role).await?
    };
    let target = open_side("target", to, target_role).await?;
    if args.verify_only {
        let verified = verify_all(&source, &target).await?;
        return Ok(report(&verified));
    }
    copy_all(source, target, args.resume).await
}

/// Runs `bbs migrate`; the process exit code: 0 when every record was copied and verified,
/// 1 on any difference, unreadable record or failure, 2 on bad arguments or configuration.
pub fn run(args: MigrateArgs) -> i32 {
    if args.verify_only && args.resume {
        eprintln!("bbs migrate: --verify-only writes nothing, so --resume has no meaning");
        return 2;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bbs migrate: cannot start the runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(run_async(args)) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("bbs migrate: {e}");
            e.exit_code()
        }
    }
}
