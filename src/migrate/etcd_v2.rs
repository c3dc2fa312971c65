//! Upstream's etcd-era store, read through the etcd v2 API (bbs-reference §7.4): the key
//! layout the Go BBS kept until 2018, its serialized models (`01` base64 or `02` AES-GCM, with
//! the protobuf envelope), and upstream's rules for carrying them into SQL.
//!
//! Records are converted into this server's store records with the same conversions the
//! actors use, sealed with the codec of the configuration that names the cluster (whose keys
//! open the etcd data), so `bbs migrate` and the start-up copy treat them like any other
//! source.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use bbs_actors::codec::Codec;
use bbs_actors::lrp_records::{actual_to_record, desired_to_record};
use bbs_actors::rules::desired_lrps::{DesiredEntry, PackedRunInfo};
use bbs_models as m;
use bbs_store::{ActualLrpRecord, DesiredLrpRecord, DomainRecord, Nanos, TaskRecord};

use super::inventory::Unreadable;

/// The last etcd-only upstream migration (timeouts_to_milliseconds): etcd data at this
/// version is in the final etcd-era format, ready to copy.
pub const LAST_ETCD_VERSION: i64 = 1_451_635_200;
/// What upstream records in etcd once its data has been copied to SQL ("past etcd to SQL").
pub const COPIED_ETCD_VERSION: i64 = LAST_ETCD_VERSION + 1;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster, from upstream's `etcd_cluster_urls` and `etcd_*_file` keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdV2Config {
    pub urls: Vec<String>,
    pub ca: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdV2Error {
    #[error("etcd_ca_file, etcd_cert_file, etcd_key_file: {0}")]
    Tls(String),
    #[error("etcd_cluster_urls: no member answered ({0})")]
    Unreachable(String),
    #[error("etcd v2 {key}: {message}")]
    Answer { key: String, message: String },
    #[error(
        "etcd v2 {key} is sealed with key label {label:?}, which is not among the \
         encryption_keys; nothing was written"
    )]
    MissingKey { label: String, key: String },
}

/// A node's model, `Ok(Err(..))` when it does not decode (reported, skipped), `Err` when its
/// key label is not configured (nothing can be decided without it).
fn decode<M: prost::Message + Default>(
    codec: &Codec,
    node: &Node,
) -> Result<Result<M, String>, EtcdV2Error> {
    let blob = node.value.as_deref().unwrap_or("");
    if let Ok(Some(label)) = Codec::label_of(blob) {
        if !codec.keys().is_some_and(|keys| keys.has_label(&label)) {
            return Err(EtcdV2Error::MissingKey {
                label,
                key: node.key.clone(),
            });
        }
    }
    Ok(codec.decode_model::<M>(blob).map_err(|e| e.to_string()))
}

#[derive(Deserialize)]
struct Answer {
    node: Node,
}

#[derive(Deserialize)]
struct EtcdErrorBody {
    #[serde(rename = "errorCode")]
    error_code: i64,
    message: String,
}

#[derive(Deserialize, Default)]
struct Node {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    nodes: Vec<Node>,
    #[serde(default)]
    ttl: Option<i64>,
}

/// etcd's "Key not found".
const KEY_NOT_FOUND: i64 = 100;

pub struct EtcdV2 {
    client: reqwest::Client,
    urls: Vec<String>,
}

/// Everything the etcd-era store holds, as this server's records, and what could not be read.
#[derive(Default)]
pub struct Snapshot {
    pub domains: Vec<DomainRecord>,
    pub desired: Vec<DesiredLrpRecord>,
    pub actual: Vec<ActualLrpRecord>,
    pub tasks: Vec<TaskRecord>,
    pub unreadable: Vec<Unreadable>,
}

/// What to carry over besides what upstream's own copy did.
#[derive(Clone, Copy, Debug)]
pub struct Carry {
    /// Upstream's copy dropped evacuating instances "for simplicity"; `bbs migrate` keeps
    /// them, so a draining cell's rep still finds the row it will remove.
    pub evacuating: bool,
}

