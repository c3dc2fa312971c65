//! Cell presences and the rep calls they enable, on every backend.

#[macro_use]
mod support;

use std::time::Duration;

use bbs_actors::ActorSettings;
use bbs_models as m;
use bbs_models::error::Type;
use bbs_store::Backend;
use support::inproc::{eventually, FakeServer, TestBbs};

fn presence(cell: &str, rep_url: &str) -> m::CellPresence {
    m::CellPresence {
        cell_id: cell.into(),
        rep_address: rep_url.into(),
        rep_url: rep_url.into(),
        zone: "z1".into(),
        capacity: Some(m::CellCapacity {
            memory_mb: 1024,
            disk_mb: 4096,
            containers: 100,
        }),
        ..Default::default()
    }
}

async fn register(b: &TestBbs, cell: m::CellPresence, ttl: u32) -> Option<m::Error> {
    let reply: m::RegisterCellResponse = b
        .call(
            "/v1/cells/register",
            &m::RegisterCellRequest {
                cell_presence: Some(cell),
                ttl_seconds: ttl,
            },
        )
        .await;
    reply.error
}

async fn cells(b: &TestBbs) -> Vec<String> {
    let reply: m::CellsResponse = b.call("/v1/cells/list.r1", &()).await;
    assert_eq!(reply.error, None);
    reply.cells.into_iter().map(|c| c.cell_id).collect()
}

async fn presences_expire_and_survive_a_restart(backend: Backend) {
    let Some(b) = TestBbs::start(backend, ActorSettings::default()).await else {
        return;
    };
    assert_eq!(
        register(&b, presence("cell-1", "http://127.0.0.1:1"), 60).await,
        None
    );
    assert_eq!(
        register(&b, presence("cell-2", "http://127.0.0.1:2"), 1).await,
        None
    );
    assert_eq!(cells(&b).await, ["cell-1", "cell-2"]);
    actix_web::rt::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(cells(&b).await, ["cell-1"], "cell-2's presence expired");
    // Renewal keeps a cell present.
    assert_eq!(
        register(&b, presence("cell-2", "http://127.0.0.1:2"), 60).await,
        None
    );
    let again = TestBbs::on(b.store, ActorSettings::default()).await;
    assert_eq!(cells(&again).await, ["cell-1", "cell-2"]);
}

async fn a_bad_registration_is_refused_and_stores_nothing(backend: Backend) {
    let Some(b) = TestBbs::start(backend, ActorSettings::default()).await else {
        return;
    };
    let error = register(&b, presence("", "http://x"), 10).await.unwrap();
    assert_eq!(
        (error.kind(), error.message.as_str()),
        (Type::InvalidRequest, "Invalid field: cell_id")
    );
    let error = register(&b, presence("cell-1", "http://x"), 0)
        .await
        .unwrap();
    assert_eq!(error.message, "Invalid field: ttl_seconds");
    let reply: m::RegisterCellResponse = b
        .call("/v1/cells/register", &m::RegisterCellRequest::default())
        .await;
    assert_eq!(
        reply.error.unwrap().message,
        "Invalid field: cell_presence, Invalid field: ttl_seconds"
    );
    assert!(b.store.store.cells().await.unwrap().is_empty());
}

fn lrp(guid: &str) -> m::DesiredLrp {
    support::fixtures::desired_lrp(guid, 1)
}

async fn run_on(b: &TestBbs, guid: &str, cell: &str) {
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(lrp(guid)),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    let start = m::StartActualLrpRequest {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: guid.into(),
            index: 0,
            domain: "cf-apps".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: "ig-0".into(),
            cell_id: cell.into(),
        }),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/start.r1", &start).await;
    assert_eq!(reply.error, None);
}

async fn retiring_a_running_instance_asks_its_rep_to_stop_it(backend: Backend) {
    let rep = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, ActorSettings::default()).await else {
        return;
    };
    assert_eq!(register(&b, presence("cell-1", &rep.url), 60).await, None);
    run_on(&b, "web", "cell-1").await;
    let reply: m::ActualLrpLifecycleResponse = b
        .call(
            "/v1/actual_lrps/retire",
            &m::RetireActualLrpRequest {
                actual_lrp_key: Some(m::ActualLrpKey {
                    process_guid: "web".into(),
                    index: 0,
                    domain: "cf-apps".into(),
                }),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    let got = rep.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/v1/lrps/web/instances/ig-0/stop");
    let rows = b
        .store
        .store
        .actual_lrps(&Default::default())
        .await
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "the row stays until the rep removes the instance"
    );
    // A rep that refuses is an error for the caller.
    let refusing = FakeServer::start(500).await;
    assert_eq!(
        register(&b, presence("cell-1", &refusing.url), 60).await,
        None
    );
    let reply: m::ActualLrpLifecycleResponse = b
        .call(
            "/v1/actual_lrps/retire",
            &m::RetireActualLrpRequest {
                actual_lrp_key: Some(m::ActualLrpKey {
                    process_guid: "web".into(),
                    index: 0,
                    domain: "cf-apps".into(),
                }),
            },
        )
        .await;
    assert_eq!(reply.error.unwrap().kind(), Type::UnknownError);
}

