//! Locket on every backend: upstream's lock and presence semantics over gRPC (`bbs locket`),
//! the BBS's active/passive lock (in locket, and in the store with no locket), failover with
//! no acknowledged write lost, and cells from locket presences (bbs-reference §3.9, §4.1, §10).

#[macro_use]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bbs_actors::converger::Converge;
use bbs_actors::{ActorSettings, ExternalCells};
use bbs_locket::models::locket_client::LocketClient;
use bbs_locket::models::*;
use bbs_locket::{Locket, LocketError};
use bbs_models as m;
use bbs_store::{Backend, Presence};
use prost::Message;
use support::inproc::{FakeServer, TestBbs};
use support::locket::{client, client_keys, LocketProcess};
use support::{config_json, Server};

#[allow(deprecated)]
fn resource(key: &str, owner: &str, type_code: TypeCode, value: &str) -> Resource {
    Resource {
        key: key.into(),
        owner: owner.into(),
        value: value.into(),
        r#type: String::new(),
        type_code: type_code as i32,
    }
}

fn presence_json(cell: &str) -> String {
    bbs_actors::cells::presence_to_json(&m::CellPresence {
        cell_id: cell.into(),
        rep_address: "http://127.0.0.1:1".into(),
        rep_url: "http://127.0.0.1:1".into(),
        zone: "z1".into(),
        ..Default::default()
    })
}

/// A raw tonic client, for requests the typed [`Locket`] trait cannot express.
async fn raw_client(address: &str) -> LocketClient<tonic::transport::Channel> {
    LocketClient::new(
        bbs_locket::client::channel(&support::locket::client_config(address)).unwrap(),
    )
}

