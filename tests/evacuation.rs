//! Evacuation scenarios (bbs-reference §3.6) on every backend.

#[macro_use]
mod support;

use std::time::Duration;

use bbs_actors::ActorSettings;
use bbs_models as m;
use bbs_models::error::Type;
use bbs_store::Backend;
use support::inproc::{eventually, FakeServer, TestBbs};

fn lrp(guid: &str, instances: i32, strategy: i32) -> m::DesiredLrp {
    m::DesiredLrp {
        update_strategy: strategy,
        ..support::fixtures::desired_lrp(guid, instances)
    }
}

fn key(index: i32) -> m::ActualLrpKey {
    m::ActualLrpKey {
        process_guid: "web".into(),
        index,
        domain: "cf-apps".into(),
    }
}

fn ik(guid: &str, cell: &str) -> m::ActualLrpInstanceKey {
    m::ActualLrpInstanceKey {
        instance_guid: guid.into(),
        cell_id: cell.into(),
    }
}

fn net() -> m::ActualLrpNetInfo {
    m::ActualLrpNetInfo {
        address: "10.0.0.1".into(),
        ..Default::default()
    }
}

async fn setup(backend: Backend, strategy: i32, instances: i32) -> Option<(TestBbs, FakeServer)> {
    let auctioneer = FakeServer::start(202).await;
    let settings = ActorSettings {
        auctioneer_address: Some(auctioneer.url.clone()),
        ..ActorSettings::default()
    };
    let b = TestBbs::start(backend, settings).await?;
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(lrp("web", instances, strategy)),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    for index in 0..instances {
        let start = m::StartActualLrpRequest {
            actual_lrp_key: Some(key(index)),
            actual_lrp_instance_key: Some(ik(&format!("i{index}"), "draining")),
            actual_lrp_net_info: Some(net()),
            ..Default::default()
        };
        let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/start.r1", &start).await;
        assert_eq!(reply.error, None);
    }
    Some((b, auctioneer))
}

async fn evacuate_running(b: &TestBbs, index: i32) -> m::EvacuationResponse {
    b.call(
        "/v1/actual_lrps/evacuate_running.r1",
        &m::EvacuateRunningActualLrpRequest {
            actual_lrp_key: Some(key(index)),
            actual_lrp_instance_key: Some(ik(&format!("i{index}"), "draining")),
            actual_lrp_net_info: Some(net()),
            ..Default::default()
        },
    )
    .await
}

async fn rows(b: &TestBbs) -> Vec<m::ActualLrp> {
    let reply: m::ActualLrpsResponse = b
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    reply.actual_lrps
}

async fn rolling_evacuation_keeps_the_old_instance_until_the_new_one_runs(backend: Backend) {
    let Some((b, auctioneer)) = setup(backend, 0, 1).await else {
        return;
    };
    let reply = evacuate_running(&b, 0).await;
    assert_eq!((reply.error, reply.keep_container), (None, true));
    let after = rows(&b).await;
    assert_eq!(after.len(), 2);
    let evacuating = after
        .iter()
        .find(|r| r.presence == 1)
        .expect("an evacuating copy");
    assert_eq!(
        (
            evacuating.state.as_str(),
            evacuating.actual_lrp_instance_key.clone().unwrap()
        ),
        ("RUNNING", ik("i0", "draining"))
    );
    assert_eq!(
        after.iter().find(|r| r.presence == 0).unwrap().state,
        "UNCLAIMED"
    );
    assert!(
        eventually(Duration::from_secs(5), || auctioneer.received().len() >= 2).await,
        "the replacement is auctioned"
    );
    // Asking again keeps the container and changes nothing.
    assert!(evacuate_running(&b, 0).await.keep_container);
    // The replacement starts elsewhere: the evacuating copy goes.
    let start = m::StartActualLrpRequest {
        actual_lrp_key: Some(key(0)),
        actual_lrp_instance_key: Some(ik("new", "fresh")),
        actual_lrp_net_info: Some(net()),
        ..Default::default()
    };
    let _: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/start.r1", &start).await;
    let after = rows(&b).await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        after[0].actual_lrp_instance_key.clone().unwrap(),
        ik("new", "fresh")
    );
    // The old cell now gets keep_container = false.
    assert!(!evacuate_running(&b, 0).await.keep_container);
}

async fn recreate_evacuates_one_instance_at_a_time(backend: Backend) {
    let Some((b, _auctioneer)) = setup(backend, 1, 2).await else {
        return;
    };
    let first = evacuate_running(&b, 0).await;
    assert!(!first.keep_container, "all instances run: the first may go");
    assert!(
        rows(&b).await.iter().all(|r| r.presence == 0),
        "recreate makes no evacuating copy"
    );
    let second = evacuate_running(&b, 1).await;
    assert!(second.keep_container, "one instance is not running: wait");
}