async fn removing_an_lrp_stops_its_running_instances(backend: Backend) {
    let rep = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, ActorSettings::default()).await else {
        return;
    };
    assert_eq!(register(&b, presence("cell-1", &rep.url), 60).await, None);
    run_on(&b, "web", "cell-1").await;
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/remove",
            &m::RemoveDesiredLrpRequest {
                process_guid: "web".into(),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    assert!(eventually(Duration::from_secs(5), || rep.received().len() == 1).await);
    assert_eq!(rep.received()[0].path, "/v1/lrps/web/instances/ig-0/stop");
}

async fn cancelling_a_running_task_tells_its_rep(backend: Backend) {
    let rep = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, ActorSettings::default()).await else {
        return;
    };
    assert_eq!(register(&b, presence("cell-1", &rep.url), 60).await, None);
    let desire = support::fixtures::desire_task("t1");
    let _: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &desire).await;
    let started: m::StartTaskResponse = b
        .call(
            "/v1/tasks/start",
            &m::StartTaskRequest {
                task_guid: "t1".into(),
                cell_id: "cell-1".into(),
            },
        )
        .await;
    assert!(started.should_start);
    let reply: m::TaskLifecycleResponse = b
        .call(
            "/v1/tasks/cancel",
            &m::TaskGuidRequest {
                task_guid: "t1".into(),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    assert!(eventually(Duration::from_secs(5), || rep.received().len() == 1).await);
    assert_eq!(rep.received()[0].path, "/v1/tasks/t1/cancel");
}

fn internal_routes(hostnames: &[&str]) -> m::ProtoRoutes {
    let value: Vec<serde_json::Value> = hostnames
        .iter()
        .map(|h| serde_json::json!({ "hostname": h }))
        .collect();
    let mut routes = m::ProtoRoutes::default();
    routes.routes.insert(
        "internal-router".into(),
        serde_json::to_vec(&value).unwrap(),
    );
    routes
}

async fn update_routes(b: &TestBbs, guid: &str, routes: m::ProtoRoutes) {
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/update",
            &m::UpdateDesiredLrpRequest {
                process_guid: guid.into(),
                update: Some(m::DesiredLrpUpdate {
                    routes: Some(routes),
                    ..Default::default()
                }),
            },
        )
        .await;
    assert_eq!(reply.error, None);
}

async fn changing_internal_routes_updates_running_instances_through_their_rep(backend: Backend) {
    let rep = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, ActorSettings::default()).await else {
        return;
    };
    assert_eq!(register(&b, presence("cell-1", &rep.url), 60).await, None);
    run_on(&b, "web", "cell-1").await;
    update_routes(&b, "web", internal_routes(&["web.apps.internal"])).await;
    assert!(eventually(Duration::from_secs(5), || rep.received().len() == 1).await);
    let call = &rep.received()[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("PUT", "/v2/lrps/web/instances/ig-0")
    );
    assert_eq!(
        call.body,
        serde_json::json!({
            "instance_guid": "ig-0",
            "process_guid": "web",
            "index": 0,
            "domain": "cf-apps",
            "internal_routes": [{ "hostname": "web.apps.internal" }],
            "metric_tags": { "source_id": "s" },
        })
    );
}

async fn an_old_rep_gets_internal_routes_on_the_v1_route(backend: Backend) {
    let rep = FakeServer::start(202).await;
    rep.script.lock().unwrap().push(404);
    let Some(b) = TestBbs::start(backend, ActorSettings::default()).await else {
        return;
    };
    assert_eq!(register(&b, presence("cell-1", &rep.url), 60).await, None);
    run_on(&b, "web", "cell-1").await;
    update_routes(&b, "web", internal_routes(&["a.internal"])).await;
    assert!(eventually(Duration::from_secs(5), || rep.received().len() == 2).await);
    let calls = rep.received();
    assert_eq!(calls[0].path, "/v2/lrps/web/instances/ig-0");
    assert_eq!(calls[1].path, "/v1/lrps/web/instances/ig-0");
    assert_eq!(calls[1].method, "PUT");
    assert_eq!(calls[1].body["metric_tags"], serde_json::Value::Null);
    assert_eq!(
        calls[1].body["internal_routes"],
        serde_json::json!([{ "hostname": "a.internal" }])
    );
}

async fn a_route_update_without_internal_changes_calls_no_rep(backend: Backend) {
    let rep = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, ActorSettings::default()).await else {
        return;
    };
    assert_eq!(register(&b, presence("cell-1", &rep.url), 60).await, None);
    run_on(&b, "web", "cell-1").await;
    update_routes(&b, "web", internal_routes(&["a.internal"])).await;
    assert!(eventually(Duration::from_secs(5), || rep.received().len() == 1).await);
    // The same internal routes again: nothing changed, so no second call.
    update_routes(&b, "web", internal_routes(&["a.internal"])).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rep.received().len(), 1);
}

on_every_backend!(
    changing_internal_routes_updates_running_instances_through_their_rep,
    an_old_rep_gets_internal_routes_on_the_v1_route,
    a_route_update_without_internal_changes_calls_no_rep,
    presences_expire_and_survive_a_restart,
    a_bad_registration_is_refused_and_stores_nothing,
    retiring_a_running_instance_asks_its_rep_to_stop_it,
    removing_an_lrp_stops_its_running_instances,
    cancelling_a_running_task_tells_its_rep,
);