async fn locks_and_releases_as_upstream_does(backend: Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let locket = LocketProcess::start(&store.config).await;
    let c = client(&locket.address);
    let lock = |owner: &str| resource("bbs", owner, TypeCode::Lock, "");

    c.lock(&lock("node-a"), 15).await.unwrap();
    let held = c.fetch("bbs").await.unwrap();
    assert_eq!(
        (held.owner.as_str(), held.type_code, held.value.as_str()),
        ("node-a", TypeCode::Lock as i32, "")
    );
    #[allow(deprecated)]
    let stored_type = held.r#type.clone();
    assert_eq!(stored_type, "lock");
    assert_eq!(
        c.lock(&lock("node-b"), 15).await,
        Err(LocketError::LockCollision)
    );
    let first = store.store.lock("bbs").await.unwrap().unwrap();
    c.lock(&lock("node-a"), 15).await.unwrap();
    let refreshed = store.store.lock("bbs").await.unwrap().unwrap();
    assert_eq!(
        (refreshed.modified_index, &refreshed.modified_id),
        (first.modified_index + 1, &first.modified_id),
        "a refresh bumps the index and keeps the id"
    );
    assert_eq!(first.modified_index, 1);
    assert_eq!(first.modified_id.len(), 36, "a guid: {}", first.modified_id);

    assert_eq!(
        c.release(&lock("node-b")).await,
        Err(LocketError::LockCollision)
    );
    c.release(&lock("node-a")).await.unwrap();
    assert_eq!(c.fetch("bbs").await, Err(LocketError::ResourceNotFound));
    c.release(&lock("node-a")).await.unwrap();
    assert_eq!(store.store.lock("bbs").await.unwrap(), None);

    // Presences: FetchAll by type, each row as upstream's locket writes it.
    c.lock(
        &resource(
            "cell-2",
            "rep-2",
            TypeCode::Presence,
            &presence_json("cell-2"),
        ),
        15,
    )
    .await
    .unwrap();
    c.lock(
        &resource(
            "cell-1",
            "rep-1",
            TypeCode::Presence,
            &presence_json("cell-1"),
        ),
        15,
    )
    .await
    .unwrap();
    c.lock(&lock("node-a"), 15).await.unwrap();
    let presences = c.fetch_all(TypeCode::Presence).await.unwrap();
    let keys: Vec<&str> = presences.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, vec!["cell-1", "cell-2"]);
    assert!(presences
        .iter()
        .all(|r| r.type_code == TypeCode::Presence as i32));
    let locks = c.fetch_all(TypeCode::Lock).await.unwrap();
    assert_eq!(
        locks.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        vec!["bbs"]
    );
    let row = store.store.lock("cell-1").await.unwrap().unwrap();
    assert_eq!(
        bbs_store::LockRecord {
            modified_id: String::new(),
            ..row.clone()
        },
        bbs_store::LockRecord {
            key: "cell-1".into(),
            owner: "rep-1".into(),
            value: presence_json("cell-1"),
            lock_type: "presence".into(),
            modified_index: 1,
            modified_id: String::new(),
            ttl: 15,
        }
    );

    // Expiry: a row not refreshed within its TTL is released.
    c.lock(&resource("short", "me", TypeCode::Lock, ""), 1)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.fetch("short").await.is_ok() {
        assert!(Instant::now() < deadline, "the lock did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(store.store.lock("short").await.unwrap(), None);
    // A row refreshed within its TTL stays.
    for _ in 0..4 {
        c.lock(&resource("kept", "me", TypeCode::Lock, ""), 2)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    assert_eq!(c.fetch("kept").await.unwrap().owner, "me");
}

async fn refuses_bad_requests_with_lockets_errors(backend: Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let locket = LocketProcess::start(&store.config).await;
    let mut raw = raw_client(&locket.address).await;
    let lock = |resource: Option<Resource>, ttl: i64| LockRequest {
        resource,
        ttl_in_seconds: ttl,
    };
    let refused = |r: Result<tonic::Response<LockResponse>, tonic::Status>| {
        let status = r.expect_err("refused");
        (status.code(), status.message().to_owned())
    };
    let good = resource("bbs", "me", TypeCode::Lock, "");
    let cases = [
        (
            lock(Some(good.clone()), 0),
            tonic::Code::InvalidArgument,
            "invalid-ttl",
        ),
        (
            lock(Some(good.clone()), -5),
            tonic::Code::InvalidArgument,
            "invalid-ttl",
        ),
        (
            lock(Some(resource("bbs", "", TypeCode::Lock, "")), 15),
            tonic::Code::InvalidArgument,
            "invalid-owner",
        ),
        (
            lock(Some(resource("bbs", "me", TypeCode::Unknown, "")), 15),
            tonic::Code::NotFound,
            "invalid-type",
        ),
        (
            lock(
                Some(Resource {
                    type_code: 9,
                    ..good.clone()
                }),
                15,
            ),
            tonic::Code::NotFound,
            "invalid-type",
        ),
        (lock(None, 15), tonic::Code::NotFound, "invalid-type"),
    ];
    for (request, code, message) in cases {
        let got = refused(raw.lock(request.clone()).await);
        assert_eq!(got, (code, message.to_owned()), "{request:?}");
    }
    #[allow(deprecated)]
    let unknown_type = FetchAllRequest {
        r#type: "lock".into(),
        type_code: 0,
    };
    let status = raw.fetch_all(unknown_type).await.expect_err("refused");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::NotFound, "invalid-type")
    );
    let status = raw
        .fetch(FetchRequest {
            key: "nothing".into(),
        })
        .await
        .expect_err("not found");
    assert_eq!(
        (status.code(), status.message()),
        (tonic::Code::NotFound, "resource-not-found")
    );
    // Nothing refused was written.
    assert_eq!(store.store.locks(None).await.unwrap(), vec![]);
    // Upstream's locket takes an empty key; so does ours (docs/locket.md).
    raw.lock(lock(Some(resource("", "me", TypeCode::Lock, "")), 15))
        .await
        .unwrap();
    assert_eq!(store.store.lock("").await.unwrap().unwrap().owner, "me");
    // A request that is not protobuf is refused and the server goes on.
    let garbage = raw_bytes_call(&locket.address).await;
    assert_eq!(garbage, tonic::Code::Internal);
    raw.fetch(FetchRequest { key: "".into() }).await.unwrap();
}

