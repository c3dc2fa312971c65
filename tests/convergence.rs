//! Convergence on every backend: gone cells, crashed instances past their back-off, missing
//! instances, pending and expired tasks (bbs-reference §4).

#[macro_use]
mod support;

use std::time::Duration;

use bbs_actors::converger::Converge;
use bbs_actors::ActorSettings;
use bbs_models as m;
use bbs_store::{Backend, Presence};
use support::inproc::{eventually, FakeServer, TestBbs};

fn settings(auctioneer: &FakeServer) -> ActorSettings {
    ActorSettings {
        auctioneer_address: Some(auctioneer.url.clone()),
        communication_timeout: Duration::from_secs(2),
        ..ActorSettings::default()
    }
}

fn lrp(guid: &str, instances: i32) -> m::DesiredLrp {
    support::fixtures::desired_lrp(guid, instances)
}

async fn desire(b: &TestBbs, guid: &str, instances: i32) {
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(lrp(guid, instances)),
            },
        )
        .await;
    assert_eq!(reply.error, None);
}

async fn register(b: &TestBbs, cell: &str, ttl: u32) {
    let presence = m::CellPresence {
        cell_id: cell.into(),
        rep_url: "http://127.0.0.1:1".into(),
        ..Default::default()
    };
    let reply: m::RegisterCellResponse = b
        .call(
            "/v1/cells/register",
            &m::RegisterCellRequest {
                cell_presence: Some(presence),
                ttl_seconds: ttl,
            },
        )
        .await;
    assert_eq!(reply.error, None);
}

async fn start(b: &TestBbs, guid: &str, index: i32, cell: &str) {
    let request = m::StartActualLrpRequest {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: guid.into(),
            index,
            domain: "cf-apps".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: format!("ig-{index}"),
            cell_id: cell.into(),
        }),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/start.r1", &request).await;
    assert_eq!(reply.error, None);
}

async fn rows(b: &TestBbs, guid: &str) -> Vec<m::ActualLrp> {
    let reply: m::ActualLrpsResponse = b
        .call(
            "/v1/actual_lrps/list",
            &m::ActualLrpsRequest {
                process_guid: guid.into(),
                ..Default::default()
            },
        )
        .await;
    reply.actual_lrps
}

fn lrp_auctions(server: &FakeServer) -> Vec<serde_json::Value> {
    server
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/lrps")
        .flat_map(|r| r.body.as_array().cloned().unwrap_or_default())
        .collect()
}

async fn a_gone_cell_leaves_suspects_and_replacements(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(&auctioneer)).await else {
        return;
    };
    register(&b, "cell-1", 1).await;
    desire(&b, "web", 1).await;
    start(&b, "web", 0, "cell-1").await;
    actix_web::rt::time::sleep(Duration::from_millis(1200)).await;
    let report = b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!(report.cells, 0);
    let after = rows(&b, "web").await;
    let by_presence = |p: Presence| after.iter().find(|r| r.presence == p.as_i32()).cloned();
    let suspect = by_presence(Presence::Suspect).expect("the instance is kept as a suspect");
    assert_eq!(
        (
            suspect.state.as_str(),
            suspect.actual_lrp_instance_key.unwrap().cell_id.as_str()
        ),
        ("RUNNING", "cell-1")
    );
    assert_eq!(
        by_presence(Presence::Ordinary).unwrap().state,
        "UNCLAIMED",
        "a replacement"
    );
    assert!(
        eventually(Duration::from_secs(5), || lrp_auctions(&auctioneer).len()
            >= 2)
        .await
    );
    let replacement = &lrp_auctions(&auctioneer)[1];
    assert_eq!(
        (
            replacement["process_guid"].as_str(),
            &replacement["indices"]
        ),
        (Some("web"), &serde_json::json!([0]))
    );
    // When the replacement runs, the suspect is cleared.
    register(&b, "cell-2", 60).await;
    start(&b, "web", 0, "cell-2").await;
    assert_eq!(rows(&b, "web").await.len(), 1);
}

