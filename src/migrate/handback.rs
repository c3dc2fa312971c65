//! `bbs migrate --verify-only --from CONFIG` without `--to`: whether the database can be handed
//! back to the Go BBS as it is. The Go BBS at its final version reads only MySQL or
//! PostgreSQL, only upstream's exact schema (it runs no migration on a database at its own
//! version), and only AES-GCM (`02`) blobs under a label among its keys.

use bbs_actors::codec::Codec;

use super::inventory::{open, Unreadable};
use super::kinds::{ActualLrps, Cells, DesiredLrps, Domains, RecordKind, Tasks};
use super::{list, MigrateError, Side};
use bbs_store::{configuration_ids, Backend, SCHEMA_VERSION};

/// Records of one kind whose blobs the Go BBS could not read.
struct Foreign {
    kind: &'static str,
    records: usize,
    foreign: Vec<String>,
    unreadable: Vec<Unreadable>,
}

async fn blobs_of<K: RecordKind>(side: &Side) -> Result<Foreign, MigrateError> {
    let (records, _) = side.read::<K>().await?;
    let mut found = Foreign {
        kind: K::NAME,
        records: records.len(),
        foreign: Vec::new(),
        unreadable: Vec::new(),
    };
    for mut record in records {
        let key = K::key(&record);
        if K::blobs(&mut record)
            .iter()
            .any(|blob| !Codec::is_upstream_encoding(blob))
        {
            found.foreign.push(key);
        }
        if let Err(u) = open::<K>(&side.codec, record).map_err(|m| m.on(side))? {
            found.unreadable.push(u);
        }
    }
    Ok(found)
}

pub(super) async fn check(side: &Side) -> Result<bool, MigrateError> {
    let store = side.store()?;
    let mut problems: Vec<String> = Vec::new();
    let backend = store.backend();
    if !matches!(backend, Backend::Mysql | Backend::Postgres) {
        problems.push(format!(
            "the Go BBS keeps its records in MySQL or PostgreSQL only, and this store is {backend}; \
             copy it to one with `bbs migrate` first (docs/migration.md)"
        ));
    }
    match store
        .upstream_schema_differences()
        .await
        .map_err(side.store_error())?
    {
        Some(differences) => problems.extend(
            differences
                .into_iter()
                .map(|d| format!("schema differs from upstream's version {SCHEMA_VERSION}: {d}")),
        ),
        None => println!("schema: no SQL schema to compare on {backend}"),
    }
    let recorded_label = store
        .configuration(configuration_ids::ENCRYPTION_KEY_LABEL)
        .await
        .map_err(side.store_error())?;
    let found = vec![
        blobs_of::<Domains>(side).await?,
        blobs_of::<DesiredLrps>(side).await?,
        blobs_of::<ActualLrps>(side).await?,
        blobs_of::<Tasks>(side).await?,
        blobs_of::<Cells>(side).await?,
    ];
    for kind in &found {
        println!(
            "{}: {} records, {} with blobs the Go BBS cannot read, {} unreadable",
            kind.kind,
            kind.records,
            kind.foreign.len(),
            kind.unreadable.len()
        );
        if !kind.foreign.is_empty() {
            problems.push(format!(
                "{} {} hold blobs not in upstream's AES-GCM (02) format: {}",
                kind.foreign.len(),
                kind.kind,
                list(&kind.foreign)
            ));
        }
        for u in &kind.unreadable {
            problems.push(format!(
                "{} {} cannot be opened: {}",
                u.kind, u.key, u.error
            ));
        }
    }
    match recorded_label.as_deref() {
        Some(label) if !label.is_empty() => println!(
            "recorded encryption_key_label: {label:?} (the Go BBS must have it among its encryption_keys)"
        ),
        _ => println!("recorded encryption_key_label: none"),
    }
    if problems.is_empty() {
        println!("hand-back check: safe to hand back to the Go BBS");
        return Ok(true);
    }
    for problem in &problems {
        println!("problem: {problem}");
    }
    let count = problems.len();
    println!(
        "hand-back check: NOT safe to hand back to the Go BBS ({count} problem{}; \
         docs/migration.md says how to mend each)",
        if count == 1 { "" } else { "s" }
    );
    Ok(false)
}