/// Sends bytes that do not decode as a LockRequest; the gRPC status code answered.
async fn raw_bytes_call(address: &str) -> tonic::Code {
    #[derive(Clone, PartialEq, Message)]
    struct NotALockRequest {
        #[prost(int64, tag = "1")]
        wrong_wire_type: i64,
    }
    let channel = bbs_locket::client::channel(&support::locket::client_config(address)).unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<NotALockRequest, LockResponse>::default();
    let path = http::uri::PathAndQuery::from_static("/models.Locket/Lock");
    grpc.unary(
        tonic::Request::new(NotALockRequest { wrong_wire_type: 7 }),
        path,
        codec,
    )
    .await
    .expect_err("undecodable")
    .code()
}

/// The config of one of several BBS nodes on `store`: a short lock TTL so failover is quick.
fn node(
    store: &bbs_store::StoreConfig,
    uuid: &str,
    locket: Option<&LocketProcess>,
) -> serde_json::Value {
    let mut extra = serde_json::json!({
        "uuid": uuid,
        "lock_ttl": "4s",
        "lock_retry_interval": "500ms",
    });
    if let (Some(locket), Some(extra)) = (locket, extra.as_object_mut()) {
        if let Some(keys) = client_keys(&locket.address).as_object() {
            extra.extend(keys.clone());
        }
    }
    config_json(store, extra)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_healthy(server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.healthy().await {
        assert!(Instant::now() < deadline, "no health:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Acknowledged writes and who acknowledged them.
#[derive(Default)]
struct Ledger {
    acknowledged: Vec<(String, usize, Instant)>,
    stop: bool,
}

/// Desires tasks one after another against the first node that takes the connection, as a
/// Diego client pointed at both addresses does, recording each acknowledged one.
fn write_load(client: reqwest::Client, apis: Vec<String>, ledger: Arc<Mutex<Ledger>>) {
    actix_web::rt::spawn(async move {
        for i in 0.. {
            if ledger.lock().unwrap().stop {
                return;
            }
            let guid = format!("task-{i}");
            let body = support::fixtures::desire_task(&guid).encode_to_vec();
            for (n, api) in apis.iter().enumerate() {
                let sent = client
                    .post(format!("{api}/v1/tasks/desire.r2"))
                    .timeout(Duration::from_secs(5))
                    .body(body.clone())
                    .send()
                    .await;
                let Ok(response) = sent else { continue };
                if response.status() != 200 {
                    continue;
                }
                let Ok(bytes) = response.bytes().await else {
                    continue;
                };
                if let Ok(reply) = support::ErrorOnly::decode(bytes) {
                    if reply.error.is_none() {
                        ledger
                            .lock()
                            .unwrap()
                            .acknowledged
                            .push((guid.clone(), n, Instant::now()));
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
}

async fn task_guids(server: &Server) -> std::collections::HashSet<String> {
    let reply: m::TasksResponse = server
        .call("/v1/tasks/list.r2", &m::TasksRequest::default())
        .await;
    assert_eq!(reply.error, None);
    reply.tasks.into_iter().map(|t| t.task_guid).collect()
}

/// Two nodes on one store: one serves, the other waits with its API closed; `kill -9` of the
/// active under load hands over within lock_ttl + 5 s with every acknowledged write kept; a
/// SIGTERM hands over at once (the lock is released, not left to expire).
async fn failover(backend: Backend, with_locket: bool) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let locket = match with_locket {
        true => Some(LocketProcess::start(&store.config).await),
        false => None,
    };
    let mut a = Server::start(node(&store.config, "node-a", locket.as_ref())).await;
    let mut b = Server::spawn(node(&store.config, "node-b", locket.as_ref()));
    wait_healthy(&b).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        b.api_refused().await,
        "the passive node's API must stay closed"
    );
    assert_eq!(metric(&a.metrics().await, "bbs_lock_held"), Some(1.0));
    assert_eq!(metric(&b.metrics().await, "bbs_lock_held"), Some(0.0));

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    write_load(
        a.client().clone(),
        vec![a.api.clone(), b.api.clone()],
        Arc::clone(&ledger),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.kill();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(4 + 5);
    let taken_over = loop {
        let by_b = ledger
            .lock()
            .unwrap()
            .acknowledged
            .iter()
            .find(|(_, n, at)| *n == 1 && *at > killed)
            .map(|(_, _, at)| *at);
        if let Some(at) = by_b {
            break at;
        }
        assert!(
            Instant::now() < deadline,
            "the passive did not take over:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    ledger.lock().unwrap().stop = true;
    tokio::time::sleep(Duration::from_millis(200)).await;
    eprintln!(
        "{backend} (locket: {with_locket}): the passive served {:?} after kill -9 of the active",
        taken_over - killed
    );
    let acknowledged: Vec<String> = ledger
        .lock()
        .unwrap()
        .acknowledged
        .iter()
        .map(|(g, _, _)| g.clone())
        .collect();
    assert!(
        acknowledged.len() > 10,
        "the load ran: {}",
        acknowledged.len()
    );
    // The first node held the lock before it read anything, so it had nothing to catch up
    // on; the standby loaded while the other acted, so it caught up when it took over.
    assert!(a.log().contains("\"bbs.catch-up-skipped\""), "{}", a.log());
    assert!(
        b.log().contains("\"bbs.caught-up\"") && !b.log().contains("catch-up-skipped"),
        "{}",
        b.log()
    );
    let stored = task_guids(&b).await;
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|g| !stored.contains(*g))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert_eq!(metric(&b.metrics().await, "bbs_lock_held"), Some(1.0));
    assert_eq!(
        metric(&b.metrics().await, "bbs_lock_acquisitions_total"),
        Some(1.0)
    );

    let c = Server::spawn(node(&store.config, "node-c", locket.as_ref()));
    wait_healthy(&c).await;
    assert!(c.api_refused().await);
    assert_eq!(b.stop(), Some(0));
    let stopped = Instant::now();
    c.wait_ready().await;
    assert!(
        stopped.elapsed() < Duration::from_secs(4),
        "SIGTERM released the lock: the next node took it before the TTL ran out ({:?})",
        stopped.elapsed()
    );
    assert_eq!(task_guids(&c).await.len(), stored.len());
}

async fn active_passive_with_the_store_lock(backend: Backend) {
    failover(backend, false).await;
}

async fn active_passive_with_locket(backend: Backend) {
    failover(backend, true).await;
}

/// Cells are the presences in locket: one registered over gRPC appears in the cell list; an
/// undecodable one is skipped; when a presence's TTL lapses, convergence finds the cell gone.
async fn list(b: &TestBbs) -> Vec<String> {
    let reply: m::CellsResponse = b
        .call("/v1/cells/list.r1", &support::ErrorOnly::default())
        .await;
    assert_eq!(reply.error, None);
    reply.cells.into_iter().map(|c| c.cell_id).collect()
}

async fn locket_presences_are_the_cells(backend: Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let locket = LocketProcess::start(&store.config).await;
    let c = client(&locket.address);
    let auctioneer = FakeServer::start(202).await;
    let cells = bbs::locket_cells::LocketCells {
        locket: Arc::new(client(&locket.address)),
        log: support::inproc::quiet_log(),
    };
    let settings = ActorSettings {
        auctioneer_address: Some(auctioneer.url.clone()),
        communication_timeout: Duration::from_secs(2),
        cell_directory: Some(ExternalCells(Arc::new(cells))),
        ..ActorSettings::default()
    };
    let b = TestBbs::on(store, settings).await;

    assert_eq!(list(&b).await, Vec::<String>::new());
    c.lock(
        &resource(
            "cell-1",
            "rep-1",
            TypeCode::Presence,
            &presence_json("cell-1"),
        ),
        2,
    )
    .await
    .unwrap();
    c.lock(
        &resource("cell-bad", "rep-x", TypeCode::Presence, "{not json"),
        60,
    )
    .await
    .unwrap();
    assert_eq!(list(&b).await, vec!["cell-1"]);

    // Registering over HTTP would be invisible with locket: refused, naming why.
    let reply: m::RegisterCellResponse = b
        .call(
            "/v1/cells/register",
            &m::RegisterCellRequest {
                cell_presence: Some(m::CellPresence {
                    cell_id: "cell-9".into(),
                    ..Default::default()
                }),
                ttl_seconds: 10,
            },
        )
        .await;
    let error = reply.error.expect("refused");
    assert_eq!(
        (error.r#type, error.message.as_str()),
        (
            m::error::Type::InvalidRequest as i32,
            "cells register in locket: this server reads presences from locket_address"
        )
    );

    let desire: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(support::fixtures::desired_lrp("web", 1)),
            },
        )
        .await;
    assert_eq!(desire.error, None);
    let start = m::StartActualLrpRequest {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: "web".into(),
            index: 0,
            domain: "cf-apps".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: "ig-0".into(),
            cell_id: "cell-1".into(),
        }),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let started: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/start.r1", &start).await;
    assert_eq!(started.error, None);
    let report = b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!(report.cells, 1, "cell-1 is present (cell-bad is skipped)");

    // An instance on the cell whose presence does not parse: retiring it is an error (as
    // upstream's CellById is), never a deletion of an instance its cell may still run.
    let desire: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(support::fixtures::desired_lrp("api", 1)),
            },
        )
        .await;
    assert_eq!(desire.error, None);
    let on_bad_cell = m::StartActualLrpRequest {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: "api".into(),
            index: 0,
            domain: "cf-apps".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: "ig-api".into(),
            cell_id: "cell-bad".into(),
        }),
        ..start.clone()
    };
    let started: m::ActualLrpLifecycleResponse =
        b.call("/v1/actual_lrps/start.r1", &on_bad_cell).await;
    assert_eq!(started.error, None);
    let retired: m::ActualLrpLifecycleResponse = b
        .call(
            "/v1/actual_lrps/retire",
            &m::RetireActualLrpRequest {
                actual_lrp_key: on_bad_cell.actual_lrp_key.clone(),
            },
        )
        .await;
    let error = retired.error.expect("the presence does not parse");
    assert_eq!(
        error.r#type,
        m::error::Type::Deserialize as i32,
        "{error:?}"
    );
    let kept: m::ActualLrpsResponse = b
        .call(
            "/v1/actual_lrps/list",
            &m::ActualLrpsRequest {
                process_guid: "api".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(kept.actual_lrps.len(), 1, "the instance is kept");

    // cell-1's rep stops refreshing: locket expires its presence.
    let deadline = Instant::now() + Duration::from_secs(10);
    while list(&b).await.contains(&"cell-1".to_owned()) {
        assert!(Instant::now() < deadline, "the presence did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!(report.cells, 0);
    let reply: m::ActualLrpsResponse = b
        .call(
            "/v1/actual_lrps/list",
            &m::ActualLrpsRequest {
                process_guid: "web".into(),
                ..Default::default()
            },
        )
        .await;
    let by_presence = |p: Presence| {
        reply
            .actual_lrps
            .iter()
            .find(|r| r.presence == p.as_i32())
            .cloned()
    };
    let suspect = by_presence(Presence::Suspect).expect("the instance is kept as a suspect");
    assert_eq!(
        (
            suspect.state.as_str(),
            suspect.actual_lrp_instance_key.unwrap().cell_id.as_str()
        ),
        ("RUNNING", "cell-1")
    );
    assert_eq!(by_presence(Presence::Ordinary).unwrap().state, "UNCLAIMED");
    // The replacement is sent to auction: the desire's auction of web/0, then this one.
    let web_auctions = || {
        auctioneer
            .received()
            .into_iter()
            .filter(|r| r.path == "/v1/lrps")
            .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
            .filter(|a| a["process_guid"] == "web" && a["indices"] == serde_json::json!([0]))
            .count()
    };
    assert!(
        support::inproc::eventually(Duration::from_secs(5), || web_auctions() >= 2).await,
        "auctions of web/0: {}",
        web_auctions()
    );
}

/// Every record list, each entry encoded and the entries sorted: equal lists mean equal
/// servers, whatever order each keeps its records in.
async fn everything(b: &TestBbs) -> Vec<Vec<Vec<u8>>> {
    let tasks: m::TasksResponse = b
        .call("/v1/tasks/list.r2", &m::TasksRequest::default())
        .await;
    let desired: m::DesiredLrpsResponse = b
        .call(
            "/v1/desired_lrps/list.r3",
            &m::DesiredLrpsRequest::default(),
        )
        .await;
    let actual: m::ActualLrpsResponse = b
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    let domains: m::DomainsResponse = b
        .call("/v1/domains/list", &support::ErrorOnly::default())
        .await;
    let sorted = |mut v: Vec<Vec<u8>>| {
        v.sort();
        v
    };
    vec![
        sorted(tasks.tasks.iter().map(|t| t.encode_to_vec()).collect()),
        sorted(
            desired
                .desired_lrps
                .iter()
                .map(|d| d.encode_to_vec())
                .collect(),
        ),
        sorted(
            actual
                .actual_lrps
                .iter()
                .map(|a| a.encode_to_vec())
                .collect(),
        ),
        sorted(
            domains
                .domains
                .iter()
                .map(|d| d.as_bytes().to_vec())
                .collect(),
        ),
    ]
}

/// A standby loaded before the active server's latest writes catches up on every kind of
/// change (new, changed and removed tasks, desired and actual LRPs; domains), writes nothing
/// and acts on nothing while it stands by.
async fn a_standby_catches_up_with_what_the_active_wrote(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let settings = || ActorSettings {
        auctioneer_address: Some(auctioneer.url.clone()),
        communication_timeout: Duration::from_secs(2),
        ..ActorSettings::default()
    };
    let Some(active) = TestBbs::start(backend, settings()).await else {
        return;
    };
    let desire_task = |guid: &str| support::fixtures::desire_task(guid);
    for guid in ["t-keep", "t-cancel", "t-delete"] {
        let reply: support::ErrorOnly =
            active.call("/v1/tasks/desire.r2", &desire_task(guid)).await;
        assert_eq!(reply.error, None);
    }
    for (guid, instances) in [("web", 2), ("gone", 1)] {
        let reply: m::DesiredLrpLifecycleResponse = active
            .call(
                "/v1/desired_lrp/desire.r2",
                &m::DesireLrpRequest {
                    desired_lrp: Some(support::fixtures::desired_lrp(guid, instances)),
                },
            )
            .await;
        assert_eq!(reply.error, None);
    }
    let standby = TestBbs::on(
        active.store.sharing(),
        ActorSettings {
            standby: true,
            ..settings()
        },
    )
    .await;
    assert_eq!(everything(&standby).await, everything(&active).await);

    // The active server changes every kind of record.
    let reply: support::ErrorOnly = active
        .call("/v1/tasks/desire.r2", &desire_task("t-new"))
        .await;
    assert_eq!(reply.error, None);
    for (path, guid) in [
        ("/v1/tasks/cancel", "t-cancel"),
        ("/v1/tasks/cancel", "t-delete"),
        ("/v1/tasks/resolving", "t-delete"),
        ("/v1/tasks/delete", "t-delete"),
    ] {
        let request = m::TaskGuidRequest {
            task_guid: guid.into(),
        };
        let reply: support::ErrorOnly = active.call(path, &request).await;
        assert_eq!(reply.error, None, "{path} {guid}");
    }
    let reply: m::DesiredLrpLifecycleResponse = active
        .call(
            "/v1/desired_lrp/update",
            &m::UpdateDesiredLrpRequest {
                process_guid: "web".into(),
                update: Some(m::DesiredLrpUpdate {
                    optional_instances: Some(m::desired_lrp_update::OptionalInstances::Instances(
                        3,
                    )),
                    ..Default::default()
                }),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    let reply: m::DesiredLrpLifecycleResponse = active
        .call(
            "/v1/desired_lrp/remove",
            &m::RemoveDesiredLrpRequest {
                process_guid: "gone".into(),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    let start = m::StartActualLrpRequest {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: "web".into(),
            index: 0,
            domain: "cf-apps".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: "ig-0".into(),
            cell_id: "cell-1".into(),
        }),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let reply: m::ActualLrpLifecycleResponse =
        active.call("/v1/actual_lrps/start.r1", &start).await;
    assert_eq!(reply.error, None);
    let reply: support::ErrorOnly = active
        .call(
            "/v1/domains/upsert",
            &m::UpsertDomainRequest {
                domain: "new-domain".into(),
                ttl: 0,
            },
        )
        .await;
    assert_eq!(reply.error, None);
    assert_ne!(everything(&standby).await, everything(&active).await);

    let log = support::inproc::quiet_log();
    let report = standby.bbs.catch_up(&log).await.unwrap();
    assert_eq!(everything(&standby).await, everything(&active).await);
    assert_eq!(
        (report.tasks, report.desired_lrps),
        (3, 2),
        "t-new, t-cancel changed, t-delete removed; web changed, gone removed"
    );
    assert!(report.actual_lrps >= 3, "{report:?}");
    // Nothing is left to catch up, and standing by did not act.
    let again = standby.bbs.catch_up(&log).await.unwrap();
    assert_eq!(
        (again.tasks, again.desired_lrps, again.actual_lrps),
        (0, 0, 0)
    );
    assert!(!standby.bbs.active.is_active());
    assert!(active.bbs.active.is_active());
}

on_every_backend!(
    a_standby_catches_up_with_what_the_active_wrote,
    locks_and_releases_as_upstream_does,
    refuses_bad_requests_with_lockets_errors,
    active_passive_with_the_store_lock,
    active_passive_with_locket,
    locket_presences_are_the_cells,
);

/// A locket that cannot be reached keeps the server passive (health up, API closed) and is
/// retried: once it answers, the server takes the lock and serves.
#[actix_web::test]
async fn an_unreachable_locket_is_retried_and_never_lets_a_passive_serve() {
    let Some(store) = support::test_store(Backend::Sqlite).await else {
        return;
    };
    let address = format!("127.0.0.1:{}", support::free_port());
    let mut config = config_json(
        &store.config,
        serde_json::json!({"uuid": "node-a", "lock_retry_interval": "300ms"}),
    );
    if let (Some(config), Some(keys)) = (config.as_object_mut(), client_keys(&address).as_object())
    {
        config.extend(keys.clone());
    }
    let server = Server::spawn(config);
    wait_healthy(&server).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(server.api_refused().await);
    assert!(server.healthy().await);
    assert!(
        server.log().contains("failed-to-acquire-lock"),
        "{}",
        server.log()
    );
    let _locket = LocketProcess::start_at(&store.config, &address).await;
    server.wait_ready().await;
}

/// A locket that restarts (a rolling deploy) costs the active server nothing: its refresh
/// waits for the connection within the retry interval, as upstream's WaitForReady does, and
/// the lock row is still its own.
#[actix_web::test]
async fn a_locket_restart_does_not_cost_the_lock() {
    let Some(store) = support::test_store(Backend::Sqlite).await else {
        return;
    };
    let locket = LocketProcess::start(&store.config).await;
    let address = locket.address.clone();
    let mut config = config_json(
        &store.config,
        serde_json::json!({"uuid": "node-a", "lock_ttl": "10s", "lock_retry_interval": "3s"}),
    );
    if let (Some(config), Some(keys)) = (config.as_object_mut(), client_keys(&address).as_object())
    {
        config.extend(keys.clone());
    }
    let mut server = Server::start(config).await;
    drop(locket);
    let _locket = LocketProcess::start_at(&store.config, &address).await;
    // Two refreshes later the server still serves, and never logged a lost lock.
    tokio::time::sleep(Duration::from_secs(7)).await;
    server.wait_ready().await;
    assert!(!server.log().contains("lost-lock"), "{}", server.log());
    assert_eq!(server.stop(), Some(0));
}

/// A locket certificate that cannot be read stops start-up naming the key.
#[actix_web::test]
async fn a_bad_locket_certificate_stops_start_up_naming_the_key() {
    let Some(store) = support::test_store(Backend::Sqlite).await else {
        return;
    };
    let mut config = config_json(&store.config, serde_json::json!({}));
    if let (Some(config), Some(keys)) = (
        config.as_object_mut(),
        client_keys("127.0.0.1:1").as_object(),
    ) {
        config.extend(keys.clone());
        config.insert(
            "locket_client_key_file".into(),
            serde_json::json!("/nonexistent/key.pem"),
        );
    }
    let mut server = Server::spawn(config);
    assert_eq!(server.stop_when_exited(Duration::from_secs(20)), Some(2));
    assert!(
        server.log().contains(
            "invalid configuration key `locket_client_key_file`: cannot read /nonexistent/key.pem"
        ),
        "{}",
        server.log()
    );
}