async fn a_crashed_instance_restarts_after_its_back_off(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(&auctioneer)).await else {
        return;
    };
    desire(&b, "web", 1).await;
    for n in 0..3 {
        start(&b, "web", 0, "cell-1").await;
        let crash = m::CrashActualLrpRequest {
            actual_lrp_key: Some(m::ActualLrpKey {
                process_guid: "web".into(),
                index: 0,
                domain: "cf-apps".into(),
            }),
            actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
                instance_guid: "ig-0".into(),
                cell_id: "cell-1".into(),
            }),
            error_message: format!("crash {n}"),
        };
        let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/crash", &crash).await;
        assert_eq!(reply.error, None);
    }
    assert_eq!(rows(&b, "web").await[0].state, "CRASHED");
    // Not due yet: the third crash waits 30 s.
    b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!(rows(&b, "web").await[0].state, "CRASHED");
    // Move the crash 31 s into the past, as a restarted BBS would find it.
    let key = bbs_store::ActualLrpKey {
        process_guid: "web".into(),
        index: 0,
        presence: Presence::Ordinary,
    };
    let mut record = b.store.store.actual_lrp(&key).await.unwrap().unwrap();
    record.since -= 31_000_000_000;
    b.store.store.update_actual_lrp(&record).await.unwrap();
    let b = TestBbs::on(b.store, settings(&auctioneer)).await;
    let before = lrp_auctions(&auctioneer).len();
    b.bbs.converger.call(Converge).await.unwrap().unwrap();
    let row = rows(&b, "web").await.remove(0);
    assert_eq!((row.state.as_str(), row.crash_count), ("UNCLAIMED", 3));
    assert!(
        eventually(Duration::from_secs(5), || lrp_auctions(&auctioneer).len()
            > before)
        .await
    );
}

async fn a_missing_instance_is_created_and_auctioned(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(&auctioneer)).await else {
        return;
    };
    desire(&b, "web", 2).await;
    let key = bbs_store::ActualLrpKey {
        process_guid: "web".into(),
        index: 1,
        presence: Presence::Ordinary,
    };
    b.store.store.delete_actual_lrp(&key).await.unwrap();
    let b = TestBbs::on(b.store, settings(&auctioneer)).await;
    assert_eq!(rows(&b, "web").await.len(), 1);
    let report = b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!(report.lrp_actions.get("missing"), Some(&1));
    assert_eq!(rows(&b, "web").await.len(), 2);
    assert!(b.store.store.actual_lrp(&key).await.unwrap().is_some());
}

fn task(guid: &str) -> m::DesireTaskRequest {
    support::fixtures::desire_task(guid)
}

async fn pending_tasks_are_sent_again_and_orphaned_ones_fail(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(&auctioneer)).await else {
        return;
    };
    let _: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &task("pending")).await;
    let _: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &task("running")).await;
    let started: m::StartTaskResponse = b
        .call(
            "/v1/tasks/start",
            &m::StartTaskRequest {
                task_guid: "running".into(),
                cell_id: "gone".into(),
            },
        )
        .await;
    assert!(started.should_start);
    assert!(eventually(Duration::from_secs(5), || auctioneer.received().len() == 2).await);
    let report = b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!((report.tasks.pending, report.tasks.running), (1, 1));
    assert!(
        eventually(Duration::from_secs(5), || auctioneer
            .received()
            .iter()
            .filter(|r| r.path == "/v1/tasks")
            .count()
            == 3)
        .await
    );
    let kick = auctioneer
        .received()
        .into_iter()
        .rfind(|r| r.path == "/v1/tasks")
        .unwrap();
    assert_eq!(kick.body[0]["TaskGuid"], "pending");
    let running: m::TaskResponse = b
        .call(
            "/v1/tasks/get_by_task_guid.r3",
            &m::TaskByGuidRequest {
                task_guid: "running".into(),
            },
        )
        .await;
    let running = running.task.unwrap();
    assert_eq!(
        (running.state, running.failure_reason.as_str()),
        (3, "cell disappeared before completion")
    );
}

