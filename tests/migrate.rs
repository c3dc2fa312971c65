//! `bbs migrate` (docs/migration.md): every record copied between every pair of stores in a
//! chain, re-sealed under each target's key, served field for field by a server on the last;
//! a kill half-way and `--resume`; and every refusal (a missing key, an unreadable record, a
//! non-empty or newer target, the same store twice) with nothing written that should not be.

#[macro_use]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bbs_actors::codec::Codec;
use bbs_models as m;
use bbs_store::testing::TestStore;
use bbs_store::{configuration_ids, Backend, Store, StoreConfig};
use serde_json::json;
use support::{config_json, Server};

const UNICODE: &str = "ünïcødé ✓ 日本語 😀";

/// A server config for `store` sealing under `label` (passphrase derived from it), in `dir`.
fn write_config(
    dir: &Path,
    name: &str,
    store: &StoreConfig,
    keys: &[&str],
    format: &str,
) -> PathBuf {
    let encryption_keys: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|label| (label.to_string(), json!(format!("passphrase of {label}"))))
        .collect();
    let config = config_json(
        store,
        json!({
            "active_key_label": keys[0],
            "encryption_keys": encryption_keys,
            "encryption_write_format": format,
        }),
    );
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn bbs_migrate(args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bbs"));
    command.arg("migrate").args(args);
    command
}

fn run(args: &[&std::ffi::OsStr]) -> Output {
    bbs_migrate(args).output().expect("runs bbs migrate")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn migrate(from: &Path, to: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "--from".as_ref(),
        from.as_os_str(),
        "--to".as_ref(),
        to.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run(&args)
}

fn assert_clean(output: &Output) {
    let (stdout, stderr) = text(output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("verification: every record matches"),
        "{stdout}"
    );
}

fn presence(cell: &str) -> m::CellPresence {
    m::CellPresence {
        cell_id: cell.into(),
        rep_address: "http://127.0.0.1:1".into(),
        rep_url: "http://127.0.0.1:1".into(),
        zone: UNICODE.into(),
        capacity: Some(m::CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 100,
        }),
        ..Default::default()
    }
}

fn instance(guid: &str, index: i32) -> (m::ActualLrpKey, m::ActualLrpInstanceKey) {
    (
        m::ActualLrpKey {
            process_guid: guid.into(),
            index,
            domain: "cf-apps".into(),
        },
        m::ActualLrpInstanceKey {
            instance_guid: format!("{guid}-{index}"),
            cell_id: "cell-1".into(),
        },
    )
}