async fn stopped_crashed_claimed_and_remove_evacuating(backend: Backend) {
    let Some((b, _auctioneer)) = setup(backend, 0, 3).await else {
        return;
    };
    let stopped: m::EvacuationResponse = b
        .call(
            "/v1/actual_lrps/evacuate_stopped",
            &m::EvacuateStoppedActualLrpRequest {
                actual_lrp_key: Some(key(0)),
                actual_lrp_instance_key: Some(ik("i0", "draining")),
            },
        )
        .await;
    assert_eq!((stopped.error, stopped.keep_container), (None, false));
    let crashed: m::EvacuationResponse = b
        .call(
            "/v1/actual_lrps/evacuate_crashed",
            &m::EvacuateCrashedActualLrpRequest {
                actual_lrp_key: Some(key(1)),
                actual_lrp_instance_key: Some(ik("i1", "draining")),
                error_message: "oom".into(),
            },
        )
        .await;
    assert_eq!((crashed.error, crashed.keep_container), (None, false));
    let missing: m::EvacuationResponse = b
        .call(
            "/v1/actual_lrps/evacuate_claimed",
            &m::EvacuateClaimedActualLrpRequest {
                actual_lrp_key: Some(key(2)),
                actual_lrp_instance_key: Some(ik("nobody", "draining")),
            },
        )
        .await;
    assert_eq!(missing.error.unwrap().kind(), Type::ResourceNotFound);
    let after = rows(&b).await;
    assert!(
        after
            .iter()
            .all(|r| r.actual_lrp_key.as_ref().unwrap().index != 0),
        "stopped instance removed"
    );
    let one = after
        .iter()
        .find(|r| r.actual_lrp_key.as_ref().unwrap().index == 1)
        .unwrap();
    assert_eq!((one.state.as_str(), one.crash_count), ("UNCLAIMED", 1));
    // Remove-evacuating needs an evacuating row.
    assert!(evacuate_running(&b, 2).await.keep_container);
    let removed: m::RemoveEvacuatingActualLrpResponse = b
        .call(
            "/v1/actual_lrps/remove_evacuating",
            &m::RemoveEvacuatingActualLrpRequest {
                actual_lrp_key: Some(key(2)),
                actual_lrp_instance_key: Some(ik("i2", "draining")),
            },
        )
        .await;
    assert_eq!(removed.error, None);
    assert!(rows(&b).await.iter().all(|r| r.presence == 0));
    let again: m::RemoveEvacuatingActualLrpResponse = b
        .call(
            "/v1/actual_lrps/remove_evacuating",
            &m::RemoveEvacuatingActualLrpRequest {
                actual_lrp_key: Some(key(2)),
                actual_lrp_instance_key: Some(ik("i2", "draining")),
            },
        )
        .await;
    assert_eq!(again.error.unwrap().kind(), Type::ResourceNotFound);
}

async fn bad_evacuation_requests_are_refused(backend: Backend) {
    let Some((b, _auctioneer)) = setup(backend, 0, 1).await else {
        return;
    };
    let before = rows(&b).await;
    let reply: m::EvacuationResponse = b
        .call(
            "/v1/actual_lrps/evacuate_running.r1",
            &m::EvacuateRunningActualLrpRequest::default(),
        )
        .await;
    let error = reply.error.unwrap();
    assert_eq!(error.message, "Invalid field: actual_lrp_key, Invalid field: actual_lrp_instance_key, Invalid field: actual_lrp_net_info");
    assert!(
        reply.keep_container,
        "upstream keeps the container when it cannot read the request"
    );
    let reply: m::EvacuationResponse = b
        .call(
            "/v1/actual_lrps/evacuate_crashed",
            &m::EvacuateCrashedActualLrpRequest {
                actual_lrp_key: Some(key(0)),
                actual_lrp_instance_key: Some(ik("i0", "draining")),
                error_message: String::new(),
            },
        )
        .await;
    assert_eq!(reply.error.unwrap().message, "Invalid field: error_message");
    assert_eq!(rows(&b).await, before);
}

on_every_backend!(
    rolling_evacuation_keeps_the_old_instance_until_the_new_one_runs,
    recreate_evacuates_one_instance_at_a_time,
    stopped_crashed_claimed_and_remove_evacuating,
    bad_evacuation_requests_are_refused,
);