async fn an_expired_completed_task_is_removed(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(&auctioneer)).await else {
        return;
    };
    let _: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &task("done")).await;
    let _: m::TaskLifecycleResponse = b
        .call(
            "/v1/tasks/cancel",
            &m::TaskGuidRequest {
                task_guid: "done".into(),
            },
        )
        .await;
    let mut record = b.store.store.task("done").await.unwrap().unwrap();
    record.first_completed_at -= 121_000_000_000;
    b.store.store.update_task(&record).await.unwrap();
    let b = TestBbs::on(b.store, settings(&auctioneer)).await;
    let report = b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!(report.tasks.pruned, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while b.store.store.task("done").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "expired task still stored"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn expired_domains_are_pruned_and_instances_counted(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(&auctioneer)).await else {
        return;
    };
    for (domain, ttl) in [("short", 1), ("cf-apps", 0)] {
        let reply: m::UpsertDomainResponse = b
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
    register(&b, "cell-1", 60).await;
    desire(&b, "web", 2).await;
    start(&b, "web", 0, "cell-1").await;
    actix_web::rt::time::sleep(Duration::from_millis(2100)).await;
    let report = b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!(report.pruned_domains, 1);
    assert_eq!(
        (report.lrp_counts.running, report.lrp_counts.unclaimed),
        (1, 1)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let domains: Vec<String> = b
            .store
            .store
            .domains()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.domain)
            .collect();
        if domains == ["cf-apps"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expired domain still stored: {domains:?}"
        );
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn drifted_internal_routes_and_metric_tags_reach_the_rep(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let rep = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(&auctioneer)).await else {
        return;
    };
    let presence = m::CellPresence {
        cell_id: "cell-1".into(),
        rep_url: rep.url.clone(),
        ..Default::default()
    };
    let reply: m::RegisterCellResponse = b
        .call(
            "/v1/cells/register",
            &m::RegisterCellRequest {
                cell_presence: Some(presence),
                ttl_seconds: 60,
            },
        )
        .await;
    assert_eq!(reply.error, None);
    let mut desired = lrp("web", 1);
    let mut routes = m::ProtoRoutes::default();
    routes.routes.insert(
        "internal-router".into(),
        br#"[{"hostname":"web.apps.internal"}]"#.to_vec(),
    );
    desired.routes = Some(routes);
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(desired),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    // The rep reports no internal routes and a stale tag.
    let request = m::StartActualLrpRequest {
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
        metric_tags: [("source_id".to_owned(), "old".to_owned())].into(),
        ..Default::default()
    };
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/start.r1", &request).await;
    assert_eq!(reply.error, None);

    let report = b.bbs.converger.call(Converge).await.unwrap().unwrap();
    assert_eq!(report.lrp_actions.get("rep_update"), Some(&2));
    assert_eq!(report.rep_updates, 2);
    let mut calls = rep.received();
    calls.sort_by_key(|c| c.body["internal_routes"].is_null());
    assert!(calls
        .iter()
        .all(|c| c.method == "PUT" && c.path == "/v2/lrps/web/instances/ig-0"));
    assert_eq!(
        (
            &calls[0].body["internal_routes"],
            &calls[0].body["metric_tags"]
        ),
        (
            &serde_json::json!([{ "hostname": "web.apps.internal" }]),
            &serde_json::Value::Null
        )
    );
    assert_eq!(
        (
            &calls[1].body["internal_routes"],
            &calls[1].body["metric_tags"]
        ),
        (
            &serde_json::Value::Null,
            &serde_json::json!({ "source_id": "s" })
        )
    );
    // The records are the rep's to change: convergence wrote nothing.
    assert_eq!(rows(&b, "web").await[0].metric_tags["source_id"], "old");
}

on_every_backend!(
    drifted_internal_routes_and_metric_tags_reach_the_rep,
    expired_domains_are_pruned_and_instances_counted,
    a_gone_cell_leaves_suspects_and_replacements,
    a_crashed_instance_restarts_after_its_back_off,
    a_missing_instance_is_created_and_auctioned,
    pending_tasks_are_sent_again_and_orphaned_ones_fail,
    an_expired_completed_task_is_removed,
);
