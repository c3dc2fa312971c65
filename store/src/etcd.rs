//! The etcd v3 backend. Keys follow upstream's etcd-era layout (bbs-reference §7.4) under an
//! optional root prefix; values are JSON records whose blob fields are already encoded, so
//! secrets are as protected here as in SQL. Writes that must not race use transactions that
//! compare create or mod revisions.

use async_trait::async_trait;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, Txn, TxnOp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;

use crate::error::{StoreError, StoreResult};
use crate::records::*;
use crate::store::{Backend, Mutation, Store};

/// Keys per range request, so no response comes near gRPC's message limit.
const PAGE: i64 = 1000;
/// Where locket's `locks` rows live: upstream's locket never used etcd, so the layout is ours,
/// one JSON value per key, beside the BBS's records.
const LOCKS_PREFIX: &str = "/v1/locks/";
/// Attempts at a compare-and-swap before giving up with `Contention`.
const CAS_ATTEMPTS: usize = 200;

pub struct EtcdStore {
    kv: KvClient,
    root: String,
}

impl From<etcd_client::Error> for StoreError {
    fn from(error: etcd_client::Error) -> Self {
        match error {
            etcd_client::Error::TransportError(e) => StoreError::Unavailable(e.to_string()),
            etcd_client::Error::GRpcStatus(status)
                if matches!(
                    status.code(),
                    tonic_code::UNAVAILABLE | tonic_code::DEADLINE_EXCEEDED
                ) =>
            {
                StoreError::Unavailable(status.message().to_owned())
            }
            other => StoreError::Other(other.to_string()),
        }
    }
}

/// The gRPC codes we tell apart, without a direct tonic dependency.
mod tonic_code {
    pub const UNAVAILABLE: tonic::Code = tonic::Code::Unavailable;
    pub const DEADLINE_EXCEEDED: tonic::Code = tonic::Code::DeadlineExceeded;
}

fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Other(e.to_string()))
}

fn decode<T: DeserializeOwned>(key: &[u8], value: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(value)
        .map_err(|e| StoreError::Corrupt(format!("{}: {e}", String::from_utf8_lossy(key))))
}

/// etcd's TLS options from `tls`, the files read now so a bad one stops start-up naming its
/// key.
fn etcd_tls(tls: &crate::StoreTls) -> StoreResult<Option<etcd_client::TlsOptions>> {
    let Some(ca) = &tls.etcd_ca else {
        return Ok(None);
    };
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            StoreError::Unavailable(format!("{key}: cannot read {}: {e}", path.display()))
        })
    };
    // Checked as PEM, for a clear error rather than a failed handshake later.
    bbs_tls::PemFile::new("etcd_ca_file", ca)
        .roots()
        .map_err(|e| StoreError::Unavailable(format!("etcd_ca_file: {e}")))?;
    let mut options = etcd_client::TlsOptions::new().ca_certificate(
        etcd_client::Certificate::from_pem(read("etcd_ca_file", ca)?),
    );
    if let Some((cert, key)) = &tls.etcd_identity {
        options = options.identity(etcd_client::Identity::from_pem(
            read("etcd_cert_file", cert)?,
            read("etcd_key_file", key)?,
        ));
    }
    Ok(Some(options))
}