fn base(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

impl EtcdV2 {
    pub fn connect(config: &EtcdV2Config) -> Result<EtcdV2, EtcdV2Error> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10));
        if config.urls.iter().any(|u| u.starts_with("https://")) {
            let ca = config.ca.as_deref().ok_or_else(|| {
                EtcdV2Error::Tls("etcd_ca_file is required with https etcd_cluster_urls".into())
            })?;
            let identity = config
                .identity
                .as_ref()
                .map(|(cert, key)| bbs_tls::Identity {
                    certificate: bbs_tls::PemFile::new("etcd_cert_file", cert),
                    private_key: bbs_tls::PemFile::new("etcd_key_file", key),
                });
            let tls = bbs_tls::client(
                bbs_tls::ServerCheck::Full(bbs_tls::PemFile::new("etcd_ca_file", ca)),
                identity,
            )
            .map_err(|e| EtcdV2Error::Tls(e.to_string()))?;
            builder = builder.use_preconfigured_tls(tls);
        }
        let client = builder
            .build()
            .map_err(|e| EtcdV2Error::Tls(e.to_string()))?;
        Ok(EtcdV2 {
            client,
            urls: config
                .urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
        })
    }

    /// The node at `key` (with everything under it), or `None` when etcd has no such key.
    /// Tries each member in turn, as upstream's client did.
    async fn get(&self, key: &str) -> Result<Option<Node>, EtcdV2Error> {
        let mut failures = Vec::new();
        for url in &self.urls {
            let response = match self
                .client
                .get(format!("{url}/v2/keys{key}?recursive=true"))
                .send()
                .await
            {
                Ok(response) => response,
                Err(e) => {
                    failures.push(format!("{url}: {e}"));
                    continue;
                }
            };
            let status = response.status();
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(e) => {
                    failures.push(format!("{url}: {e}"));
                    continue;
                }
            };
            // A member that is failing (leaderless, overloaded) says so with a 5xx: ask the next.
            if status.is_server_error() {
                failures.push(format!("{url}: HTTP {status}"));
                continue;
            }
            if status.is_success() {
                return serde_json::from_slice::<Answer>(&body)
                    .map(|a| Some(a.node))
                    .map_err(|e| EtcdV2Error::Answer {
                        key: key.into(),
                        message: format!("not an etcd v2 answer: {e}"),
                    });
            }
            return match serde_json::from_slice::<EtcdErrorBody>(&body) {
                Ok(error) if error.error_code == KEY_NOT_FOUND => Ok(None),
                Ok(error) => Err(EtcdV2Error::Answer {
                    key: key.into(),
                    message: format!("{} (etcd error {})", error.message, error.error_code),
                }),
                Err(_) => Err(EtcdV2Error::Answer {
                    key: key.into(),
                    message: format!(
                        "HTTP {status} (is the v2 API enabled? etcd 3.4 needs --enable-v2): {}",
                        String::from_utf8_lossy(&body).trim()
                    ),
                }),
            };
        }
        Err(EtcdV2Error::Unreachable(failures.join("; ")))
    }

    /// Upstream's `/version` record: `None` on a cluster the Go BBS never wrote.
    pub async fn version(&self) -> Result<Option<i64>, EtcdV2Error> {
        let Some(node) = self.get("/version").await? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct Version {
            #[serde(rename = "CurrentVersion")]
            current_version: i64,
        }
        let text = node.value.unwrap_or_default();
        serde_json::from_str::<Version>(&text)
            .map(|v| Some(v.current_version))
            .map_err(|e| EtcdV2Error::Answer {
                key: "/version".into(),
                message: format!("{text:?} is not a version record: {e}"),
            })
    }

    /// Records that the data has been copied to SQL, as upstream does, so no later start
    /// copies it again.
    pub async fn mark_copied(&self) -> Result<(), EtcdV2Error> {
        let value = format!(r#"{{"CurrentVersion":{COPIED_ETCD_VERSION}}}"#);
        let mut failures = Vec::new();
        for url in &self.urls {
            match self
                .client
                .put(format!("{url}/v2/keys/version"))
                .form(&[("value", value.as_str())])
                .send()
                .await
            {
                Ok(response) if response.status().is_success() => return Ok(()),
                Ok(response) => {
                    return Err(EtcdV2Error::Answer {
                        key: "/version".into(),
                        message: format!("HTTP {}", response.status()),
                    })
                }
                Err(e) => failures.push(format!("{url}: {e}")),
            }
        }
        Err(EtcdV2Error::Unreachable(failures.join("; ")))
    }

    /// Reads every record, converted and sealed with `codec`. Domains expire `now` plus their
    /// etcd TTL, as upstream's copy computed it (a domain without a TTL arrives expired).
    pub async fn snapshot(
        &self,
        codec: &Codec,
        now: Nanos,
        carry: Carry,
    ) -> Result<Snapshot, EtcdV2Error> {
        let mut snapshot = Snapshot::default();
        let mut unreadable = |kind: &'static str, key: &str, error: String| {
            snapshot.unreadable.push(Unreadable {
                kind,
                key: key.to_owned(),
                error,
            })
        };
        let mut domains = Vec::new();
        for node in self.get("/v1/domain").await?.unwrap_or_default().nodes {
            domains.push(DomainRecord {
                domain: base(&node.key).to_owned(),
                expire_time: now
                    .saturating_add(node.ttl.unwrap_or(0).saturating_mul(1_000_000_000)),
            });
        }

        let mut schedules = std::collections::BTreeMap::new();
        let schedule_root = self
            .get("/v1/desired_lrp/schedule")
            .await?
            .unwrap_or_default();
        for node in schedule_root.nodes {
            match decode::<m::DesiredLrpSchedulingInfo>(codec, &node)? {
                Ok(info) => {
                    schedules.insert(base(&node.key).to_owned(), info);
                }
                Err(e) => unreadable("desired LRPs", &node.key, format!("scheduling info: {e}")),
            }
        }
        let mut desired = Vec::new();
        for node in self
            .get("/v1/desired_lrp/run")
            .await?
            .unwrap_or_default()
            .nodes
        {
            let guid = base(&node.key);
            let Some(scheduling) = schedules.remove(guid) else {
                unreadable(
                    "desired LRPs",
                    &node.key,
                    "a run info without its scheduling info".into(),
                );
                continue;
            };
            let run_info = match decode::<m::DesiredLrpRunInfo>(codec, &node)? {
                Ok(run_info) => run_info,
                Err(e) => {
                    unreadable("desired LRPs", &node.key, format!("run info: {e}"));
                    continue;
                }
            };
            let entry = DesiredEntry {
                metric_tags: Arc::new(run_info.metric_tags.clone().into_iter().collect()),
                run_info: PackedRunInfo::pack(&run_info),
                scheduling: Arc::new(scheduling),
                update_strategy: 0,
            };
            match desired_to_record(codec, &entry) {
                Ok(record) => desired.push(record),
                Err(e) => unreadable("desired LRPs", &node.key, e.to_string()),
            }
        }
        for guid in schedules.keys() {
            unreadable(
                "desired LRPs",
                &format!("/v1/desired_lrp/schedule/{guid}"),
                "a scheduling info without its run info".into(),
            );
        }

        let mut actual = Vec::new();
        for process in self.get("/v1/actual").await?.unwrap_or_default().nodes {
            for index in process.nodes {
                for node in index.nodes {
                    let presence = match base(&node.key) {
                        "instance" => m::actual_lrp::Presence::Ordinary,
                        "evacuating" if carry.evacuating => m::actual_lrp::Presence::Evacuating,
                        "evacuating" => continue,
                        _ => {
                            unreadable(
                                "actual LRPs",
                                &node.key,
                                "not an instance or evacuating leaf".into(),
                            );
                            continue;
                        }
                    };
                    match decode::<m::ActualLrp>(codec, &node)? {
                        Ok(mut lrp) => {
                            lrp.presence = presence as i32;
                            // Upstream's add_routable migration (1686692176) made every
                            // running row routable; etcd-era instances carry no such field.
                            if lrp.optional_routable.is_none() {
                                lrp.optional_routable =
                                    Some(m::actual_lrp::OptionalRoutable::Routable(
                                        lrp.state == "RUNNING",
                                    ));
                            }
                            actual.push(actual_to_record(codec, &lrp));
                        }
                        Err(e) => unreadable("actual LRPs", &node.key, e),
                    }
                }
            }
        }

        let mut tasks = Vec::new();
        for node in self.get("/v1/task").await?.unwrap_or_default().nodes {
            match decode::<m::Task>(codec, &node)? {
                Ok(task) => tasks.push(bbs_actors::tasks::to_record(codec, &task)),
                Err(e) => unreadable("tasks", &node.key, e),
            }
        }
        snapshot.domains = domains;
        snapshot.desired = desired;
        snapshot.actual = actual;
        snapshot.tasks = tasks;
        Ok(snapshot)
    }
}