/// Records of every kind through the API: domains, desired LRPs (one with a 1 MiB run info,
/// unicode throughout), claimed, running and evacuating instances, tasks pending, running and
/// completed, and a cell presence.
async fn seed(server: &Server) {
    for (domain, ttl) in [("cf-apps", 0), ("d", 3600)] {
        let reply: m::UpsertDomainResponse = server
            .call(
                "/v1/domains/upsert",
                &m::UpsertDomainRequest {
                    domain: domain.into(),
                    ttl,
                },
            )
            .await;
        assert_eq!(reply.error, None);
    }
    let reply: m::RegisterCellResponse = server
        .call(
            "/v1/cells/register",
            &m::RegisterCellRequest {
                cell_presence: Some(presence("cell-1")),
                ttl_seconds: 3600,
            },
        )
        .await;
    assert_eq!(reply.error, None);
    let mut big = support::fixtures::desired_lrp("big", 1);
    big.annotation = UNICODE.into();
    big.environment_variables = vec![m::EnvironmentVariable {
        name: "HUGE".into(),
        value: "x".repeat(1024 * 1024),
    }];
    let mut web = support::fixtures::desired_lrp("web", 3);
    web.annotation = format!("annotation {UNICODE}");
    for lrp in [big, web] {
        let reply: m::DesiredLrpLifecycleResponse = server
            .call(
                "/v1/desired_lrp/desire.r2",
                &m::DesireLrpRequest {
                    desired_lrp: Some(lrp),
                },
            )
            .await;
        assert_eq!(reply.error, None);
    }
    let web = "web";
    let (key, instance_key) = instance(web, 0);
    let reply: m::ActualLrpLifecycleResponse = server
        .call(
            "/v1/actual_lrps/claim",
            &m::ClaimActualLrpRequest {
                process_guid: key.process_guid.clone(),
                index: key.index,
                actual_lrp_instance_key: Some(instance_key),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    for index in [1, 2] {
        let (key, instance_key) = instance(web, index);
        let reply: m::ActualLrpLifecycleResponse = server
            .call(
                "/v1/actual_lrps/start.r1",
                &m::StartActualLrpRequest {
                    actual_lrp_key: Some(key),
                    actual_lrp_instance_key: Some(instance_key),
                    actual_lrp_net_info: Some(m::ActualLrpNetInfo {
                        address: "10.0.0.1".into(),
                        instance_address: "10.255.0.1".into(),
                        ports: vec![m::PortMapping {
                            container_port: 8080,
                            host_port: 61000 + index as u32,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    availability_zone: UNICODE.into(),
                    ..Default::default()
                },
            )
            .await;
        assert_eq!(reply.error, None);
    }
    // Index 2 evacuates: an evacuating row beside an unclaimed ordinary one.
    let (key, instance_key) = instance(web, 2);
    let reply: m::EvacuationResponse = server
        .call(
            "/v1/actual_lrps/evacuate_running.r1",
            &m::EvacuateRunningActualLrpRequest {
                actual_lrp_key: Some(key),
                actual_lrp_instance_key: Some(instance_key),
                actual_lrp_net_info: Some(m::ActualLrpNetInfo {
                    address: "10.0.0.1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(reply.error, None);
    for guid in ["pending", "running", "completed"] {
        let mut request = support::fixtures::desire_task(guid);
        if let Some(definition) = request.task_definition.as_mut() {
            definition.annotation = UNICODE.into();
        }
        let reply: m::TaskLifecycleResponse = server.call("/v1/tasks/desire.r2", &request).await;
        assert_eq!(reply.error, None);
    }
    for guid in ["running", "completed"] {
        let reply: m::StartTaskResponse = server
            .call(
                "/v1/tasks/start",
                &m::StartTaskRequest {
                    task_guid: guid.into(),
                    cell_id: "cell-1".into(),
                },
            )
            .await;
        assert_eq!(reply.error, None);
    }
    let reply: m::TaskLifecycleResponse = server
        .call(
            "/v1/tasks/complete",
            &m::CompleteTaskRequest {
                task_guid: "completed".into(),
                cell_id: "cell-1".into(),
                result: format!("résultat {UNICODE}"),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(reply.error, None);
}

/// Everything the API serves, in a stable order.
#[derive(Debug, PartialEq)]
struct Served {
    domains: Vec<String>,
    desired: Vec<m::DesiredLrp>,
    actual: Vec<m::ActualLrp>,
    tasks: Vec<m::Task>,
    cells: Vec<m::CellPresence>,
}

async fn served(server: &Server) -> Served {
    let domains: m::DomainsResponse = server.call("/v1/domains/list", &()).await;
    let desired: m::DesiredLrpsResponse = server
        .call(
            "/v1/desired_lrps/list.r3",
            &m::DesiredLrpsRequest::default(),
        )
        .await;
    let actual: m::ActualLrpsResponse = server
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    let tasks: m::TasksResponse = server
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    let cells: m::CellsResponse = server.call("/v1/cells/list.r1", &()).await;
    let mut served = Served {
        domains: domains.domains,
        desired: desired.desired_lrps,
        actual: actual.actual_lrps,
        tasks: tasks.tasks,
        cells: cells.cells,
    };
    served.domains.sort();
    served
        .desired
        .sort_by(|a, b| a.process_guid.cmp(&b.process_guid));
    served.actual.sort_by_key(|a| {
        let key = a.actual_lrp_key.clone().unwrap_or_default();
        (key.process_guid, key.index, a.presence)
    });
    served.tasks.sort_by(|a, b| a.task_guid.cmp(&b.task_guid));
    served.cells.sort_by(|a, b| a.cell_id.cmp(&b.cell_id));
    served
}

/// Every blob's key label in the store.
async fn labels(store: &dyn Store) -> Vec<Option<String>> {
    let mut blobs = Vec::new();
    for t in store.tasks(&Default::default()).await.unwrap() {
        blobs.push(t.task_definition);
    }
    for d in store.desired_lrps(&Default::default()).await.unwrap() {
        blobs.extend([
            d.run_info,
            d.scheduling.routes,
            d.scheduling.volume_placement,
        ]);
        blobs.extend(d.scheduling.metric_tags);
    }
    for a in store.actual_lrps(&Default::default()).await.unwrap() {
        blobs.push(a.net_info);
        blobs.extend(a.internal_routes);
        blobs.extend(a.metric_tags);
    }
    blobs.iter().map(|b| Codec::label_of(b).unwrap()).collect()
}

/// How many records of each kind the store holds.
async fn counts(store: &dyn Store) -> [usize; 5] {
    [
        store.domains().await.unwrap().len(),
        store.desired_lrps(&Default::default()).await.unwrap().len(),
        store.actual_lrps(&Default::default()).await.unwrap().len(),
        store.tasks(&Default::default()).await.unwrap().len(),
        store.cells().await.unwrap().len(),
    ]
}

async fn stores(backends: &[Backend]) -> Option<Vec<TestStore>> {
    let mut stores = Vec::new();
    for backend in backends {
        stores.push(support::test_store(*backend).await?);
    }
    Some(stores)
}

/// SQLite → MySQL (upstream's AES-GCM) → PostgreSQL → etcd → SQLite, each hop under a new
/// key and verified; a server on the last store serves exactly what the first served.
#[actix_web::test]
async fn records_round_trip_through_every_store() {
    let chain = [
        Backend::Sqlite,
        Backend::Mysql,
        Backend::Postgres,
        Backend::Etcd,
        Backend::Sqlite,
    ];
    let Some(stores) = stores(&chain).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let formats = [
        "xchacha20-poly1305",
        "aes-256-gcm",
        "xchacha20-poly1305",
        "aes-256-gcm",
        "xchacha20-poly1305",
    ];
    let configs: Vec<PathBuf> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            write_config(
                dir.path(),
                &format!("hop{i}"),
                &s.config,
                &[&format!("key-{i}")],
                formats[i],
            )
        })
        .collect();

    let config = |i: usize| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&configs[i]).unwrap()).unwrap()
    };
    let mut source = Server::start(config(0)).await;
    seed(&source).await;
    let before = served(&source).await;
    assert_eq!(source.stop(), Some(0));
    assert_eq!(before.actual.len(), 5, "{:?}", before.actual);
    assert_eq!(before.tasks.len(), 3);

    for hop in 1..chain.len() {
        let output = migrate(&configs[hop - 1], &configs[hop], &[]);
        assert_clean(&output);
        let (stdout, stderr) = text(&output);
        assert!(stdout.contains("actual LRPs"), "{stdout}");
        assert!(
            stderr.contains("copied tasks: 3 written (3 new, 0 replaced)"),
            "{stderr}"
        );
        let target = stores[hop].store.as_ref();
        assert_eq!(counts(target).await, [2, 2, 5, 3, 1]);
        let label = format!("key-{hop}");
        assert!(labels(target)
            .await
            .iter()
            .all(|l| l.as_deref() == Some(label.as_str())));
        assert_eq!(
            target
                .configuration(configuration_ids::ENCRYPTION_KEY_LABEL)
                .await
                .unwrap()
                .as_deref(),
            Some(label.as_str())
        );
        // Comparing again writes nothing and finds nothing.
        let verify = run(&[
            "--verify-only".as_ref(),
            "--from".as_ref(),
            configs[hop - 1].as_os_str(),
            "--to".as_ref(),
            configs[hop].as_os_str(),
        ]);
        assert_clean(&verify);
    }
    // The AES-GCM hop wrote upstream's blobs only.
    for task in stores[1].store.tasks(&Default::default()).await.unwrap() {
        assert!(Codec::is_upstream_encoding(&task.task_definition));
    }

    let last = Server::start(config(chain.len() - 1)).await;
    assert_eq!(served(&last).await, before);
}

/// Seeds `n` tasks straight into a store (sealed under `codec`), for the runs that need many.
async fn seed_tasks(store: &dyn Store, codec: &Codec, n: usize) {
    let definition = support::fixtures::desire_task("x").task_definition.unwrap();
    let blob = codec.encode_model(&definition);
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let blob = blob.clone();
            async move {
                store
                    .insert_task(&bbs_store::TaskRecord {
                        guid: format!("task-{i:05}"),
                        domain: "d".into(),
                        created_at: i as i64,
                        updated_at: i as i64,
                        state: 1,
                        task_definition: blob,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
            }
        })
        .await;
}

fn codec(label: &str, format: bbs_actors::keyring::WriteFormat) -> Codec {
    let keys =
        std::collections::BTreeMap::from([(label.to_owned(), format!("passphrase of {label}"))]);
    Codec::with_keys(std::sync::Arc::new(
        bbs_actors::keyring::KeyRing::new(&keys, label, format).unwrap(),
    ))
}

use futures::StreamExt;

/// Killed with SIGKILL half-way (held at a known point by the test-only
/// BBS_MIGRATE_PAUSE_AFTER), the run is refused without --resume and finished with it, every
/// record there once.
#[actix_web::test]
async fn a_killed_migration_finishes_with_resume() {
    let Some(stores) = stores(&[Backend::Sqlite, Backend::Postgres]).await else {
        return;
    };
    let (source, target) = (&stores[0], &stores[1]);
    let dir = tempfile::tempdir().unwrap();
    let from = write_config(
        dir.path(),
        "from",
        &source.config,
        &["a"],
        "xchacha20-poly1305",
    );
    let to = write_config(dir.path(), "to", &target.config, &["b"], "aes-256-gcm");
    seed_tasks(
        source.store.as_ref(),
        &codec("a", bbs_actors::keyring::WriteFormat::XChaCha20Poly1305),
        1000,
    )
    .await;

    let mut child = bbs_migrate(&[
        "--from".as_ref(),
        from.as_os_str(),
        "--to".as_ref(),
        to.as_os_str(),
    ])
    .env("BBS_MIGRATE_PAUSE_AFTER", "300")
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let copied = target.store.tasks(&Default::default()).await.unwrap().len();
        if copied >= 300 {
            break;
        }
        assert!(Instant::now() < deadline, "only {copied} tasks copied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // An INSERT already sent when the process died still commits on the server: wait until
    // the count settles.
    let mut copied = target.store.tasks(&Default::default()).await.unwrap().len();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = target.store.tasks(&Default::default()).await.unwrap().len();
        if now == copied {
            break;
        }
        copied = now;
    }
    assert!((300..1000).contains(&copied), "{copied}");

    let refused = migrate(&from, &to, &[]);
    let (_, stderr) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the target already holds records ({copied} tasks); run with --resume"
        )),
        "{stderr}"
    );

    let resumed = migrate(&from, &to, &["--resume"]);
    assert_clean(&resumed);
    let (_, stderr) = text(&resumed);
    assert!(
        stderr.contains(&format!(
            "copied tasks: {} written ({} new, 0 replaced), {copied} already there",
            1000 - copied,
            1000 - copied
        )),
        "{stderr}"
    );
    assert_eq!(counts(target.store.as_ref()).await, [0, 0, 0, 1000, 0]);
    // Resuming a finished migration writes nothing.
    let again = migrate(&from, &to, &["--resume"]);
    assert_clean(&again);
    assert!(text(&again)
        .1
        .contains("copied tasks: 0 written (0 new, 0 replaced), 1000 already there"));
}

/// A changed record in the target is found by --verify-only and replaced by --resume.
#[actix_web::test]
async fn verification_finds_a_changed_record_and_resume_mends_it() {
    let Some(stores) = stores(&[Backend::Etcd, Backend::Mysql]).await else {
        return;
    };
    let (source, target) = (&stores[0], &stores[1]);
    let dir = tempfile::tempdir().unwrap();
    let from = write_config(dir.path(), "from", &source.config, &["a"], "aes-256-gcm");
    let to = write_config(
        dir.path(),
        "to",
        &target.config,
        &["b"],
        "xchacha20-poly1305",
    );
    seed_tasks(
        source.store.as_ref(),
        &codec("a", bbs_actors::keyring::WriteFormat::UpstreamAesGcm),
        5,
    )
    .await;
    assert_clean(&migrate(&from, &to, &[]));
    let mut task = target.store.task("task-00002").await.unwrap().unwrap();
    task.result = "changed".into();
    target.store.update_task(&task).await.unwrap();
    target
        .store
        .insert_task(&bbs_store::TaskRecord {
            guid: "only-in-target".into(),
            ..task.clone()
        })
        .await
        .unwrap();

    let verify = run(&[
        "--verify-only".as_ref(),
        "--from".as_ref(),
        from.as_os_str(),
        "--to".as_ref(),
        to.as_os_str(),
    ]);
    let (stdout, _) = text(&verify);
    assert_eq!(verify.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("tasks different in the target: task-00002"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tasks only in the target: only-in-target"),
        "{stdout}"
    );
    assert!(stdout.contains("verification: DIFFERENCES"), "{stdout}");

    let resumed = migrate(&from, &to, &["--resume"]);
    let (stdout, stderr) = text(&resumed);
    assert!(
        stderr.contains("copied tasks: 1 written (0 new, 1 replaced), 4 already there"),
        "{stderr}"
    );
    // What only the target holds is reported, never deleted.
    assert_eq!(resumed.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("tasks only in the target: only-in-target"),
        "{stdout}"
    );
    assert!(!stdout.contains("task-00002"), "{stdout}");
    assert_eq!(
        target
            .store
            .task("task-00002")
            .await
            .unwrap()
            .unwrap()
            .result,
        ""
    );
}

/// A source sealed under a label --from lacks stops the run before anything is written,
/// naming the label.
#[actix_web::test]
async fn a_missing_key_stops_before_writing() {
    let Some(stores) = stores(&[Backend::Postgres, Backend::Sqlite]).await else {
        return;
    };
    let (source, target) = (&stores[0], &stores[1]);
    let dir = tempfile::tempdir().unwrap();
    source
        .store
        .upsert_domain(&bbs_store::DomainRecord {
            domain: "d".into(),
            expire_time: i64::MAX,
        })
        .await
        .unwrap();
    let writer = codec(
        "old-key",
        bbs_actors::keyring::WriteFormat::XChaCha20Poly1305,
    );
    seed_tasks(source.store.as_ref(), &writer, 3).await;
    let from = write_config(
        dir.path(),
        "from",
        &source.config,
        &["new-key"],
        "aes-256-gcm",
    );
    let to = write_config(dir.path(), "to", &target.config, &["t"], "aes-256-gcm");
    let output = migrate(&from, &to, &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "bbs migrate: the source holds tasks sealed with key label \"old-key\" (first: \
             task-00000), which is not among --from's encryption_keys; nothing was written"
        ),
        "{stderr}"
    );
    assert_eq!(counts(target.store.as_ref()).await, [0, 0, 0, 0, 0]);
}

/// A record that cannot be opened is named by kind and key; the rest is copied and the run
/// exits non-zero.
#[actix_web::test]
async fn an_unreadable_record_is_reported_and_the_rest_copied() {
    let Some(stores) = stores(&[Backend::Mysql, Backend::Etcd]).await else {
        return;
    };
    let (source, target) = (&stores[0], &stores[1]);
    let dir = tempfile::tempdir().unwrap();
    let writer = codec("a", bbs_actors::keyring::WriteFormat::UpstreamAesGcm);
    seed_tasks(source.store.as_ref(), &writer, 4).await;
    source
        .store
        .insert_task(&bbs_store::TaskRecord {
            guid: "broken".into(),
            domain: "d".into(),
            state: 1,
            task_definition: "02bm90IGEgYmxvYg==".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let from = write_config(dir.path(), "from", &source.config, &["a"], "aes-256-gcm");
    let to = write_config(dir.path(), "to", &target.config, &["b"], "aes-256-gcm");
    let output = migrate(&from, &to, &[]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("unreadable in the source, not copied: tasks broken: "),
        "{stdout}"
    );
    let row: Vec<&str> = stdout
        .lines()
        .find(|l| l.starts_with("tasks "))
        .unwrap()
        .split_whitespace()
        .collect();
    // kind, source, target, matching, missing, extra, different, unreadable
    assert_eq!(
        row,
        ["tasks", "5", "4", "4", "0", "0", "0", "1"],
        "{stdout}"
    );
    assert_eq!(counts(target.store.as_ref()).await, [0, 0, 0, 4, 0]);
}

/// Refusals that write nothing: a target at a newer schema version, the same store on both
/// sides, a SQLite source that does not exist, a bad config, --resume with --verify-only.
#[actix_web::test]
async fn bad_targets_and_arguments_are_refused() {
    let Some(stores) = stores(&[Backend::Sqlite, Backend::Postgres]).await else {
        return;
    };
    let (source, target) = (&stores[0], &stores[1]);
    let dir = tempfile::tempdir().unwrap();
    seed_tasks(
        source.store.as_ref(),
        &codec("a", bbs_actors::keyring::WriteFormat::XChaCha20Poly1305),
        2,
    )
    .await;
    let from = write_config(
        dir.path(),
        "from",
        &source.config,
        &["a"],
        "xchacha20-poly1305",
    );
    let to = write_config(dir.path(), "to", &target.config, &["b"], "aes-256-gcm");

    let newer = bbs_store::SCHEMA_VERSION + 1;
    target
        .store
        .set_configuration(
            configuration_ids::VERSION,
            &format!(r#"{{"CurrentVersion":{newer}}}"#),
        )
        .await
        .unwrap();
    let output = migrate(&from, &to, &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "bbs migrate: target: unrecoverable store error: Existing DB version ({newer}) \
             exceeds bbs version ({})",
            bbs_store::SCHEMA_VERSION
        )),
        "{stderr}"
    );
    assert_eq!(counts(target.store.as_ref()).await, [0, 0, 0, 0, 0]);

    let output = migrate(&from, &from, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output).1.trim(),
        "bbs migrate: --from and --to name the same store"
    );

    let missing = dir.path().join("missing.json");
    let gone = StoreConfig {
        connection_string: dir.path().join("nowhere.db").display().to_string(),
        ..source.config.clone()
    };
    let from_gone = write_config(dir.path(), "gone", &gone, &["a"], "xchacha20-poly1305");
    let output = migrate(&from_gone, &to, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output).1.trim(),
        format!(
            "bbs migrate: --from: the SQLite database {} does not exist",
            gone.connection_string
        )
    );
    assert!(!Path::new(&gone.connection_string).exists());

    let output = migrate(&missing, &to, &[]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output).1.trim(),
        format!(
            "bbs migrate: --from {}: config file {} does not exist",
            missing.display(),
            missing.display()
        )
    );

    let output = migrate(&from, &to, &["--verify-only", "--resume"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output).1.trim(),
        "bbs migrate: --verify-only writes nothing, so --resume has no meaning"
    );
}

/// The hand-back check: a database this server wrote in its own format is not ready for the
/// Go BBS and says why; copied under upstream's AES-GCM it is; SQLite never is; a schema
/// that departs from upstream's is named.
#[actix_web::test]
async fn the_hand_back_check_names_what_the_go_bbs_cannot_read() {
    let Some(stores) = stores(&[Backend::Mysql, Backend::Mysql, Backend::Sqlite]).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ours = write_config(
        dir.path(),
        "ours",
        &stores[0].config,
        &["a"],
        "xchacha20-poly1305",
    );
    let upstream = write_config(
        dir.path(),
        "upstream",
        &stores[1].config,
        &["b"],
        "aes-256-gcm",
    );
    let sqlite = write_config(
        dir.path(),
        "sqlite",
        &stores[2].config,
        &["c"],
        "aes-256-gcm",
    );
    seed_tasks(
        stores[0].store.as_ref(),
        &codec("a", bbs_actors::keyring::WriteFormat::XChaCha20Poly1305),
        3,
    )
    .await;
    let check = |config: &Path| {
        run(&[
            "--verify-only".as_ref(),
            "--from".as_ref(),
            config.as_os_str(),
        ])
    };

    let output = check(&ours);
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "problem: 3 tasks hold blobs not in upstream's AES-GCM (02) format: task-00000, \
             task-00001, task-00002"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("hand-back check: NOT safe to hand back to the Go BBS (1 problem;"),
        "{stdout}"
    );

    assert_clean(&migrate(&ours, &upstream, &[]));
    let output = check(&upstream);
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("recorded encryption_key_label: \"b\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("hand-back check: safe to hand back to the Go BBS"),
        "{stdout}"
    );

    stores[1]
        .raw_sql("ALTER TABLE tasks MODIFY rejection_reason VARCHAR(255) NOT NULL DEFAULT ''")
        .await;
    let output = check(&upstream);
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "problem: schema differs from upstream's version 1772581987: missing: \
             tasks.rejection_reason varchar(1024) NO ''"
        ),
        "{stdout}"
    );

    assert_clean(&migrate(&upstream, &sqlite, &[]));
    let output = check(&sqlite);
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "problem: the Go BBS keeps its records in MySQL or PostgreSQL only, and this store \
             is sqlite"
        ),
        "{stdout}"
    );
}