/// Connects to comma-separated endpoints; `root` prefixes every key (empty for upstream's
/// layout, a unique prefix for tests sharing one etcd).
pub async fn connect_etcd(
    endpoints: &str,
    root: &str,
    tls: &crate::StoreTls,
    schema: crate::SchemaUse<'_>,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    let endpoints: Vec<String> = endpoints
        .split(',')
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(StoreError::Unavailable(
            "database_connection_string names no etcd endpoint".into(),
        ));
    }
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(10))
        .with_timeout(Duration::from_secs(30));
    if let Some(tls) = etcd_tls(tls)? {
        if let Some(plain) = endpoints.iter().find(|e| !e.starts_with("https://")) {
            return Err(StoreError::Unavailable(format!(
                "etcd_ca_file is set, so every endpoint must be https://, not {plain}"
            )));
        }
        options = options.with_tls(tls);
    }
    let tls_on = tls.etcd_ca.is_some();
    const ETCD_TLS_KEYS: &str = "etcd_ca_file, etcd_cert_file and etcd_key_file";
    let client = Client::connect(&endpoints, Some(options))
        .await
        .map_err(|e| StoreError::from(e).naming_tls_keys(tls_on, ETCD_TLS_KEYS))?;
    let kv = client
        .kv_client()
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    let store = EtcdStore {
        kv,
        root: root.trim_end_matches('/').to_owned(),
    };
    // Reading the version both proves the endpoint answers and checks the schema rule.
    let recorded = crate::migrate::recorded_version(&store)
        .await
        .map_err(|e| e.naming_tls_keys(tls_on, ETCD_TLS_KEYS))?;
    match schema {
        crate::SchemaUse::ReadOnly => crate::migrate::check_existing(recorded, true)?,
        crate::SchemaUse::Existing(_) => crate::migrate::check_existing(recorded, false)?,
        crate::SchemaUse::Migrate(_) => {}
    }
    match crate::migrate::plan(recorded)? {
        crate::migrate::MigrationPlan::CreateSchema => {
            store
                .set_configuration(
                    configuration_ids::VERSION,
                    &crate::migrate::encode_version(crate::migrate::SCHEMA_VERSION),
                )
                .await?
        }
        crate::migrate::MigrationPlan::UpToDate => {}
        // Upstream never kept this layout at an earlier version (its etcd-era store is the v2
        // keyspace, read by `bbs migrate --from-etcd-v2`).
        crate::migrate::MigrationPlan::Upgrade(v) => {
            return Err(StoreError::Unrecoverable(format!(
                "Existing DB version ({v}) predates this bbs's schema ({}), and upstream never \
                 wrote this etcd layout at an earlier version",
                crate::migrate::SCHEMA_VERSION
            )))
        }
    }
    Ok(std::sync::Arc::new(store))
}

/// Attempts of a call whose connection failed before anything was sent. The balancer picks a
/// member per attempt; with one member of three down, about one attempt in three lands on
/// it, so ten attempts fail together about once in 60,000 calls. A refused connection costs
/// about a millisecond; a member that does not answer at all costs the connect timeout per
/// attempt, and `db_write_timeout` / `db_read_timeout` bound the call as a whole.
const UNSENT_ATTEMPTS: usize = 10;

/// Whether the call failed before anything reached etcd (the member it picked refused the
/// connection), so it may be sent again, even a write.
fn never_sent(error: &etcd_client::Error) -> bool {
    // tonic's own words for a connection that could not be made; its transport error says
    // only "transport error", nothing of whether the call went out.
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic_code::UNAVAILABLE
                && status.message().contains("tcp connect error")
        }
        _ => false,
    }
}

