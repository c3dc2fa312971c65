//! Seed inputs: one valid example of everything the targets read, so the fuzzer starts from
//! inputs that get past the decoders and mutates from there. `fuzz-seeds` writes them into
//! `fuzz/corpus/<target>/`.

use bbs_actors::lrp_records::{actual_to_record, desired_to_record};
use bbs_actors::rules::desired_lrps;
use bbs_actors::rules::requests::ALL;
use bbs_actors::rules::tasks as task_rules;
use bbs_actors::tasks;
use bbs_models as m;
use prost::Message;

use crate::records::{self, codecs};
use crate::requests;
use bbs_actors::codec::Codec;

/// A seed: its target, its file name and its bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

fn seed(target: &'static str, name: impl Into<String>, bytes: Vec<u8>) -> Seed {
    Seed {
        target,
        name: name.into(),
        bytes,
    }
}

fn with_choice(choice: usize, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![u8::try_from(choice).expect("fewer than 256 choices")];
    bytes.extend_from_slice(body);
    bytes
}

pub fn all() -> Vec<Seed> {
    let mut seeds = Vec::new();
    request_seeds(&mut seeds);
    record_seeds(&mut seeds);
    for (name, text) in [
        ("sqlite", include_str!("../../deploy/sqlite.json")),
        ("mysql", include_str!("../../deploy/mysql.json")),
        ("postgres", include_str!("../../deploy/postgres.json")),
        ("etcd", include_str!("../../deploy/etcd.json")),
    ] {
        seeds.push(seed("config", name, with_choice(0, text.as_bytes())));
    }
    let toml = "listen_address = \"127.0.0.1:8889\"\ndatabase_driver = \"sqlite\"\n\
                active_key_label = \"k1\"\n[encryption_keys]\nk1 = \"a passphrase\"\n\0\
                BBS_MAX_TASK_RETRIES=3\n";
    seeds.push(seed("config", "toml", with_choice(1, toml.as_bytes())));
    for (name, text) in [
        ("zero", "0"),
        ("number", " 42 "),
        ("max", "18446744073709551615"),
    ] {
        seeds.push(seed("event_id", name, text.as_bytes().to_vec()));
    }
    for (name, text) in [
        (
            "dsn",
            "diego:secret@tcp(10.0.0.5:3306)/diego?tls=skip-verify&timeout=10s",
        ),
        (
            "dsn-tls",
            "root@tcp(db.internal:3306)/bbs?tls=true&charset=utf8mb4",
        ),
        (
            "url",
            "mysql://root@127.0.0.1:3306/test?prefer_socket=false",
        ),
    ] {
        seeds.push(seed("mysql_dsn", name, text.as_bytes().to_vec()));
    }
    seeds
}

pub fn desired_lrp() -> m::DesiredLrp {
    m::DesiredLrp {
        process_guid: "process-guid-1".into(),
        domain: "cf-apps".into(),
        root_fs: "preloaded:cflinuxfs4".into(),
        instances: 3,
        memory_mb: 256,
        disk_mb: 1024,
        log_guid: "log-guid".into(),
        ports: vec![8080],
        routes: Some(m::ProtoRoutes {
            routes: [(
                "cf-router".to_owned(),
                br#"[{"hostnames":["app.example.com"],"port":8080}]"#.to_vec(),
            )]
            .into(),
        }),
        action: Some(m::Action {
            run_action: Some(m::RunAction {
                path: "/bin/server".into(),
                user: "vcap".into(),
                args: vec!["--port".into(), "8080".into()],
                ..Default::default()
            }),
            ..Default::default()
        }),
        metric_tags: [(
            "source_id".to_owned(),
            m::MetricTagValue {
                r#static: "app-guid".into(),
                ..Default::default()
            },
        )]
        .into(),
        ..Default::default()
    }
}

fn task_definition() -> m::TaskDefinition {
    m::TaskDefinition {
        root_fs: "docker:///busybox".into(),
        memory_mb: 128,
        log_guid: "log-guid".into(),
        result_file: "/tmp/result".into(),
        completion_callback_url: "https://cc.internal/callback".into(),
        action: desired_lrp().action,
        ..Default::default()
    }
}

fn instance_key() -> m::ActualLrpInstanceKey {
    m::ActualLrpInstanceKey {
        instance_guid: "instance-guid".into(),
        cell_id: "cell-1".into(),
    }
}

fn actual_key() -> m::ActualLrpKey {
    m::ActualLrpKey {
        process_guid: "process-guid-1".into(),
        index: 0,
        domain: "cf-apps".into(),
    }
}

fn net_info() -> m::ActualLrpNetInfo {
    m::ActualLrpNetInfo {
        address: "10.0.0.9".into(),
        ports: vec![m::PortMapping {
            container_port: 8080,
            host_port: 61000,
            ..Default::default()
        }],
        instance_address: "10.255.0.9".into(),
        ..Default::default()
    }
}

fn presence() -> m::CellPresence {
    m::CellPresence {
        cell_id: "cell-1".into(),
        rep_address: "http://10.0.0.9:1800".into(),
        rep_url: "https://cell-1.cell.service.cf.internal:1801".into(),
        zone: "z1".into(),
        capacity: Some(m::CellCapacity {
            memory_mb: 16384,
            disk_mb: 65536,
            containers: 250,
        }),
        placement_tags: vec!["isolation-a".into()],
        ..Default::default()
    }
}