/// The etcd-era keyspace the tests lay out, and what it should serve.
struct EtcdEra {
    desired: m::DesiredLrp,
    tasks: Vec<m::Task>,
    /// Ordinary instances, then the evacuating one.
    actual: Vec<m::ActualLrp>,
}

fn etcd_era_lrp(index: i32, state: &str, cell: &str) -> m::ActualLrp {
    m::ActualLrp {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: "web".into(),
            index,
            domain: "cf-apps".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: if cell.is_empty() {
                String::new()
            } else {
                format!("ig-{index}-{cell}")
            },
            cell_id: cell.into(),
        }),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: if cell.is_empty() { "" } else { "10.0.0.9" }.into(),
            ..Default::default()
        }),
        state: state.into(),
        since: 1_450_000_000_000_000_000 + index as i64,
        modification_tag: Some(m::ModificationTag {
            epoch: format!("epoch-{index}"),
            index: 4,
        }),
        ..Default::default()
    }
}

/// Upstream's etcd-era keyspace as the Go BBS wrote it (bbs-reference §7.4): serialized models
/// sealed with AES-GCM (`02`) under the label `go-key`, one task from before encryption
/// (`01`), a domain with a TTL and one without, an instance evacuating beside its
/// replacement, `/version` at the last etcd-era migration.
async fn lay_out_etcd_era(etcd: &support::etcd_v2::EtcdV2) -> EtcdEra {
    let sealed = codec("go-key", bbs_actors::keyring::WriteFormat::UpstreamAesGcm);
    let plain = Codec::new();
    etcd.put("/version", r#"{"CurrentVersion":1451635200}"#, None)
        .await;
    etcd.put("/encryption-key", "go-key", None).await;
    etcd.put("/v1/domain/cf-apps", "", Some(3600)).await;
    etcd.put("/v1/domain/no-ttl", "", None).await;

    let mut lrp = support::fixtures::desired_lrp("web", 2);
    lrp.annotation = UNICODE.into();
    let mut routes = m::ProtoRoutes::default();
    routes.routes.insert(
        "cf-router".into(),
        br#"[{"hostnames":["web.example.com"],"port":8080}]"#.to_vec(),
    );
    lrp.routes = Some(routes);
    let entry = bbs_actors::rules::desired_lrps::split(
        &lrp,
        "etcd-epoch".into(),
        1_450_000_000_000_000_000,
    );
    let mut run_info = entry.run_info.unpack();
    run_info.metric_tags = (*entry.metric_tags).clone().into_iter().collect();
    etcd.put(
        "/v1/desired_lrp/schedule/web",
        &sealed.encode_model(&*entry.scheduling),
        None,
    )
    .await;
    etcd.put(
        "/v1/desired_lrp/run/web",
        &sealed.encode_model(&run_info),
        None,
    )
    .await;

    let actual = vec![
        etcd_era_lrp(0, "UNCLAIMED", ""),
        etcd_era_lrp(1, "RUNNING", "cell-1"),
        etcd_era_lrp(0, "RUNNING", "draining-cell"),
    ];
    etcd.put(
        "/v1/actual/web/0/instance",
        &sealed.encode_model(&actual[0]),
        None,
    )
    .await;
    etcd.put(
        "/v1/actual/web/1/instance",
        &sealed.encode_model(&actual[1]),
        None,
    )
    .await;
    etcd.put(
        "/v1/actual/web/0/evacuating",
        &sealed.encode_model(&actual[2]),
        Some(600),
    )
    .await;

    let mut tasks = Vec::new();
    for (guid, state, codec) in [("t-sealed", 1, &sealed), ("t-plain", 3, &plain)] {
        let task = m::Task {
            task_guid: guid.into(),
            domain: "d".into(),
            task_definition: support::fixtures::desire_task(guid).task_definition,
            created_at: 1_450_000_000_000_000_000,
            updated_at: 1_450_000_000_000_000_001,
            state,
            result: if state == 3 {
                UNICODE.into()
            } else {
                String::new()
            },
            ..Default::default()
        };
        etcd.put(
            &format!("/v1/task/{guid}"),
            &codec.encode_model(&task),
            None,
        )
        .await;
        tasks.push(task);
    }
    EtcdEra {
        // Full reads fill in the metrics guid from the source_id tag, as upstream does.
        desired: bbs_actors::rules::desired_lrps::populate_metrics_guid(
            bbs_actors::rules::desired_lrps::rebuild(&entry),
        ),
        tasks,
        actual,
    }
}

/// A config whose `etcd_cluster_urls` names `etcd`, with the Go BBS's key, on `store`.
fn etcd_era_config(store: &StoreConfig, etcd: &support::etcd_v2::EtcdV2) -> serde_json::Value {
    config_json(
        store,
        json!({
            "etcd_cluster_urls": [etcd.url],
            "active_key_label": "go-key",
            "encryption_keys": {"go-key": "passphrase of go-key"},
            "encryption_write_format": "aes-256-gcm",
        }),
    )
}

async fn served_desired(server: &Server) -> Vec<m::DesiredLrp> {
    let reply: m::DesiredLrpsResponse = server
        .call(
            "/v1/desired_lrps/list.r3",
            &m::DesiredLrpsRequest::default(),
        )
        .await;
    reply.desired_lrps
}

/// `bbs migrate --from-etcd-v2` takes an etcd-era store straight to PostgreSQL: every record
/// served as the Go BBS served it, the evacuating instance kept; a node that does not decode
/// is named and the run exits non-zero after copying the rest.
#[actix_web::test]
async fn an_etcd_era_store_is_migrated_to_sql() {
    let Some(stores) = stores(&[
        Backend::Etcd,
        Backend::Postgres,
        Backend::Sqlite,
        Backend::Sqlite,
    ])
    .await
    else {
        return;
    };
    let etcd = support::etcd_v2::EtcdV2::start().await;
    let era = lay_out_etcd_era(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("etcd-era.json");
    std::fs::write(&from, etcd_era_config(&stores[2].config, &etcd).to_string()).unwrap();
    let to = write_config(
        dir.path(),
        "to",
        &stores[1].config,
        &["new-key"],
        "xchacha20-poly1305",
    );

    let output = migrate(&from, &to, &["--from-etcd-v2"]);
    assert_clean(&output);
    let (_, stderr) = text(&output);
    assert!(stderr.contains("read the etcd v2 store in"), "{stderr}");
    assert!(
        stderr.contains("2 domains, 1 desired LRPs, 3 actual LRPs, 2 tasks, 0 unreadable"),
        "{stderr}"
    );
    assert_eq!(counts(stores[1].store.as_ref()).await, [2, 1, 3, 2, 0]);
    // Nothing is written to the etcd-era store.
    assert_eq!(
        etcd.get("/version").await.as_deref(),
        Some(r#"{"CurrentVersion":1451635200}"#)
    );

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&to).unwrap()).unwrap();
    let server = Server::start(config).await;
    assert_eq!(
        served_desired(&server).await,
        std::slice::from_ref(&era.desired)
    );
    let actual: m::ActualLrpsResponse = server
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    let mut expected = era.actual.clone();
    expected[2].presence = m::actual_lrp::Presence::Evacuating as i32;
    for lrp in &mut expected {
        lrp.optional_routable = Some(m::actual_lrp::OptionalRoutable::Routable(
            lrp.state == "RUNNING",
        ));
    }
    let order = |a: &m::ActualLrp| {
        (
            a.actual_lrp_key.clone().unwrap_or_default().index,
            a.presence,
        )
    };
    expected.sort_by_key(order);
    let mut got = actual.actual_lrps;
    got.sort_by_key(order);
    assert_eq!(got, expected);
    let tasks: m::TasksResponse = server
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    let mut got = tasks.tasks;
    got.sort_by(|a, b| b.task_guid.cmp(&a.task_guid));
    assert_eq!(got, era.tasks);
    // Upstream's rule: expiry is now plus the etcd TTL, so a domain without one is stale as
    // soon as the clock, rounded to the second as upstream compares it, passes the copy.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let domains: m::DomainsResponse = server.call("/v1/domains/list", &()).await;
        if domains.domains == ["cf-apps"] || std::time::Instant::now() > deadline {
            assert_eq!(domains.domains, ["cf-apps"]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    etcd.put("/v1/task/broken", "02bm90IGEgYmxvYg==", None)
        .await;
    let to = write_config(
        dir.path(),
        "to2",
        &stores[3].config,
        &["k"],
        "xchacha20-poly1305",
    );
    let output = migrate(&from, &to, &["--from-etcd-v2"]);
    let (stdout, _) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("unreadable in the source, not copied: tasks /v1/task/broken: "),
        "{stdout}"
    );
    assert_eq!(counts(stores[3].store.as_ref()).await, [2, 1, 3, 2, 0]);
}

/// Upstream's start-up behaviour: a BBS with both the etcd-era store and an empty SQL store
/// copies once (evacuating instances dropped, as upstream's copy did) and marks etcd copied;
/// the next start copies nothing; etcd data from before the last etcd-era migration stops
/// start-up.
#[actix_web::test]
async fn a_server_with_both_stores_copies_once_at_start() {
    let Some(stores) = stores(&[Backend::Etcd, Backend::Mysql]).await else {
        return;
    };
    let etcd = support::etcd_v2::EtcdV2::start().await;
    let era = lay_out_etcd_era(&etcd).await;
    let config = etcd_era_config(&stores[1].config, &etcd);

    let mut server = Server::start(config.clone()).await;
    assert!(server.log().contains("etcd-v2-copied"), "{}", server.log());
    assert_eq!(
        served_desired(&server).await,
        std::slice::from_ref(&era.desired)
    );
    let actual: m::ActualLrpsResponse = server
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    assert_eq!(actual.actual_lrps.len(), 2);
    assert!(actual
        .actual_lrps
        .iter()
        .all(|a| a.presence == m::actual_lrp::Presence::Ordinary as i32));
    assert_eq!(
        etcd.get("/version").await.as_deref(),
        Some(r#"{"CurrentVersion":1451635201}"#)
    );
    assert_eq!(server.stop(), Some(0));

    let mut again = Server::start(config.clone()).await;
    assert!(
        again.log().contains("etcd-v2-nothing-to-copy"),
        "{}",
        again.log()
    );
    assert_eq!(counts(stores[1].store.as_ref()).await, [2, 1, 2, 2, 0]);
    assert_eq!(again.stop(), Some(0));

    let old = support::etcd_v2::EtcdV2::start().await;
    old.put("/version", r#"{"CurrentVersion":1441411196}"#, None)
        .await;
    let mut refused = Server::spawn(etcd_era_config(&stores[1].config, &old));
    assert_eq!(refused.stop_when_exited(Duration::from_secs(30)), Some(1));
    assert!(
        refused.log().contains(
            "the etcd data is at upstream version 1441411196, before the last etcd-era \
             migration (1451635200); let the Go BBS of that era finish its migrations first"
        ),
        "{}",
        refused.log()
    );
}

/// A database as the oldest SQL-era Go BBS (schema 1461790966) wrote it, rows and all:
/// plaintext routes, metric tags only inside the run info, evacuation as a flag. A server
/// started on it runs upstream's remaining migrations and serves every record field for field.
async fn a_go_bbs_database_at_the_oldest_version_is_served(backend: Backend) {
    if !bbs_store::testing::enabled(backend) {
        return;
    }
    let old = bbs_store::testing::UpstreamDatabase::at(backend, 1_461_790_966).await;
    let sealed = codec("go-key", bbs_actors::keyring::WriteFormat::UpstreamAesGcm);

    let mut lrp = support::fixtures::desired_lrp("web", 2);
    lrp.annotation = UNICODE.into();
    lrp.log_guid = "log-guid".into();
    lrp.memory_mb = 256;
    lrp.disk_mb = 1024;
    let mut routes = m::ProtoRoutes::default();
    routes.routes.insert(
        "cf-router".into(),
        br#"[{"hostnames":["web.example.com"],"port":8080}]"#.to_vec(),
    );
    lrp.routes = Some(routes);
    let entry = bbs_actors::rules::desired_lrps::split(&lrp, "go-epoch".into(), 1);
    let mut run_info = entry.run_info.unpack();
    run_info.metric_tags = (*entry.metric_tags).clone().into_iter().collect();
    let s = &entry.scheduling;
    let net = m::ActualLrpNetInfo {
        address: "10.0.0.7".into(),
        ports: vec![m::PortMapping {
            container_port: 8080,
            host_port: 61001,
            ..Default::default()
        }],
        ..Default::default()
    };
    let definition = support::fixtures::desire_task("t").task_definition.unwrap();
    old.raw_sql(&format!(
        "INSERT INTO domains (domain, expire_time) VALUES ('cf-apps', 9223372036854775807);
         INSERT INTO desired_lrps (process_guid, domain, log_guid, annotation, instances,
           memory_mb, disk_mb, rootfs, routes, volume_placement, modification_tag_epoch,
           modification_tag_index, run_info)
         VALUES ('web', 'cf-apps', 'log-guid', '{annotation}', 2, 256, 1024,
           'preloaded:cflinuxfs4', '{{\"cf-router\":[{{\"hostnames\":[\"web.example.com\"],\"port\":8080}}]}}',
           '{volume}', 'go-epoch', 0, '{run}');
         INSERT INTO actual_lrps (process_guid, instance_index, evacuating, domain, state,
           instance_guid, cell_id, placement_error, since, net_info, modification_tag_epoch,
           modification_tag_index, crash_count, crash_reason, expire_time)
         VALUES ('web', 0, false, 'cf-apps', 'RUNNING', 'ig-0', 'cell-1', '', 7, '{net}',
                 'e0', 3, 0, '', 0),
                ('web', 0, true, 'cf-apps', 'RUNNING', 'ig-old', 'draining', '', 6, '{net}',
                 'e0', 2, 1, 'oom', 0),
                ('web', 1, false, 'cf-apps', 'UNCLAIMED', '', '', 'insufficient resources',
                 5, '{empty_net}', 'e1', 1, 0, '', 0);
         INSERT INTO tasks (guid, domain, updated_at, created_at, first_completed_at, state,
           cell_id, result, failed, failure_reason, task_definition)
         VALUES ('t', 'd', 20, 10, 15, 3, 'cell-1', '{annotation}', true, 'exit 1', '{task}')",
        annotation = UNICODE,
        volume = sealed.encode_model(&s.volume_placement.clone().unwrap_or_default()),
        run = sealed.encode_model(&run_info),
        net = sealed.encode_model(&net),
        empty_net = sealed.encode_model(&m::ActualLrpNetInfo::default()),
        task = sealed.encode_model(&definition),
    ))
    .await;

    let config = config_json(
        &old.config,
        json!({
            "active_key_label": "go-key",
            "encryption_keys": {"go-key": "passphrase of go-key"},
            "encryption_write_format": "aes-256-gcm",
        }),
    );
    let server = Server::start(config).await;
    assert_eq!(
        served_desired(&server).await,
        [bbs_actors::rules::desired_lrps::populate_metrics_guid(
            bbs_actors::rules::desired_lrps::rebuild(&entry)
        )]
    );

    let instance = |index: i32, guid: &str, cell: &str, state: &str| m::ActualLrp {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: "web".into(),
            index,
            domain: "cf-apps".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: guid.into(),
            cell_id: cell.into(),
        }),
        actual_lrp_net_info: Some(net.clone()),
        state: state.into(),
        optional_routable: Some(m::actual_lrp::OptionalRoutable::Routable(
            state == "RUNNING",
        )),
        ..Default::default()
    };
    let expected = vec![
        m::ActualLrp {
            since: 7,
            modification_tag: Some(m::ModificationTag {
                epoch: "e0".into(),
                index: 3,
            }),
            ..instance(0, "ig-0", "cell-1", "RUNNING")
        },
        m::ActualLrp {
            since: 6,
            crash_count: 1,
            crash_reason: "oom".into(),
            presence: m::actual_lrp::Presence::Evacuating as i32,
            modification_tag: Some(m::ModificationTag {
                epoch: "e0".into(),
                index: 2,
            }),
            ..instance(0, "ig-old", "draining", "RUNNING")
        },
        m::ActualLrp {
            since: 5,
            placement_error: "insufficient resources".into(),
            actual_lrp_net_info: Some(m::ActualLrpNetInfo::default()),
            modification_tag: Some(m::ModificationTag {
                epoch: "e1".into(),
                index: 1,
            }),
            ..instance(1, "", "", "UNCLAIMED")
        },
    ];
    let actual: m::ActualLrpsResponse = server
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    let mut got = actual.actual_lrps;
    got.sort_by_key(|a| {
        (
            a.actual_lrp_key.clone().unwrap_or_default().index,
            a.presence,
        )
    });
    assert_eq!(got, expected);

    let tasks: m::TasksResponse = server
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    assert_eq!(
        tasks.tasks,
        [m::Task {
            task_definition: Some(definition),
            task_guid: "t".into(),
            domain: "d".into(),
            created_at: 10,
            updated_at: 20,
            first_completed_at: 15,
            state: 3,
            cell_id: "cell-1".into(),
            result: UNICODE.into(),
            failed: true,
            failure_reason: "exit 1".into(),
            ..Default::default()
        }]
    );
    let domains: m::DomainsResponse = server.call("/v1/domains/list", &()).await;
    assert_eq!(domains.domains, ["cf-apps"]);
}

#[actix_web::test]
async fn a_go_bbs_mysql_database_at_the_oldest_version_is_served() {
    a_go_bbs_database_at_the_oldest_version_is_served(Backend::Mysql).await
}

#[actix_web::test]
async fn a_go_bbs_postgres_database_at_the_oldest_version_is_served() {
    a_go_bbs_database_at_the_oldest_version_is_served(Backend::Postgres).await
}

/// The etcd-era source's refusals: a config that names no cluster, --verify-only without a
/// target, an etcd without the v2 API, and etcd data older than the last etcd-era migration.
#[actix_web::test]
async fn bad_etcd_era_sources_are_refused() {
    let Some(stores) = stores(&[Backend::Etcd, Backend::Sqlite]).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let to = write_config(
        dir.path(),
        "to",
        &stores[1].config,
        &["k"],
        "xchacha20-poly1305",
    );
    let run_from = |from: &Path, extra: &[&str]| migrate(from, &to, extra);

    let no_cluster = write_config(
        dir.path(),
        "plain",
        &stores[1].config,
        &["k"],
        "aes-256-gcm",
    );
    let output = run_from(&no_cluster, &["--from-etcd-v2"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output).1.trim(),
        format!(
            "bbs migrate: --from-etcd-v2: {} names no etcd_cluster_urls",
            no_cluster.display()
        )
    );

    let output = run(&[
        "--verify-only".as_ref(),
        "--from-etcd-v2".as_ref(),
        "--from".as_ref(),
        no_cluster.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output).1.trim(),
        "bbs migrate: --verify-only with --from-etcd-v2 compares with a target: give --to"
    );

    // The shared etcd runs without --enable-v2.
    let v3_only = dir.path().join("v3-only.json");
    let mut config = etcd_era_config(
        &stores[1].config,
        &support::etcd_v2::EtcdV2::at(&stores[0].config.connection_string),
    );
    config["etcd_cluster_urls"] = json!([stores[0].config.connection_string]);
    std::fs::write(&v3_only, config.to_string()).unwrap();
    let output = run_from(&v3_only, &["--from-etcd-v2"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bbs migrate: source: etcd v2 /version: HTTP 404 Not Found (is the v2 API enabled? etcd 3.4 needs --enable-v2)"),
        "{stderr}"
    );

    let old = support::etcd_v2::EtcdV2::start().await;
    old.put("/version", r#"{"CurrentVersion":1442529338}"#, None)
        .await;
    let too_old = dir.path().join("too-old.json");
    std::fs::write(
        &too_old,
        etcd_era_config(&stores[1].config, &old).to_string(),
    )
    .unwrap();
    let output = run_from(&too_old, &["--from-etcd-v2"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        text(&output).1.trim(),
        "bbs migrate: --from-etcd-v2: the etcd data is at upstream version 1442529338, before \
         the last etcd-era migration (1451635200); let the Go BBS of that era finish its \
         migrations first"
    );
    assert_eq!(counts(stores[1].store.as_ref()).await, [0, 0, 0, 0, 0]);
}

/// bbs-reference §6.2, read independently of the server's codec: `"02"`, then standard
/// base64 of `[label length][label][12-byte nonce][AES-256-GCM ciphertext + tag]`, key =
/// SHA-256 of the passphrase. Returns the label and the plaintext.
fn go_open(blob: &str, passphrase: &str) -> (String, Vec<u8>) {
    use base64::Engine;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let body = blob
        .strip_prefix("02")
        .unwrap_or_else(|| panic!("not upstream's encoding: {blob:.20}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("standard padded base64");
    let label_len = raw[0] as usize;
    let label = String::from_utf8(raw[1..1 + label_len].to_vec()).unwrap();
    let nonce: [u8; 12] = raw[1 + label_len..13 + label_len].try_into().unwrap();
    let mut sealed = raw[13 + label_len..].to_vec();
    let key = ring::digest::digest(&ring::digest::SHA256, passphrase.as_bytes());
    let aes = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_ref()).unwrap());
    let plain = aes
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .expect("opens with the passphrase's SHA-256");
    (label, plain.to_vec())
}

/// A serialized model per §6.2: the envelope `[2 (protobuf), version]`, then the message.
fn go_model<M: prost::Message + Default>(blob: &str, passphrase: &str) -> M {
    let (label, plain) = go_open(blob, passphrase);
    assert_eq!(label, "go-key");
    assert_eq!(plain[0], 2, "protobuf envelope");
    M::decode(&plain[2..]).expect("the model")
}

fn go_json(blob: &str, passphrase: &str) -> serde_json::Value {
    let (label, plain) = go_open(blob, passphrase);
    assert_eq!(label, "go-key");
    serde_json::from_slice(&plain).expect("JSON")
}

/// What this server writes with `encryption_write_format: aes-256-gcm` is upstream's format,
/// as an independent reader built from bbs-reference §6.2 and §7.2 sees it: every blob column
/// of every kind, and the configurations rows.
async fn upstream_format_writes_decode_independently(backend: Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let passphrase = "passphrase of go-key";
    let mut server = Server::start(config_json(
        &store.config,
        json!({
            "active_key_label": "go-key",
            "encryption_keys": {"go-key": passphrase},
            "encryption_write_format": "aes-256-gcm",
        }),
    ))
    .await;
    seed(&server).await;
    let served = served(&server).await;
    assert_eq!(server.stop(), Some(0));
    let s = store.store.as_ref();

    for task in s.tasks(&Default::default()).await.unwrap() {
        let want = served
            .tasks
            .iter()
            .find(|t| t.task_guid == task.guid)
            .unwrap();
        let definition: m::TaskDefinition = go_model(&task.task_definition, passphrase);
        assert_eq!(Some(definition), want.task_definition);
    }
    for record in s.desired_lrps(&Default::default()).await.unwrap() {
        let want = served
            .desired
            .iter()
            .find(|d| d.process_guid == record.scheduling.process_guid)
            .unwrap();
        let run_info: m::DesiredLrpRunInfo = go_model(&record.run_info, passphrase);
        assert_eq!(run_info.environment_variables, want.environment_variables);
        assert_eq!(run_info.action, want.action);
        let placement: m::VolumePlacement =
            go_model(&record.scheduling.volume_placement, passphrase);
        assert_eq!(placement, m::VolumePlacement::default());
        assert_eq!(go_json(&record.scheduling.routes, passphrase), json!({}));
        assert_eq!(
            go_json(
                record.scheduling.metric_tags.as_deref().unwrap(),
                passphrase
            ),
            json!({"source_id": {"static": "s"}})
        );
        assert_eq!(record.scheduling.annotation, want.annotation);
    }
    for record in s.actual_lrps(&Default::default()).await.unwrap() {
        let want = served
            .actual
            .iter()
            .find(|a| {
                let key = a.actual_lrp_key.clone().unwrap_or_default();
                key.process_guid == record.process_guid
                    && key.index == record.index
                    && a.presence == record.presence.as_i32()
            })
            .unwrap();
        let net: m::ActualLrpNetInfo = go_model(&record.net_info, passphrase);
        assert_eq!(Some(net), want.actual_lrp_net_info);
        assert_eq!(
            go_json(record.internal_routes.as_deref().unwrap(), passphrase),
            json!([])
        );
        assert_eq!(
            go_json(record.metric_tags.as_deref().unwrap(), passphrase),
            json!({})
        );
    }
    assert_eq!(
        s.configuration(configuration_ids::VERSION)
            .await
            .unwrap()
            .as_deref(),
        Some(r#"{"CurrentVersion":1772581987}"#)
    );
    assert_eq!(
        s.configuration(configuration_ids::ENCRYPTION_KEY_LABEL)
            .await
            .unwrap()
            .as_deref(),
        Some("go-key")
    );
}

#[actix_web::test]
async fn mysql_upstream_format_writes_decode_independently() {
    upstream_format_writes_decode_independently(Backend::Mysql).await
}

#[actix_web::test]
async fn postgres_upstream_format_writes_decode_independently() {
    upstream_format_writes_decode_independently(Backend::Postgres).await
}

/// Opening refusals that write nothing: a source (or a checked store) holding no BBS schema
/// is refused rather than given one, a target sealed under a label `--to` lacks is named as
/// the target's, and `--verify-only` cannot re-read an etcd-era source.
#[actix_web::test]
async fn stores_without_a_schema_or_keys_are_refused_untouched() {
    let Some(stores) = stores(&[Backend::Postgres, Backend::Mysql]).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (empty_config, empty_cleanup, _) =
        bbs_store::testing::fresh_config(Backend::Postgres).await;
    let empty = write_config(dir.path(), "empty", &empty_config, &["a"], "aes-256-gcm");
    let to = write_config(dir.path(), "to", &stores[1].config, &["b"], "aes-256-gcm");
    for args in [&["--verify-only"][..], &[][..]] {
        let output = migrate(&empty, &to, args);
        assert_eq!(output.status.code(), Some(1));
        assert_eq!(
            text(&output).1.trim(),
            "bbs migrate: source: unrecoverable store error: the store holds no BBS schema (no \
             version recorded): is this the right database?"
        );
    }
    let output = run(&[
        "--verify-only".as_ref(),
        "--from".as_ref(),
        empty.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    // Nothing was created in the empty database.
    let conn = bbs_store::connect_with(&empty_config, bbs_store::SchemaUse::ReadOnly).await;
    assert!(conn.is_err());
    if let Some(cleanup) = empty_cleanup {
        cleanup.run();
    }

    // A target whose records are sealed under a label --to does not have.
    seed_tasks(
        stores[1].store.as_ref(),
        &codec(
            "old-target-key",
            bbs_actors::keyring::WriteFormat::UpstreamAesGcm,
        ),
        1,
    )
    .await;
    seed_tasks(
        stores[0].store.as_ref(),
        &codec("a", bbs_actors::keyring::WriteFormat::UpstreamAesGcm),
        1,
    )
    .await;
    let from = write_config(dir.path(), "from", &stores[0].config, &["a"], "aes-256-gcm");
    let output = migrate(&from, &to, &["--resume"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.ends_with(
            "bbs migrate: the target holds tasks sealed with key label \"old-target-key\" \
             (first: task-00000), which is not among --to's encryption_keys; nothing was \
             written\n"
        ),
        "{}",
        text(&output).1
    );

    // The etcd-era member is an etcd of its own: it needs etcd like the etcd backend does.
    if bbs_store::testing::enabled(Backend::Etcd) {
        let etcd = support::etcd_v2::EtcdV2::start().await;
        let era = dir.path().join("era.json");
        std::fs::write(&era, etcd_era_config(&stores[1].config, &etcd).to_string()).unwrap();
        let output = migrate(&era, &to, &["--from-etcd-v2", "--verify-only"]);
        assert_eq!(output.status.code(), Some(2));
        assert!(text(&output)
            .1
            .contains("--verify-only cannot re-check an etcd v2 source"));
    }
}

/// The etcd-era copies refuse what they cannot decide: a node sealed under a label the
/// config lacks stops `bbs migrate` before writing, and stops start-up before etcd is marked;
/// a start-up copy into a SQL store that already holds records is refused.
#[actix_web::test]
async fn etcd_era_copies_refuse_a_missing_key_and_a_filled_store() {
    // The etcd-era member is an etcd of its own: it needs etcd like the etcd backend does.
    if !bbs_store::testing::enabled(Backend::Etcd) {
        return;
    }
    let Some(stores) = stores(&[Backend::Sqlite, Backend::Sqlite]).await else {
        return;
    };
    let etcd = support::etcd_v2::EtcdV2::start().await;
    lay_out_etcd_era(&etcd).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = etcd_era_config(&stores[0].config, &etcd);
    config["active_key_label"] = json!("other");
    config["encryption_keys"] = json!({"other": "another passphrase"});
    let wrong_key = dir.path().join("wrong-key.json");
    std::fs::write(&wrong_key, config.to_string()).unwrap();
    let to = write_config(dir.path(), "to", &stores[1].config, &["b"], "aes-256-gcm");
    let output = migrate(&wrong_key, &to, &["--from-etcd-v2"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "bbs migrate: source: etcd v2 /v1/desired_lrp/schedule/web is sealed with key label \
             \"go-key\", which is not among the encryption_keys; nothing was written"
        ),
        "{stderr}"
    );
    assert_eq!(counts(stores[1].store.as_ref()).await, [0, 0, 0, 0, 0]);

    let mut refused = Server::spawn(config);
    assert_eq!(refused.stop_when_exited(Duration::from_secs(30)), Some(1));
    assert!(
        refused.log().contains("is sealed with key label"),
        "{}",
        refused.log()
    );
    assert_eq!(
        etcd.get("/version").await.as_deref(),
        Some(r#"{"CurrentVersion":1451635200}"#)
    );

    seed_tasks(stores[0].store.as_ref(), &Codec::new(), 1).await;
    let mut filled = Server::spawn(etcd_era_config(&stores[0].config, &etcd));
    assert_eq!(filled.stop_when_exited(Duration::from_secs(30)), Some(1));
    assert!(
        filled
            .log()
            .contains("the SQL store already holds records but etcd is not marked as copied"),
        "{}",
        filled.log()
    );
}

/// A resumed copy re-seals records the target holds under an older key of its own: the
/// label it records promises every blob is under the active key.
#[actix_web::test]
async fn a_resume_reseals_records_under_an_older_target_key() {
    let Some(stores) = stores(&[Backend::Sqlite, Backend::Postgres]).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    seed_tasks(
        stores[0].store.as_ref(),
        &codec("a", bbs_actors::keyring::WriteFormat::XChaCha20Poly1305),
        2,
    )
    .await;
    let from = write_config(
        dir.path(),
        "from",
        &stores[0].config,
        &["a"],
        "xchacha20-poly1305",
    );
    let old = write_config(
        dir.path(),
        "old",
        &stores[1].config,
        &["b-old"],
        "aes-256-gcm",
    );
    assert_clean(&migrate(&from, &old, &[]));
    let new = write_config(
        dir.path(),
        "new",
        &stores[1].config,
        &["b-new", "b-old"],
        "aes-256-gcm",
    );
    let resumed = migrate(&from, &new, &["--resume"]);
    assert_clean(&resumed);
    assert!(
        text(&resumed)
            .1
            .contains("copied tasks: 2 written (0 new, 2 replaced), 0 already there"),
        "{}",
        text(&resumed).1
    );
    assert!(labels(stores[1].store.as_ref())
        .await
        .iter()
        .all(|l| l.as_deref() == Some("b-new")));
}

/// A write the target refuses mid-copy stops the run naming the kind, with nothing lost:
/// once the target takes writes again, `--resume` finishes.
#[actix_web::test]
async fn a_failed_write_stops_the_copy_and_resume_finishes_it() {
    let Some(stores) = stores(&[Backend::Sqlite, Backend::Postgres]).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    seed_tasks(
        stores[0].store.as_ref(),
        &codec("a", bbs_actors::keyring::WriteFormat::XChaCha20Poly1305),
        3,
    )
    .await;
    let from = write_config(
        dir.path(),
        "from",
        &stores[0].config,
        &["a"],
        "xchacha20-poly1305",
    );
    let to = write_config(dir.path(), "to", &stores[1].config, &["b"], "aes-256-gcm");
    stores[1]
        .raw_sql(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN \
             RAISE EXCEPTION 'the disk is full'; END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER refuse BEFORE INSERT ON tasks FOR EACH ROW EXECUTE FUNCTION refuse()",
        )
        .await;
    let output = migrate(&from, &to, &[]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "bbs migrate: writing tasks to the target failed: store error: the disk is full; \
             nothing is lost: run again with --resume to finish"
        ),
        "{stderr}"
    );
    stores[1].raw_sql("DROP TRIGGER refuse ON tasks").await;
    assert_clean(&migrate(&from, &to, &["--resume"]));
    assert_eq!(counts(stores[1].store.as_ref()).await, [0, 0, 0, 3, 0]);
}

/// The hand-back check stops, naming the label, on a blob it has no key for.
#[actix_web::test]
async fn the_hand_back_check_names_a_missing_key() {
    let Some(stores) = stores(&[Backend::Postgres]).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    seed_tasks(
        stores[0].store.as_ref(),
        &codec("go-key", bbs_actors::keyring::WriteFormat::UpstreamAesGcm),
        1,
    )
    .await;
    let checked = write_config(
        dir.path(),
        "checked",
        &stores[0].config,
        &["other"],
        "aes-256-gcm",
    );
    let output = run(&[
        "--verify-only".as_ref(),
        "--from".as_ref(),
        checked.as_os_str(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).1.contains(
            "bbs migrate: the source holds tasks sealed with key label \"go-key\" (first: \
             task-00000), which is not among --from's encryption_keys; nothing was written"
        ),
        "{}",
        text(&output).1
    );
}