impl EtcdStore {
    /// Runs `call`, again on the balancer's next pick while the member it picked refuses the
    /// connection, as Go's etcd client fails over between endpoints.
    async fn unsent_again<T, F, Fut>(&self, call: F) -> Result<T, etcd_client::Error>
    where
        F: Fn(KvClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 1;
        loop {
            match call(self.kv.clone()).await {
                Err(e) if attempt < UNSENT_ATTEMPTS && never_sent(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        let key = key.into();
        self.unsent_again(|mut kv| {
            let (key, options) = (key.clone(), options.clone());
            async move { kv.get(key, options).await }
        })
        .await
    }

    async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<etcd_client::PutOptions>,
    ) -> Result<etcd_client::PutResponse, etcd_client::Error> {
        let (key, value) = (key.into(), value.into());
        self.unsent_again(|mut kv| {
            let (key, value, options) = (key.clone(), value.clone(), options.clone());
            async move { kv.put(key, value, options).await }
        })
        .await
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        self.unsent_again(|mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    fn key(&self, path: &str) -> String {
        format!("{}{}", self.root, path)
    }

    fn lock_key(&self, key: &str) -> String {
        self.key(&format!("{LOCKS_PREFIX}{key}"))
    }

    fn configuration_key(&self, id: &str) -> String {
        match id {
            configuration_ids::VERSION => self.key("/version"),
            configuration_ids::ENCRYPTION_KEY_LABEL => self.key("/encryption-key"),
            other => self.key(&format!("/v1/configuration/{other}")),
        }
    }

    fn domain_key(&self, domain: &str) -> String {
        self.key(&format!("/v1/domain/{domain}"))
    }

    fn task_key(&self, guid: &str) -> String {
        self.key(&format!("/v1/task/{guid}"))
    }

    fn schedule_key(&self, guid: &str) -> String {
        self.key(&format!("/v1/desired_lrp/schedule/{guid}"))
    }

    fn run_key(&self, guid: &str) -> String {
        self.key(&format!("/v1/desired_lrp/run/{guid}"))
    }

    fn actual_prefix(&self, guid: &str) -> String {
        self.key(&format!("/v1/actual/{guid}/"))
    }

    fn actual_key(&self, key: &ActualLrpKey) -> String {
        self.key(&format!(
            "/v1/actual/{}/{}/{}",
            key.process_guid,
            key.index,
            key.presence.key_leaf()
        ))
    }

    async fn get_raw(&self, key: &str) -> StoreResult<Option<(Vec<u8>, i64)>> {
        let response = self.get(key, None).await?;
        Ok(response
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        match self.get_raw(key).await? {
            None => Ok(None),
            Some((value, _)) => decode(key.as_bytes(), &value).map(Some),
        }
    }

    /// Every key-value pair under `prefix`, read a page at a time, all pages at the revision
    /// of the first, so a list is one consistent snapshot.
    async fn scan(&self, prefix: &str) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let end = prefix_end(prefix.as_bytes());
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut out = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut response = self.get(start.clone(), Some(options)).await?;
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).unwrap_or_default();
            }
            let kvs = response.take_kvs();
            let full_page = kvs.len() as i64 == PAGE;
            for kv in kvs {
                out.push(kv.into_key_value());
            }
            match (full_page, out.last()) {
                (true, Some((last, _))) => {
                    start = last.clone();
                    start.push(0);
                }
                _ => return Ok(out),
            }
        }
    }

    async fn scan_json<T: DeserializeOwned>(&self, prefix: &str) -> StoreResult<Vec<T>> {
        self.scan(prefix)
            .await?
            .iter()
            .map(|(k, v)| decode(k, v))
            .collect()
    }

    /// Puts only if the key does not exist yet.
    async fn create(&self, puts: Vec<(String, Vec<u8>)>) -> StoreResult<()> {
        let compares = puts
            .iter()
            .map(|(k, _)| Compare::create_revision(k.as_str(), CompareOp::Equal, 0))
            .collect::<Vec<_>>();
        let ops = puts
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, None))
            .collect::<Vec<_>>();
        let response = self.txn(Txn::new().when(compares).and_then(ops)).await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(StoreError::Exists)
        }
    }

    /// Puts only if the first key exists; `NotFound` otherwise.
    async fn replace(&self, puts: Vec<(String, Vec<u8>)>) -> StoreResult<()> {
        let Some((guard, _)) = puts.first() else {
            return Ok(());
        };
        let compare = Compare::create_revision(guard.as_str(), CompareOp::Greater, 0);
        let ops = puts
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, None))
            .collect::<Vec<_>>();
        let response = self.txn(Txn::new().when([compare]).and_then(ops)).await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn remove(&self, keys: Vec<String>) -> StoreResult<()> {
        let Some(guard) = keys.first() else {
            return Ok(());
        };
        let compare = Compare::create_revision(guard.as_str(), CompareOp::Greater, 0);
        let ops = keys
            .iter()
            .map(|k| TxnOp::delete(k.as_str(), None))
            .collect::<Vec<_>>();
        let response = self.txn(Txn::new().when([compare]).and_then(ops)).await?;
        if response.succeeded() {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    /// Read-modify-write of one JSON value guarded by its mod revision, retried on a lost race.
    async fn modify_json<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        mutation: &Mutation<'_, T>,
    ) -> StoreResult<T> {
        for attempt in 0..CAS_ATTEMPTS {
            let (value, revision) = self.get_raw(key).await?.ok_or(StoreError::NotFound)?;
            let next = mutation(decode(key.as_bytes(), &value)?)?;
            let compare = Compare::mod_revision(key, CompareOp::Equal, revision);
            let put = TxnOp::put(key, encode(&next)?, None);
            let response = self.txn(Txn::new().when([compare]).and_then([put])).await?;
            if response.succeeded() {
                return Ok(next);
            }
            contention_pause(attempt).await;
        }
        Err(StoreError::Contention)
    }
}