fn request_seeds(seeds: &mut Vec<Seed>) {
    // Every type, empty, then a valid example of the ones with something to check.
    for (i, (name, _)) in ALL.iter().enumerate() {
        seeds.push(seed(
            "requests",
            format!("empty-{name}"),
            with_choice(i, &[]),
        ));
    }
    let valid: Vec<(&str, Vec<u8>)> = vec![
        (
            "DesireLrpRequest",
            m::DesireLrpRequest {
                desired_lrp: Some(desired_lrp()),
            }
            .encode_to_vec(),
        ),
        (
            "UpdateDesiredLrpRequest",
            m::UpdateDesiredLrpRequest {
                process_guid: "process-guid-1".into(),
                update: Some(m::DesiredLrpUpdate {
                    optional_instances: Some(m::desired_lrp_update::OptionalInstances::Instances(
                        5,
                    )),
                    routes: desired_lrp().routes,
                    ..Default::default()
                }),
            }
            .encode_to_vec(),
        ),
        (
            "DesireTaskRequest",
            m::DesireTaskRequest {
                task_definition: Some(task_definition()),
                task_guid: "task-guid-1".into(),
                domain: "cf-tasks".into(),
            }
            .encode_to_vec(),
        ),
        (
            "StartActualLrpRequest",
            m::StartActualLrpRequest {
                actual_lrp_key: Some(actual_key()),
                actual_lrp_instance_key: Some(instance_key()),
                actual_lrp_net_info: Some(net_info()),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "EvacuateRunningActualLrpRequest",
            m::EvacuateRunningActualLrpRequest {
                actual_lrp_key: Some(actual_key()),
                actual_lrp_instance_key: Some(instance_key()),
                actual_lrp_net_info: Some(net_info()),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "ClaimActualLrpRequest",
            m::ClaimActualLrpRequest {
                process_guid: "process-guid-1".into(),
                index: 0,
                actual_lrp_instance_key: Some(instance_key()),
            }
            .encode_to_vec(),
        ),
        (
            "RegisterCellRequest",
            m::RegisterCellRequest {
                cell_presence: Some(presence()),
                ttl_seconds: 10,
            }
            .encode_to_vec(),
        ),
    ];
    for (name, body) in valid {
        seeds.push(seed(
            "requests",
            format!("valid-{name}"),
            with_choice(requests::choice_of(name), &body),
        ));
    }
    let lock = bbs_locket::models::LockRequest {
        resource: Some(bbs_locket::Resource {
            key: "bbs".into(),
            owner: "bbs-0".into(),
            type_code: bbs_locket::TypeCode::Lock as i32,
            ..Default::default()
        }),
        ttl_in_seconds: 15,
    };
    seeds.push(seed(
        "requests",
        "valid-locket-LockRequest",
        with_choice(requests::choice_of("LockRequest"), &lock.encode_to_vec()),
    ));
}

fn record_seeds(seeds: &mut Vec<Seed>) {
    let entry = desired_lrps::split(&desired_lrp(), "epoch".into(), 1_700_000_000_000_000_000);
    let task = task_rules::desired(
        "task-guid-1".into(),
        "cf-tasks".into(),
        task_definition(),
        1_700_000_000_000_000_000,
    );
    let actual = m::ActualLrp {
        actual_lrp_key: Some(actual_key()),
        actual_lrp_instance_key: Some(instance_key()),
        actual_lrp_net_info: Some(net_info()),
        state: "RUNNING".into(),
        since: 1_700_000_000_000_000_000,
        modification_tag: Some(m::ModificationTag {
            epoch: "epoch".into(),
            index: 2,
        }),
        metric_tags: [("source_id".to_owned(), "app-guid".to_owned())].into(),
        ..Default::default()
    };
    let names = ["plain", "xchacha", "aes"];
    for (codec, codec_name) in codecs().iter().zip(names) {
        seeds.push(seed(
            "records",
            format!("task-{codec_name}"),
            with_choice(
                records::choice_of("task"),
                &json(&tasks::to_record(codec, &task)),
            ),
        ));
        let desired = desired_to_record(codec, &entry).expect("the seed LRP is storable");
        seeds.push(seed(
            "records",
            format!("desired-{codec_name}"),
            with_choice(records::choice_of("desired"), &json(&desired)),
        ));
        seeds.push(seed(
            "records",
            format!("actual-{codec_name}"),
            with_choice(
                records::choice_of("actual"),
                &json(&actual_to_record(codec, &actual)),
            ),
        ));
        seeds.push(seed(
            "records",
            format!("blob-{codec_name}"),
            with_choice(records::choice_of("blob"), desired.run_info.as_bytes()),
        ));
    }
    seeds.push(seed(
        "records",
        "sealed-run-info",
        with_choice(
            records::choice_of("sealed"),
            &Codec::new()
                .open(&Codec::new().encode_proto_body(entry.run_info.as_bytes()))
                .expect("an unencrypted blob opens"),
        ),
    ));
    let cell = bbs_store::CellRecord {
        cell_id: "cell-1".into(),
        presence: bbs_actors::cells::presence_to_json(&presence()),
        expire_time: 1_700_000_000_000_000_000,
    };
    seeds.push(seed(
        "records",
        "cell",
        with_choice(records::choice_of("cell"), &json(&cell)),
    ));
    let domain = bbs_store::DomainRecord {
        domain: "cf-apps".into(),
        expire_time: 0,
    };
    seeds.push(seed(
        "records",
        "domain",
        with_choice(records::choice_of("domain"), &json(&domain)),
    ));
}

fn json<T: serde::Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).expect("records serialize")
}
