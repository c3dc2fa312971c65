//! Encryption at rest on every backend: no plaintext secret reaches the store, rotation
//! re-encrypts every record while the API serves, a missing key stops start-up, tampering is
//! caught, and upstream's AES-256-GCM records are read.

#[macro_use]
mod support;

use std::collections::BTreeMap;

use bbs_actors::codec::Codec;
use bbs_actors::encryptor::Rotate;
use bbs_actors::{ActorSettings, BbsError};
use bbs_models as m;
use bbs_store::{configuration_ids, Backend};
use support::inproc::{keys, TestBbs};

const SECRET: &str = "hunter2-do-not-store-me";

fn settings(keys: std::sync::Arc<bbs_actors::keyring::KeyRing>) -> ActorSettings {
    ActorSettings {
        storage_actors: 8,
        encryption: Some(keys),
        ..ActorSettings::default()
    }
}

fn secret_task(guid: &str) -> m::DesireTaskRequest {
    m::DesireTaskRequest {
        task_guid: guid.into(),
        domain: "d".into(),
        task_definition: Some(m::TaskDefinition {
            root_fs: "docker:///busybox".into(),
            action: Some(m::Action {
                run_action: Some(m::RunAction {
                    path: "/bin/true".into(),
                    user: "root".into(),
                    env: vec![m::EnvironmentVariable {
                        name: "PASSWORD".into(),
                        value: SECRET.into(),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            image_username: "user".into(),
            image_password: SECRET.into(),
            ..Default::default()
        }),
    }
}

fn secret_lrp(guid: &str) -> m::DesiredLrp {
    let mut tags = BTreeMap::new();
    tags.insert(
        "source_id".to_owned(),
        m::MetricTagValue {
            r#static: SECRET.into(),
            dynamic: 0,
        },
    );
    let mut routes = m::ProtoRoutes::default();
    routes.routes.insert(
        "cf-router".into(),
        format!(r#"[{{"hostnames":["{SECRET}.example.com"]}}]"#).into_bytes(),
    );
    m::DesiredLrp {
        process_guid: guid.into(),
        domain: "d".into(),
        root_fs: "preloaded:cflinuxfs4".into(),
        instances: 2,
        action: Some(m::Action {
            run_action: Some(m::RunAction {
                path: "/app".into(),
                user: "vcap".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        environment_variables: vec![m::EnvironmentVariable {
            name: "TOKEN".into(),
            value: SECRET.into(),
        }],
        metric_tags: tags,
        routes: Some(routes),
        ..Default::default()
    }
}

/// Every stored text of every record, as a raw read of the store returns it.
async fn raw_dump(b: &TestBbs) -> String {
    let s = &b.store.store;
    let mut out = String::new();
    for t in s.tasks(&Default::default()).await.unwrap() {
        out.push_str(&format!("{t:?}"));
    }
    for d in s.desired_lrps(&Default::default()).await.unwrap() {
        out.push_str(&format!("{d:?}"));
    }
    for a in s.actual_lrps(&Default::default()).await.unwrap() {
        out.push_str(&format!("{a:?}"));
    }
    out
}

/// The labels of every encrypted blob in the store.
async fn labels(b: &TestBbs) -> Vec<Option<String>> {
    let s = &b.store.store;
    let mut blobs = Vec::new();
    for t in s.tasks(&Default::default()).await.unwrap() {
        blobs.push(t.task_definition);
    }
    for d in s.desired_lrps(&Default::default()).await.unwrap() {
        blobs.extend([
            d.run_info,
            d.scheduling.routes,
            d.scheduling.volume_placement,
        ]);
        blobs.extend(d.scheduling.metric_tags);
    }
    for a in s.actual_lrps(&Default::default()).await.unwrap() {
        blobs.push(a.net_info);
        blobs.extend(a.internal_routes);
        blobs.extend(a.metric_tags);
    }
    blobs.iter().map(|b| Codec::label_of(b).unwrap()).collect()
}

async fn a_raw_read_holds_no_plaintext_secret(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(keys(&[("k1", "p1")], "k1"))).await else {
        return;
    };
    let reply: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &secret_task("t1")).await;
    assert_eq!(reply.error, None);
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(secret_lrp("web")),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    let mut start = m::StartActualLrpRequest {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: "web".into(),
            index: 0,
            domain: "d".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: "i".into(),
            cell_id: "c".into(),
        }),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: format!("{SECRET}.internal"),
            ..Default::default()
        }),
        ..Default::default()
    };
    start.metric_tags.insert("tag".into(), SECRET.into());
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/start.r1", &start).await;
    assert_eq!(reply.error, None);
    let dump = raw_dump(&b).await;
    assert!(
        dump.contains("web") && dump.contains("t1"),
        "the dump holds the records"
    );
    assert!(
        !dump.contains(SECRET),
        "a secret reached the store in plaintext"
    );
    assert!(
        !dump.contains(&base64_of(SECRET)),
        "a secret reached the store merely base64-encoded"
    );
    assert!(labels(&b).await.iter().all(|l| l.as_deref() == Some("k1")));
    // And the API still reads them back.
    let got: m::TaskResponse = b
        .call(
            "/v1/tasks/get_by_task_guid.r3",
            &m::TaskByGuidRequest {
                task_guid: "t1".into(),
            },
        )
        .await;
    assert_eq!(
        got.task.unwrap().task_definition.unwrap().image_password,
        SECRET
    );
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(text);
    encoded[..encoded.len() - 4].to_owned()
}

/// Rotating from key A to key B re-encrypts all 10,000 records (7,000 tasks, 1,000 desired
/// LRPs and their 2,000 instances) with nothing lost, while API requests keep succeeding.
async fn rotation_re_encrypts_every_record_while_serving(backend: Backend) {
    const TASKS: usize = 7_000;
    const LRPS: usize = 1_000;
    let key_a = keys(&[("key-a", "passphrase a")], "key-a");
    let Some(b) = TestBbs::start(backend, settings(key_a)).await else {
        return;
    };
    let b = std::rc::Rc::new(b);
    let writers = (0..8).map(|w| {
        let b = b.clone();
        async move {
            for i in (w..TASKS).step_by(8) {
                let reply: m::TaskLifecycleResponse = b
                    .call("/v1/tasks/desire.r2", &secret_task(&format!("t{i}")))
                    .await;
                assert_eq!(reply.error, None);
            }
            for i in (w..LRPS).step_by(8) {
                let request = m::DesireLrpRequest {
                    desired_lrp: Some(secret_lrp(&format!("lrp{i}"))),
                };
                let reply: m::DesiredLrpLifecycleResponse =
                    b.call("/v1/desired_lrp/desire.r2", &request).await;
                assert_eq!(reply.error, None);
            }
        }
    });
    futures::future::join_all(writers).await;
    let rotation = b.bbs.encryptor.call(Rotate).await.unwrap().unwrap();
    assert_eq!(rotation.to.as_deref(), Some("key-a"));
    let tasks_before: m::TasksResponse = b
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    let lrps_before: m::DesiredLrpsResponse = b
        .call(
            "/v1/desired_lrps/list.r3",
            &m::DesiredLrpsRequest::default(),
        )
        .await;
    let actual_before: m::ActualLrpsResponse = b
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    assert_eq!(
        tasks_before.tasks.len() + lrps_before.desired_lrps.len() + actual_before.actual_lrps.len(),
        10_000
    );
    let b = std::rc::Rc::try_unwrap(b).ok().expect("one owner");

    // Restart with key B active (A still known): the rotation runs while the API serves.
    let both = keys(
        &[("key-a", "passphrase a"), ("key-b", "passphrase b")],
        "key-b",
    );
    let b = TestBbs::on(b.store, settings(both)).await;
    let rotating = b.bbs.encryptor.call(Rotate);
    let serving = async {
        let mut served = 0;
        for i in 0..50 {
            let reply: m::TaskLifecycleResponse = b
                .call("/v1/tasks/desire.r2", &secret_task(&format!("during-{i}")))
                .await;
            assert_eq!(reply.error, None, "requests succeed during the rotation");
            let got: m::TaskResponse = b
                .call(
                    "/v1/tasks/get_by_task_guid.r3",
                    &m::TaskByGuidRequest {
                        task_guid: format!("t{i}"),
                    },
                )
                .await;
            assert_eq!(got.error, None);
            served += 2;
        }
        served
    };
    let (report, served) = futures::future::join(rotating, serving).await;
    let report = report.unwrap().unwrap();
    assert_eq!(served, 100);
    assert_eq!(report.failed, 0);
    assert!(report.rewritten >= 10_000, "{report:?}");
    assert_eq!(
        b.store
            .store
            .configuration(configuration_ids::ENCRYPTION_KEY_LABEL)
            .await
            .unwrap()
            .as_deref(),
        Some("key-b")
    );
    assert!(
        labels(&b)
            .await
            .iter()
            .all(|l| l.as_deref() == Some("key-b")),
        "every blob under key B"
    );

    // Nothing lost: a server that knows only key B reads every record, unchanged.
    let only_b = keys(&[("key-b", "passphrase b")], "key-b");
    let b = TestBbs::on(b.store, settings(only_b)).await;
    let tasks_after: m::TasksResponse = b
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    let before: Vec<&m::Task> = tasks_before.tasks.iter().collect();
    let after: Vec<&m::Task> = tasks_after
        .tasks
        .iter()
        .filter(|t| !t.task_guid.starts_with("during-"))
        .collect();
    assert_eq!(after, before);
    let lrps_after: m::DesiredLrpsResponse = b
        .call(
            "/v1/desired_lrps/list.r3",
            &m::DesiredLrpsRequest::default(),
        )
        .await;
    assert_eq!(lrps_after.desired_lrps, lrps_before.desired_lrps);
    let actual_after: m::ActualLrpsResponse = b
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    assert_eq!(actual_after.actual_lrps, actual_before.actual_lrps);
}

async fn a_missing_key_stops_start_up(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(keys(&[("key-a", "a")], "key-a"))).await else {
        return;
    };
    let reply: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &secret_task("t1")).await;
    assert_eq!(reply.error, None);
    b.bbs.encryptor.call(Rotate).await.unwrap().unwrap();
    let store = b.store;
    // The recorded label is checked first...
    let err = TestBbs::try_on(store, settings(keys(&[("key-b", "b")], "key-b")))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.1, BbsError::UnknownKeyLabel("key-a".into()));
    assert_eq!(err.1.to_string(), "Key with label \"key-a\" was not found");
    // ...and so is every record's, even when the recorded label is fine.
    let store = err.0;
    store
        .store
        .set_configuration(configuration_ids::ENCRYPTION_KEY_LABEL, "key-b")
        .await
        .unwrap();
    let err = TestBbs::try_on(store, settings(keys(&[("key-b", "b")], "key-b")))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.1, BbsError::UnknownKeyLabel("key-a".into()));
    assert!(
        err.0.store.task("t1").await.unwrap().is_some(),
        "nothing is deleted"
    );
}

async fn tampered_ciphertext_is_reported_and_not_served(backend: Backend) {
    use base64::Engine;
    let k = keys(&[("k", "p")], "k");
    let Some(b) = TestBbs::start(backend, settings(k.clone())).await else {
        return;
    };
    for guid in ["good", "bad"] {
        let reply: m::TaskLifecycleResponse =
            b.call("/v1/tasks/desire.r2", &secret_task(guid)).await;
        assert_eq!(reply.error, None);
    }
    let mut record = b.store.store.task("bad").await.unwrap().unwrap();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut raw = engine.decode(&record.task_definition[2..]).unwrap();
    let middle = raw.len() / 2;
    raw[middle] ^= 0x01;
    record.task_definition = format!("03{}", engine.encode(raw));
    b.store.store.update_task(&record).await.unwrap();
    let b = TestBbs::on(b.store, settings(k)).await;
    let bad: m::TaskResponse = b
        .call(
            "/v1/tasks/get_by_task_guid.r3",
            &m::TaskByGuidRequest {
                task_guid: "bad".into(),
            },
        )
        .await;
    assert_eq!(
        bad.error.unwrap().kind(),
        m::error::Type::ResourceNotFound,
        "not served"
    );
    let good: m::TaskResponse = b
        .call(
            "/v1/tasks/get_by_task_guid.r3",
            &m::TaskByGuidRequest {
                task_guid: "good".into(),
            },
        )
        .await;
    assert_eq!(good.error, None);
    assert!(
        b.store.store.task("bad").await.unwrap().is_some(),
        "kept for an operator to inspect"
    );
}

/// A task written in upstream's format ("02", AES-256-GCM with SHA-256 of the passphrase,
/// built here from the documented layout) is read as the Go BBS would.
async fn upstream_format_records_are_read(backend: Backend) {
    use base64::Engine;
    use prost::Message;
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let definition = secret_task("t").task_definition.unwrap();
    let mut plaintext = vec![2u8, 0u8];
    plaintext.extend(definition.encode_to_vec());
    let key = ring::digest::digest(&ring::digest::SHA256, b"the go bbs passphrase");
    let aes = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_ref()).unwrap());
    let nonce = [9u8; 12];
    aes.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut plaintext,
    )
    .unwrap();
    let mut payload = vec![b"go-key".len() as u8];
    payload.extend_from_slice(b"go-key");
    payload.extend_from_slice(&nonce);
    payload.extend_from_slice(&plaintext);
    let blob = format!(
        "02{}",
        base64::engine::general_purpose::STANDARD.encode(payload)
    );
    store
        .store
        .insert_task(&bbs_store::TaskRecord {
            guid: "from-go".into(),
            domain: "d".into(),
            created_at: 1,
            updated_at: 1,
            state: 1,
            task_definition: blob,
            ..Default::default()
        })
        .await
        .unwrap();
    let b = TestBbs::on(
        store,
        settings(keys(&[("go-key", "the go bbs passphrase")], "go-key")),
    )
    .await;
    let got: m::TaskResponse = b
        .call(
            "/v1/tasks/get_by_task_guid.r3",
            &m::TaskByGuidRequest {
                task_guid: "from-go".into(),
            },
        )
        .await;
    assert_eq!(got.task.unwrap().task_definition, Some(definition));
}

on_every_backend!(
    a_raw_read_holds_no_plaintext_secret,
    rotation_re_encrypts_every_record_while_serving,
    a_missing_key_stops_start_up,
    tampered_ciphertext_is_reported_and_not_served,
    upstream_format_records_are_read,
);