/// A short, growing pause after a lost compare-and-swap, so racing writers spread out.
async fn contention_pause(attempt: usize) {
    let micros = 100u64 << attempt.min(8);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}

/// The smallest key greater than every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> Backend {
        Backend::Etcd
    }

    async fn configuration(&self, id: &str) -> StoreResult<Option<String>> {
        Ok(self
            .get_raw(&self.configuration_key(id))
            .await?
            .map(|(v, _)| String::from_utf8_lossy(&v).into_owned()))
    }

    async fn set_configuration(&self, id: &str, value: &str) -> StoreResult<()> {
        self.put(self.configuration_key(id), value, None).await?;
        Ok(())
    }

    async fn upsert_domain(&self, domain: &DomainRecord) -> StoreResult<()> {
        self.put(self.domain_key(&domain.domain), encode(domain)?, None)
            .await?;
        Ok(())
    }

    async fn domains(&self) -> StoreResult<Vec<DomainRecord>> {
        self.scan_json(&self.key("/v1/domain/")).await
    }

    async fn delete_domain(&self, domain: &str) -> StoreResult<()> {
        self.remove(vec![self.domain_key(domain)]).await
    }

    async fn insert_task(&self, task: &TaskRecord) -> StoreResult<()> {
        self.create(vec![(self.task_key(&task.guid), encode(task)?)])
            .await
    }

    async fn task(&self, guid: &str) -> StoreResult<Option<TaskRecord>> {
        self.get_json(&self.task_key(guid)).await
    }

    async fn tasks(&self, filter: &TaskFilter) -> StoreResult<Vec<TaskRecord>> {
        let tasks: Vec<TaskRecord> = self.scan_json(&self.key("/v1/task/")).await?;
        Ok(tasks.into_iter().filter(|t| filter.matches(t)).collect())
    }

    async fn update_task(&self, task: &TaskRecord) -> StoreResult<()> {
        self.replace(vec![(self.task_key(&task.guid), encode(task)?)])
            .await
    }

    async fn modify_task(
        &self,
        guid: &str,
        mutation: &Mutation<'_, TaskRecord>,
    ) -> StoreResult<TaskRecord> {
        let guarded = |task: TaskRecord| {
            let next = mutation(task)?;
            if next.guid != guid {
                return Err(StoreError::Rejected(
                    "a mutation may not change the task guid".into(),
                ));
            }
            Ok(next)
        };
        self.modify_json(&self.task_key(guid), &guarded).await
    }

    async fn delete_task(&self, guid: &str) -> StoreResult<()> {
        self.remove(vec![self.task_key(guid)]).await
    }

    async fn insert_desired_lrp(&self, lrp: &DesiredLrpRecord) -> StoreResult<()> {
        let guid = &lrp.scheduling.process_guid;
        self.create(vec![
            (self.schedule_key(guid), encode(&lrp.scheduling)?),
            (self.run_key(guid), lrp.run_info.clone().into_bytes()),
        ])
        .await
    }

    async fn desired_lrp(&self, process_guid: &str) -> StoreResult<Option<DesiredLrpRecord>> {
        let Some(scheduling) = self
            .get_json::<DesiredLrpSchedulingRecord>(&self.schedule_key(process_guid))
            .await?
        else {
            return Ok(None);
        };
        let run_key = self.run_key(process_guid);
        let (run_info, _) = self.get_raw(&run_key).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("{run_key} is missing beside its scheduling info"))
        })?;
        Ok(Some(DesiredLrpRecord {
            scheduling,
            run_info: String::from_utf8_lossy(&run_info).into_owned(),
        }))
    }

    async fn desired_lrps(&self, filter: &DesiredLrpFilter) -> StoreResult<Vec<DesiredLrpRecord>> {
        // The two scans run together: at 250,000 LRPs each is hundreds of pages read one
        // after another, and a server's start-up waits on them.
        let run_prefix = self.run_key("");
        let (schedulings, runs) = futures::try_join!(
            self.desired_lrp_scheduling_infos(filter),
            self.scan(&run_prefix)
        )?;
        if schedulings.is_empty() {
            return Ok(Vec::new());
        }
        let mut run_infos: std::collections::HashMap<String, String> = runs
            .into_iter()
            .map(|(k, v)| {
                let key = String::from_utf8_lossy(&k[run_prefix.len()..]).into_owned();
                (key, String::from_utf8_lossy(&v).into_owned())
            })
            .collect();
        schedulings
            .into_iter()
            .map(|scheduling| {
                let run_info = run_infos.remove(&scheduling.process_guid).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "run info of {} is missing beside its scheduling info",
                        scheduling.process_guid
                    ))
                })?;
                Ok(DesiredLrpRecord {
                    scheduling,
                    run_info,
                })
            })
            .collect()
    }

    async fn desired_lrp_scheduling_infos(
        &self,
        filter: &DesiredLrpFilter,
    ) -> StoreResult<Vec<DesiredLrpSchedulingRecord>> {
        if filter.process_guids.as_ref().is_some_and(|g| g.is_empty()) {
            return Ok(Vec::new());
        }
        let all: Vec<DesiredLrpSchedulingRecord> = self.scan_json(&self.schedule_key("")).await?;
        Ok(all.into_iter().filter(|s| filter.matches(s)).collect())
    }

    async fn update_desired_lrp(&self, lrp: &DesiredLrpRecord) -> StoreResult<()> {
        let guid = &lrp.scheduling.process_guid;
        self.replace(vec![
            (self.schedule_key(guid), encode(&lrp.scheduling)?),
            (self.run_key(guid), lrp.run_info.clone().into_bytes()),
        ])
        .await
    }

    async fn modify_desired_lrp(
        &self,
        process_guid: &str,
        mutation: &Mutation<'_, DesiredLrpRecord>,
    ) -> StoreResult<DesiredLrpRecord> {
        let schedule_key = self.schedule_key(process_guid);
        let run_key = self.run_key(process_guid);
        for attempt in 0..CAS_ATTEMPTS {
            let (scheduling, schedule_rev) = self
                .get_raw(&schedule_key)
                .await?
                .ok_or(StoreError::NotFound)?;
            let (run_info, run_rev) = self.get_raw(&run_key).await?.ok_or(StoreError::NotFound)?;
            let current = DesiredLrpRecord {
                scheduling: decode(schedule_key.as_bytes(), &scheduling)?,
                run_info: String::from_utf8_lossy(&run_info).into_owned(),
            };
            let next = mutation(current)?;
            if next.scheduling.process_guid != process_guid {
                return Err(StoreError::Rejected(
                    "a mutation may not change the process guid".into(),
                ));
            }
            let txn = Txn::new()
                .when([
                    Compare::mod_revision(schedule_key.as_str(), CompareOp::Equal, schedule_rev),
                    Compare::mod_revision(run_key.as_str(), CompareOp::Equal, run_rev),
                ])
                .and_then([
                    TxnOp::put(schedule_key.as_str(), encode(&next.scheduling)?, None),
                    TxnOp::put(run_key.as_str(), next.run_info.clone().into_bytes(), None),
                ]);
            if self.txn(txn).await?.succeeded() {
                return Ok(next);
            }
            contention_pause(attempt).await;
        }
        Err(StoreError::Contention)
    }

    async fn delete_desired_lrp(&self, process_guid: &str) -> StoreResult<()> {
        self.remove(vec![
            self.schedule_key(process_guid),
            self.run_key(process_guid),
        ])
        .await
    }

    async fn insert_actual_lrp(&self, lrp: &ActualLrpRecord) -> StoreResult<()> {
        self.create(vec![(self.actual_key(&lrp.key()), encode(lrp)?)])
            .await
    }

    async fn actual_lrp(&self, key: &ActualLrpKey) -> StoreResult<Option<ActualLrpRecord>> {
        self.get_json(&self.actual_key(key)).await
    }

    async fn actual_lrps(&self, filter: &ActualLrpFilter) -> StoreResult<Vec<ActualLrpRecord>> {
        let mut out: Vec<ActualLrpRecord> = match &filter.process_guids {
            Some(guids) => {
                let mut out = Vec::new();
                for guid in guids {
                    out.extend(
                        self.scan_json::<ActualLrpRecord>(&self.actual_prefix(guid))
                            .await?,
                    );
                }
                out
            }
            None => self.scan_json(&self.key("/v1/actual/")).await?,
        };
        out.retain(|lrp| filter.matches(lrp));
        out.sort_by_key(ActualLrpRecord::key);
        out.dedup_by(|a, b| a.key() == b.key());
        Ok(out)
    }

    async fn update_actual_lrp(&self, lrp: &ActualLrpRecord) -> StoreResult<()> {
        self.replace(vec![(self.actual_key(&lrp.key()), encode(lrp)?)])
            .await
    }

    async fn modify_actual_lrp(
        &self,
        key: &ActualLrpKey,
        mutation: &Mutation<'_, ActualLrpRecord>,
    ) -> StoreResult<ActualLrpRecord> {
        let guarded = |lrp: ActualLrpRecord| {
            let next = mutation(lrp)?;
            if next.key() != *key {
                return Err(StoreError::Rejected(
                    "a mutation may not change an actual LRP's key".into(),
                ));
            }
            Ok(next)
        };
        self.modify_json(&self.actual_key(key), &guarded).await
    }

    async fn delete_actual_lrp(&self, key: &ActualLrpKey) -> StoreResult<()> {
        self.remove(vec![self.actual_key(key)]).await
    }

    async fn upsert_cell(&self, cell: &CellRecord) -> StoreResult<()> {
        self.put(
            self.key(&format!("/v1/cell/{}", cell.cell_id)),
            encode(cell)?,
            None,
        )
        .await?;
        Ok(())
    }

    async fn cells(&self) -> StoreResult<Vec<CellRecord>> {
        self.scan_json(&self.key("/v1/cell/")).await
    }

    async fn delete_cell(&self, cell_id: &str) -> StoreResult<()> {
        self.remove(vec![self.key(&format!("/v1/cell/{cell_id}"))])
            .await
    }

    async fn lock(&self, key: &str) -> StoreResult<Option<LockRecord>> {
        self.get_json(&self.lock_key(key)).await
    }

    async fn locks(&self, lock_type: Option<&str>) -> StoreResult<Vec<LockRecord>> {
        let mut rows: Vec<LockRecord> = self.scan_json(&self.key(LOCKS_PREFIX)).await?;
        if let Some(lock_type) = lock_type {
            rows.retain(|row| row.lock_type == lock_type);
        }
        Ok(rows)
    }

    async fn modify_lock(
        &self,
        key: &str,
        mutation: &Mutation<'_, Option<LockRecord>>,
    ) -> StoreResult<Option<LockRecord>> {
        let path = self.lock_key(key);
        for attempt in 0..CAS_ATTEMPTS {
            let (current, compare) = match self.get_raw(&path).await? {
                Some((value, revision)) => (
                    Some(decode::<LockRecord>(path.as_bytes(), &value)?),
                    Compare::mod_revision(path.as_str(), CompareOp::Equal, revision),
                ),
                None => (
                    None,
                    Compare::create_revision(path.as_str(), CompareOp::Equal, 0),
                ),
            };
            let next = mutation(current.clone())?;
            let op = match &next {
                Some(next) if next.key != key => {
                    return Err(StoreError::Rejected(
                        "a mutation may not change the lock key".into(),
                    ))
                }
                _ if next == current => return Ok(next),
                Some(next) => TxnOp::put(path.as_str(), encode(next)?, None),
                None => TxnOp::delete(path.as_str(), None),
            };
            let response = self.txn(Txn::new().when([compare]).and_then([op])).await?;
            if response.succeeded() {
                return Ok(next);
            }
            contention_pause(attempt).await;
        }
        Err(StoreError::Contention)
    }

    async fn write_actual_lrps(&self, writes: &[ActualLrpWrite]) -> StoreResult<()> {
        let mut txn = StagedTxn::default();
        for write in writes {
            self.stage_actual(write, &mut txn)?;
        }
        self.commit_staged(txn).await
    }

    async fn write_records(&self, writes: &[RecordWrite]) -> StoreResult<()> {
        let mut txn = StagedTxn::default();
        for write in writes {
            match write {
                RecordWrite::Actual(write) => self.stage_actual(write, &mut txn)?,
                RecordWrite::Desired(Write::Insert(lrp)) => {
                    let guid = &lrp.scheduling.process_guid;
                    txn.create(self.schedule_key(guid), encode(&lrp.scheduling)?);
                    txn.create(self.run_key(guid), lrp.run_info.clone().into_bytes());
                }
                RecordWrite::Desired(Write::Update(lrp)) => {
                    let guid = &lrp.scheduling.process_guid;
                    txn.replace(self.schedule_key(guid), encode(&lrp.scheduling)?);
                    txn.replace(self.run_key(guid), lrp.run_info.clone().into_bytes());
                }
                RecordWrite::Desired(Write::Delete(guid)) => {
                    txn.remove(self.schedule_key(guid));
                    txn.remove(self.run_key(guid));
                }
                RecordWrite::Task(Write::Insert(task)) => {
                    txn.create(self.task_key(&task.guid), encode(task)?)
                }
                RecordWrite::Task(Write::Update(task)) => {
                    txn.replace(self.task_key(&task.guid), encode(task)?)
                }
                RecordWrite::Task(Write::Delete(guid)) => txn.remove(self.task_key(guid)),
            }
        }
        self.commit_staged(txn).await
    }
}

/// A transaction being built from record writes: each write's guard and operation.
#[derive(Default)]
struct StagedTxn {
    compares: Vec<Compare>,
    ops: Vec<TxnOp>,
    /// Keys that must not exist beforehand: which of them does names a failure `Exists`.
    created: Vec<String>,
}

impl StagedTxn {
    fn create(&mut self, key: String, value: Vec<u8>) {
        self.compares
            .push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
        self.ops.push(TxnOp::put(key.as_str(), value, None));
        self.created.push(key);
    }

    fn replace(&mut self, key: String, value: Vec<u8>) {
        self.compares.push(Compare::create_revision(
            key.as_str(),
            CompareOp::Greater,
            0,
        ));
        self.ops.push(TxnOp::put(key, value, None));
    }

    fn remove(&mut self, key: String) {
        self.compares.push(Compare::create_revision(
            key.as_str(),
            CompareOp::Greater,
            0,
        ));
        self.ops.push(TxnOp::delete(key, None));
    }
}

impl EtcdStore {
    fn stage_actual(&self, write: &ActualLrpWrite, txn: &mut StagedTxn) -> StoreResult<()> {
        match write {
            Write::Insert(lrp) => txn.create(self.actual_key(&lrp.key()), encode(lrp)?),
            Write::Update(lrp) => txn.replace(self.actual_key(&lrp.key()), encode(lrp)?),
            Write::Delete(key) => txn.remove(self.actual_key(key)),
        }
        Ok(())
    }

    /// Commits every staged write or none; a failed guard is named as SQL would name it: an
    /// insert over an existing record, else a missing record.
    async fn commit_staged(&self, txn: StagedTxn) -> StoreResult<()> {
        if txn.ops.is_empty() {
            return Ok(());
        }
        let response = self
            .txn(Txn::new().when(txn.compares).and_then(txn.ops))
            .await?;
        if response.succeeded() {
            return Ok(());
        }
        for key in &txn.created {
            if self.get_raw(key).await?.is_some() {
                return Err(StoreError::Exists);
            }
        }
        Err(StoreError::NotFound)
    }
}

#[cfg(test)]
mod tests {
    use super::{never_sent, prefix_end};

    #[test]
    fn prefix_end_is_the_next_key() {
        assert_eq!(prefix_end(b"/v1/task/"), b"/v1/task0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
    }

    #[test]
    fn only_a_refused_connection_counts_as_never_sent() {
        let status = |code, message: &str| {
            etcd_client::Error::GRpcStatus(tonic::Status::new(code, message.to_owned()))
        };
        assert!(never_sent(&status(
            tonic::Code::Unavailable,
            "tcp connect error"
        )));
        // Sent, and perhaps applied: a reset or a timeout must not be sent again.
        assert!(!never_sent(&status(
            tonic::Code::Unavailable,
            "connection reset"
        )));
        assert!(!never_sent(&status(
            tonic::Code::DeadlineExceeded,
            "tcp connect error"
        )));
        assert!(!never_sent(&status(
            tonic::Code::Unknown,
            "tcp connect error"
        )));
    }
}
