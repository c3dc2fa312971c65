//! Desired and actual LRPs on every backend: the lifecycle rules of bbs-reference §3.3-3.5 and
//! §3.7, validation, and a concurrency run that checks the instance invariants.

// metrics_guid is deprecated upstream but still populated on reads.
#![allow(deprecated)]

#[macro_use]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bbs_actors::ActorSettings;
use bbs_models as m;
use bbs_models::error::Type;
use bbs_store::Backend;
use support::inproc::{eventually, FakeServer, TestBbs};

fn settings(auctioneer: Option<&FakeServer>) -> ActorSettings {
    ActorSettings {
        storage_actors: 4,
        auctioneer_address: auctioneer.map(|a| a.url.clone()),
        communication_timeout: Duration::from_secs(2),
        ..ActorSettings::default()
    }
}

fn desired(guid: &str, instances: i32) -> m::DesiredLrp {
    let mut tags = BTreeMap::new();
    tags.insert(
        "source_id".to_owned(),
        m::MetricTagValue {
            r#static: "app-1".into(),
            dynamic: 0,
        },
    );
    let mut routes = m::ProtoRoutes::default();
    routes.routes.insert(
        "cf-router".into(),
        br#"[{"hostnames":["a.example.com"],"port":8080}]"#.to_vec(),
    );
    m::DesiredLrp {
        process_guid: guid.into(),
        domain: "cf-apps".into(),
        log_guid: "log".into(),
        root_fs: "preloaded:cflinuxfs4".into(),
        instances,
        memory_mb: 256,
        disk_mb: 1024,
        action: Some(m::Action {
            run_action: Some(m::RunAction {
                path: "/app/start".into(),
                user: "vcap".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        routes: Some(routes),
        metric_tags: tags,
        placement_tags: vec!["tag".into()],
        ports: vec![8080],
        ..Default::default()
    }
}

async fn desire(b: &TestBbs, lrp: m::DesiredLrp) -> Option<m::Error> {
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(lrp),
            },
        )
        .await;
    reply.error
}

async fn actuals(b: &TestBbs, guid: &str) -> Vec<m::ActualLrp> {
    let reply: m::ActualLrpsResponse = b
        .call(
            "/v1/actual_lrps/list",
            &m::ActualLrpsRequest {
                process_guid: guid.into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(reply.error, None);
    reply.actual_lrps
}

async fn ordinary(b: &TestBbs, guid: &str, index: i32) -> Option<m::ActualLrp> {
    actuals(b, guid)
        .await
        .into_iter()
        .find(|l| l.actual_lrp_key.as_ref().unwrap().index == index && l.presence == 0)
}

fn key(guid: &str, index: i32) -> m::ActualLrpKey {
    m::ActualLrpKey {
        process_guid: guid.into(),
        index,
        domain: "cf-apps".into(),
    }
}

fn ik(instance: &str, cell: &str) -> m::ActualLrpInstanceKey {
    m::ActualLrpInstanceKey {
        instance_guid: instance.into(),
        cell_id: cell.into(),
    }
}

async fn claim(
    b: &TestBbs,
    guid: &str,
    index: i32,
    instance: &m::ActualLrpInstanceKey,
) -> Option<m::Error> {
    let reply: m::ActualLrpLifecycleResponse = b
        .call(
            "/v1/actual_lrps/claim",
            &m::ClaimActualLrpRequest {
                process_guid: guid.into(),
                index,
                actual_lrp_instance_key: Some(instance.clone()),
            },
        )
        .await;
    reply.error
}

fn start_request(
    guid: &str,
    index: i32,
    instance: &m::ActualLrpInstanceKey,
) -> m::StartActualLrpRequest {
    m::StartActualLrpRequest {
        actual_lrp_key: Some(key(guid, index)),
        actual_lrp_instance_key: Some(instance.clone()),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ports: vec![m::PortMapping {
                container_port: 8080,
                host_port: 61000,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn start(
    b: &TestBbs,
    guid: &str,
    index: i32,
    instance: &m::ActualLrpInstanceKey,
) -> Option<m::Error> {
    let reply: m::ActualLrpLifecycleResponse = b
        .call(
            "/v1/actual_lrps/start.r1",
            &start_request(guid, index, instance),
        )
        .await;
    reply.error
}

async fn crash(
    b: &TestBbs,
    guid: &str,
    index: i32,
    instance: &m::ActualLrpInstanceKey,
) -> Option<m::Error> {
    let reply: m::ActualLrpLifecycleResponse = b
        .call(
            "/v1/actual_lrps/crash",
            &m::CrashActualLrpRequest {
                actual_lrp_key: Some(key(guid, index)),
                actual_lrp_instance_key: Some(instance.clone()),
                error_message: "out of memory".into(),
            },
        )
        .await;
    reply.error
}

fn kind(error: Option<m::Error>) -> Type {
    error.expect("an error").kind()
}

fn tag_index(lrp: &m::ActualLrp) -> u32 {
    lrp.modification_tag.as_ref().unwrap().index
}

async fn stored_rows(b: &TestBbs, guid: &str) -> usize {
    b.store
        .store
        .actual_lrps(&bbs_store::ActualLrpFilter {
            process_guids: Some(vec![guid.into()]),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

// ---- desired LRPs ------------------------------------------------------------------------

async fn desire_creates_unclaimed_instances_and_asks_for_placement(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(Some(&auctioneer))).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 3)).await, None);
    let rows = actuals(&b, "web").await;
    assert_eq!(rows.len(), 3);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.actual_lrp_key.as_ref().unwrap().index, i as i32);
        assert_eq!(row.state, "UNCLAIMED");
        assert_eq!(tag_index(row), 0);
    }
    assert_eq!(stored_rows(&b, "web").await, 3);
    assert!(eventually(Duration::from_secs(5), || !auctioneer.received().is_empty()).await);
    let body = &auctioneer.received()[0];
    assert_eq!(body.path, "/v1/lrps");
    let mut indices: Vec<i64> = body.body[0]["indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    indices.sort();
    assert_eq!(indices, [0, 1, 2]);
    assert_eq!(body.body[0]["process_guid"], "web");
    assert_eq!(body.body[0]["MemoryMB"], 256);
    assert_eq!(body.body[0]["PlacementTags"], serde_json::json!(["tag"]));
}

async fn desire_twice_is_resource_exists(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 1)).await, None);
    assert_eq!(
        kind(desire(&b, desired("web", 1)).await),
        Type::ResourceExists
    );
}

async fn an_invalid_desire_is_refused_and_stores_nothing(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    let mut no_tags = desired("web", 1);
    no_tags.metric_tags.clear();
    let error = desire(&b, no_tags).await.unwrap();
    assert_eq!(
        (error.kind(), error.message.as_str()),
        (Type::InvalidRequest, "Invalid field: metric_tags")
    );
    let mut bad_guid = desired("bad guid", 1);
    bad_guid.root_fs = "nope".into();
    let error = desire(&b, bad_guid).await.unwrap();
    assert_eq!(
        error.message,
        "Invalid field: rootfs, Invalid field: process_guid"
    );
    let mut bad_route = desired("web", 1);
    bad_route
        .routes
        .as_mut()
        .unwrap()
        .routes
        .insert("x".into(), b"not json".to_vec());
    assert_eq!(kind(desire(&b, bad_route).await), Type::InvalidRequest);
    assert!(b
        .store
        .store
        .desired_lrps(&Default::default())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(stored_rows(&b, "web").await, 0);
}

async fn desired_reads_rebuild_what_was_desired(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 2)).await, None);
    assert_eq!(desire(&b, desired("worker", 1)).await, None);
    let by_guid = m::DesiredLrpByProcessGuidRequest {
        process_guid: "web".into(),
    };
    let got: m::DesiredLrpResponse = b
        .call("/v1/desired_lrps/get_by_process_guid.r3", &by_guid)
        .await;
    let lrp = got.desired_lrp.unwrap();
    let mut expected = desired("web", 2);
    expected.metrics_guid = "app-1".into(); // populated from source_id
    expected.modification_tag = lrp.modification_tag.clone();
    assert_eq!(lrp, expected);
    let list: m::DesiredLrpsResponse = b
        .call(
            "/v1/desired_lrps/list.r3",
            &m::DesiredLrpsRequest::default(),
        )
        .await;
    assert_eq!(list.desired_lrps.len(), 2);
    let by_app: m::DesiredLrpsResponse = b
        .call(
            "/v1/desired_lrps/list.r3",
            &m::DesiredLrpsRequest {
                app_guids: vec!["wor".into()],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(by_app.desired_lrps.len(), 1);
    let infos: m::DesiredLrpSchedulingInfosResponse = b
        .call(
            "/v1/desired_lrp_scheduling_infos/list",
            &m::DesiredLrpsRequest::default(),
        )
        .await;
    assert_eq!(infos.desired_lrp_scheduling_infos.len(), 2);
    let routing: m::DesiredLrpsResponse = b
        .call(
            "/v1/desired_lrp_routing_infos/list",
            &m::DesiredLrpsRequest {
                process_guids: vec!["web".into()],
                ..Default::default()
            },
        )
        .await;
    let info = &routing.desired_lrps[0];
    assert_eq!((info.instances, info.action.is_none()), (2, true));
    assert_eq!(info.routes, expected.routes);
    let missing: m::DesiredLrpResponse = b
        .call(
            "/v1/desired_lrps/get_by_process_guid.r3",
            &m::DesiredLrpByProcessGuidRequest {
                process_guid: "x".into(),
            },
        )
        .await;
    assert_eq!(kind(missing.error), Type::ResourceNotFound);
}

async fn update_scales_instances_up_and_down(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 2)).await, None);
    let scale = |n: i32| m::UpdateDesiredLrpRequest {
        process_guid: "web".into(),
        update: Some(m::DesiredLrpUpdate {
            optional_instances: Some(m::desired_lrp_update::OptionalInstances::Instances(n)),
            ..Default::default()
        }),
    };
    let reply: m::DesiredLrpLifecycleResponse = b.call("/v1/desired_lrp/update", &scale(4)).await;
    assert_eq!(reply.error, None);
    assert_eq!(actuals(&b, "web").await.len(), 4);
    let reply: m::DesiredLrpLifecycleResponse = b.call("/v1/desired_lrp/update", &scale(1)).await;
    assert_eq!(reply.error, None);
    let left = actuals(&b, "web").await;
    assert_eq!(
        left.len(),
        1,
        "unstarted instances above the new count are removed"
    );
    assert_eq!(left[0].actual_lrp_key.as_ref().unwrap().index, 0);
    assert_eq!(stored_rows(&b, "web").await, 1);
    let got: m::DesiredLrpResponse = b
        .call(
            "/v1/desired_lrps/get_by_process_guid.r3",
            &m::DesiredLrpByProcessGuidRequest {
                process_guid: "web".into(),
            },
        )
        .await;
    let lrp = got.desired_lrp.unwrap();
    assert_eq!((lrp.instances, lrp.modification_tag.unwrap().index), (1, 2));
    let missing: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/update",
            &m::UpdateDesiredLrpRequest {
                process_guid: "ghost".into(),
                update: Some(Default::default()),
            },
        )
        .await;
    assert_eq!(kind(missing.error), Type::ResourceNotFound);
}

async fn remove_deletes_the_lrp_and_its_unstarted_instances(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 2)).await, None);
    let reply: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/remove",
            &m::RemoveDesiredLrpRequest {
                process_guid: "web".into(),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    assert!(actuals(&b, "web").await.is_empty());
    assert!(b.store.store.desired_lrp("web").await.unwrap().is_none());
    let again: m::DesiredLrpLifecycleResponse = b
        .call(
            "/v1/desired_lrp/remove",
            &m::RemoveDesiredLrpRequest {
                process_guid: "web".into(),
            },
        )
        .await;
    assert_eq!(kind(again.error), Type::ResourceNotFound);
}

// ---- actual LRPs -------------------------------------------------------------------------

async fn claim_rules(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 1)).await, None);
    let a = ik("a", "cell-1");
    assert_eq!(claim(&b, "web", 0, &a).await, None);
    let row = ordinary(&b, "web", 0).await.unwrap();
    assert_eq!((row.state.as_str(), tag_index(&row)), ("CLAIMED", 1));
    assert_eq!(
        claim(&b, "web", 0, &a).await,
        None,
        "same key again: no change"
    );
    assert_eq!(tag_index(&ordinary(&b, "web", 0).await.unwrap()), 1);
    assert_eq!(
        kind(claim(&b, "web", 0, &ik("b", "cell-2")).await),
        Type::ActualLrpCannotBeClaimed
    );
    assert_eq!(
        kind(claim(&b, "ghost", 0, &a).await),
        Type::ResourceNotFound
    );
}

async fn start_rules(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 1)).await, None);
    assert_eq!(claim(&b, "web", 0, &ik("a", "cell-1")).await, None);
    // CLAIMED -> RUNNING from any instance key.
    let other = ik("b", "cell-2");
    assert_eq!(start(&b, "web", 0, &other).await, None);
    let row = ordinary(&b, "web", 0).await.unwrap();
    assert_eq!((row.state.as_str(), tag_index(&row)), ("RUNNING", 2));
    assert_eq!(row.actual_lrp_instance_key.as_ref().unwrap(), &other);
    assert_eq!(
        row.optional_routable,
        Some(m::actual_lrp::OptionalRoutable::Routable(true)),
        "routable defaults to true"
    );
    // The rep's periodic re-assertion writes nothing.
    assert_eq!(start(&b, "web", 0, &other).await, None);
    assert_eq!(tag_index(&ordinary(&b, "web", 0).await.unwrap()), 2);
    // RUNNING -> RUNNING needs the same key.
    assert_eq!(
        kind(start(&b, "web", 0, &ik("c", "cell-3")).await),
        Type::ActualLrpCannotBeStarted
    );
    // Start creates a missing instance.
    assert_eq!(start(&b, "web", 5, &ik("d", "cell-4")).await, None);
    assert_eq!(ordinary(&b, "web", 5).await.unwrap().state, "RUNNING");
    assert_eq!(stored_rows(&b, "web").await, 2);
}

async fn crash_restarts_at_once_then_backs_off(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(Some(&auctioneer))).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 1)).await, None);
    for n in 1..=3 {
        let instance = ik(&format!("i{n}"), "cell-1");
        assert_eq!(start(&b, "web", 0, &instance).await, None);
        assert_eq!(crash(&b, "web", 0, &instance).await, None);
        let row = ordinary(&b, "web", 0).await.unwrap();
        assert_eq!(row.crash_count, n);
        assert_eq!(row.crash_reason, "out of memory");
        let expected = if n < 3 { "UNCLAIMED" } else { "CRASHED" };
        assert_eq!(row.state, expected, "crash {n}");
    }
    // One auction at desire, one per immediate restart.
    assert!(
        eventually(Duration::from_secs(5), || auctioneer.received().len() == 3).await,
        "{:?}",
        auctioneer.received()
    );
    assert_eq!(
        kind(crash(&b, "web", 0, &ik("x", "cell-1")).await),
        Type::ActualLrpCannotBeCrashed
    );
}

async fn fail_remove_and_retire(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 3)).await, None);
    let fail = |index: i32| m::FailActualLrpRequest {
        actual_lrp_key: Some(key("web", index)),
        error_message: "no cells".into(),
    };
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/fail", &fail(0)).await;
    assert_eq!(reply.error, None);
    assert_eq!(
        ordinary(&b, "web", 0).await.unwrap().placement_error,
        "no cells"
    );
    let a = ik("a", "cell-1");
    assert_eq!(start(&b, "web", 1, &a).await, None);
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/fail", &fail(1)).await;
    assert_eq!(kind(reply.error), Type::ActualLrpCannotBeFailed);
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/fail", &fail(9)).await;
    assert_eq!(
        reply.error, None,
        "failing a missing instance is not an error upstream"
    );

    let remove =
        |index: i32, instance: Option<m::ActualLrpInstanceKey>| m::RemoveActualLrpRequest {
            process_guid: "web".into(),
            index,
            actual_lrp_instance_key: instance,
        };
    let reply: m::ActualLrpLifecycleResponse = b
        .call(
            "/v1/actual_lrps/remove",
            &remove(1, Some(ik("z", "cell-9"))),
        )
        .await;
    assert_eq!(
        kind(reply.error),
        Type::ResourceNotFound,
        "wrong instance key"
    );
    let reply: m::ActualLrpLifecycleResponse = b
        .call("/v1/actual_lrps/remove", &remove(1, Some(a.clone())))
        .await;
    assert_eq!(reply.error, None);
    assert!(ordinary(&b, "web", 1).await.is_none());

    let retire = |index: i32| m::RetireActualLrpRequest {
        actual_lrp_key: Some(key("web", index)),
    };
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/retire", &retire(2)).await;
    assert_eq!(reply.error, None);
    assert!(ordinary(&b, "web", 2).await.is_none());
    let reply: m::ActualLrpLifecycleResponse = b.call("/v1/actual_lrps/retire", &retire(2)).await;
    assert_eq!(kind(reply.error), Type::ResourceNotFound);
    assert_eq!(stored_rows(&b, "web").await, 1);
}

async fn lists_filter_and_group(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 2)).await, None);
    assert_eq!(desire(&b, desired("api", 1)).await, None);
    assert_eq!(start(&b, "web", 0, &ik("a", "cell-1")).await, None);
    let by_cell: m::ActualLrpsResponse = b
        .call(
            "/v1/actual_lrps/list",
            &m::ActualLrpsRequest {
                cell_id: "cell-1".into(),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(by_cell.actual_lrps.len(), 1);
    let by_index: m::ActualLrpsResponse = b
        .call(
            "/v1/actual_lrps/list",
            &m::ActualLrpsRequest {
                process_guid: "web".into(),
                optional_index: Some(m::actual_lr_ps_request::OptionalIndex::Index(1)),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(by_index.actual_lrps.len(), 1);
    let by_guids: m::ActualLrpsByProcessGuidsResponse = b
        .call(
            "/v1/actual_lrps/list_by_process_guids",
            &m::ActualLrpsByProcessGuidsRequest {
                process_guids: vec!["web".into(), "api".into()],
            },
        )
        .await;
    assert_eq!(by_guids.actual_lrps.len(), 3);
    let empty: m::ActualLrpsByProcessGuidsResponse = b
        .call(
            "/v1/actual_lrps/list_by_process_guids",
            &m::ActualLrpsByProcessGuidsRequest::default(),
        )
        .await;
    assert_eq!(
        empty.error.unwrap().message,
        "process_guids must not be empty"
    );
    let groups: m::ActualLrpGroupsResponse = b
        .call(
            "/v1/actual_lrp_groups/list",
            &m::ActualLrpGroupsRequest::default(),
        )
        .await;
    assert_eq!(groups.actual_lrp_groups.len(), 3);
    let one: m::ActualLrpGroupResponse = b
        .call(
            "/v1/actual_lrp_groups/get_by_process_guid_and_index",
            &m::ActualLrpGroupByProcessGuidAndIndexRequest {
                process_guid: "web".into(),
                index: 0,
            },
        )
        .await;
    assert_eq!(
        one.actual_lrp_group.unwrap().instance.unwrap().state,
        "RUNNING"
    );
    let none: m::ActualLrpGroupResponse = b
        .call(
            "/v1/actual_lrp_groups/get_by_process_guid_and_index",
            &m::ActualLrpGroupByProcessGuidAndIndexRequest {
                process_guid: "web".into(),
                index: 7,
            },
        )
        .await;
    assert_eq!(kind(none.error), Type::ResourceNotFound);
}

async fn lrps_survive_a_restart(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 2)).await, None);
    assert_eq!(start(&b, "web", 0, &ik("a", "cell-1")).await, None);
    let before = actuals(&b, "web").await;
    let again = TestBbs::on(b.store, settings(None)).await;
    assert_eq!(actuals(&again, "web").await, before);
    let got: m::DesiredLrpResponse = again
        .call(
            "/v1/desired_lrps/get_by_process_guid.r3",
            &m::DesiredLrpByProcessGuidRequest {
                process_guid: "web".into(),
            },
        )
        .await;
    assert_eq!(got.desired_lrp.unwrap().instances, 2);
}

/// Upstream stores routes with Go's `json.Marshal` of each router's raw JSON: compacted, HTML
/// characters escaped, keys in the order sent. Every read serves that, before and after a
/// restart, and an update's routes are rewritten the same way.
async fn routes_come_back_as_upstream_stores_them(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    let sent = |raw: &str| m::ProtoRoutes {
        routes: [("cf-router".to_owned(), raw.as_bytes().to_vec())].into(),
    };
    let mut lrp = desired("web", 1);
    lrp.routes = Some(sent(
        "[ {\"port\": 8080,\n \"hostnames\" : [\"a.example.com/?x=<1>&y\"]} ]",
    ));
    assert_eq!(desire(&b, lrp).await, None);
    let stored = "[{\"port\":8080,\"hostnames\":[\"a.example.com/?x=\\u003c1\\u003e\\u0026y\"]}]";
    assert_eq!(routes_of(&b, "web").await, stored);
    let again = TestBbs::on(b.store, settings(None)).await;
    assert_eq!(routes_of(&again, "web").await, stored);

    let update: m::DesiredLrpLifecycleResponse = again
        .call(
            "/v1/desired_lrp/update",
            &m::UpdateDesiredLrpRequest {
                process_guid: "web".into(),
                update: Some(m::DesiredLrpUpdate {
                    routes: Some(sent("{ \"z\": [ ], \"a\": \"&\" }")),
                    ..Default::default()
                }),
            },
        )
        .await;
    assert_eq!(update.error, None);
    let updated = "{\"z\":[],\"a\":\"\\u0026\"}";
    assert_eq!(routes_of(&again, "web").await, updated);
    let third = TestBbs::on(again.store, settings(None)).await;
    assert_eq!(routes_of(&third, "web").await, updated);
}

/// The `cf-router` value of a desired LRP's routes, as the API serves it.
async fn routes_of(b: &TestBbs, guid: &str) -> String {
    let got: m::DesiredLrpResponse = b
        .call(
            "/v1/desired_lrps/get_by_process_guid.r3",
            &m::DesiredLrpByProcessGuidRequest {
                process_guid: guid.into(),
            },
        )
        .await;
    let routes = got.desired_lrp.unwrap().routes.unwrap().routes;
    String::from_utf8(routes["cf-router"].clone()).unwrap()
}

async fn invalid_actual_lrp_requests_are_refused_and_change_nothing(backend: Backend) {
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    assert_eq!(desire(&b, desired("web", 1)).await, None);
    let before = actuals(&b, "web").await;
    let error = claim(&b, "web", 0, &ik("", "")).await.unwrap();
    assert_eq!(
        (error.kind(), error.message.as_str()),
        (
            Type::InvalidRequest,
            "Invalid field: cell_id, Invalid field: instance_guid"
        )
    );
    let mut no_address = start_request("web", 0, &ik("a", "c"));
    no_address.actual_lrp_net_info = Some(Default::default());
    let reply: m::ActualLrpLifecycleResponse =
        b.call("/v1/actual_lrps/start.r1", &no_address).await;
    assert_eq!(reply.error.unwrap().message, "Invalid field: address");
    let reply: m::ActualLrpLifecycleResponse = b
        .call(
            "/v1/actual_lrps/remove",
            &m::RemoveActualLrpRequest {
                process_guid: "web".into(),
                index: -1,
                actual_lrp_instance_key: None,
            },
        )
        .await;
    assert_eq!(reply.error.unwrap().message, "Invalid field: index");
    let garbage = b.post_raw("/v1/actual_lrps/crash", vec![0xff, 0x01]).await;
    let body = actix_web::test::read_body(garbage).await;
    let error = <m::ActualLrpLifecycleResponse as prost::Message>::decode(body)
        .unwrap()
        .error
        .unwrap();
    assert_eq!(error.kind(), Type::InvalidRequest);
    assert_eq!(actuals(&b, "web").await, before);
}

// ---- concurrency -------------------------------------------------------------------------

/// The last row seen per process guid: (epoch, index, row).
type Observed = std::rc::Rc<std::cell::RefCell<HashMap<String, (String, u32, m::ActualLrp)>>>;

/// 64 clients doing random claim/start/crash/remove on 100 LRPs. Afterwards: memory and the
/// store agree row for row (no record lost, no extra), and every instance's modification tag
/// only ever moved forward, strictly with each observed change.
async fn concurrent_clients_keep_every_invariant(backend: Backend) {
    const LRPS: usize = 100;
    const CLIENTS: usize = 64;
    let seconds: u64 = std::env::var("LRP_STRESS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let Some(b) = TestBbs::start(backend, settings(None)).await else {
        return;
    };
    for i in 0..LRPS {
        assert_eq!(desire(&b, desired(&format!("lrp-{i}"), 1)).await, None);
    }
    let b = std::rc::Rc::new(b);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let observed: Observed = Default::default();
    let ops = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let clients = (0..CLIENTS).map(|c| {
        let (b, observed, ops) = (b.clone(), observed.clone(), ops.clone());
        async move {
            let mut seed: u64 = 0x9e37_79b9_7f4a_7c15 ^ (c as u64 + 1);
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            while Instant::now() < deadline {
                let guid = format!("lrp-{}", next() % LRPS as u64);
                let instance = ik(&format!("i{}", next() % 3), &format!("cell-{}", next() % 3));
                match next() % 5 {
                    0 => drop(claim(&b, &guid, 0, &instance).await),
                    1 | 2 => drop(start(&b, &guid, 0, &instance).await),
                    3 => drop(crash(&b, &guid, 0, &instance).await),
                    _ => {
                        let _: m::ActualLrpLifecycleResponse = b
                            .call(
                                "/v1/actual_lrps/remove",
                                &m::RemoveActualLrpRequest {
                                    process_guid: guid.clone(),
                                    index: 0,
                                    actual_lrp_instance_key: Some(instance),
                                },
                            )
                            .await;
                    }
                }
                ops.set(ops.get() + 1);
                if let Some(row) = ordinary(&b, &guid, 0).await {
                    let tag = row.modification_tag.clone().unwrap();
                    let mut seen = observed.borrow_mut();
                    if let Some((epoch, index, previous)) = seen.get(&guid) {
                        if *epoch == tag.epoch {
                            assert!(
                                tag.index >= *index,
                                "{guid}: tag went back from {index} to {}",
                                tag.index
                            );
                            let mut a = previous.clone();
                            let mut z = row.clone();
                            a.modification_tag = None;
                            z.modification_tag = None;
                            if a != z {
                                assert!(
                                    tag.index > *index,
                                    "{guid}: changed without a new tag index"
                                );
                            }
                        }
                    }
                    seen.insert(guid.clone(), (tag.epoch.clone(), tag.index, row));
                }
            }
        }
    });
    futures::future::join_all(clients).await;
    assert!(ops.get() > 0);
    // Memory and store agree row for row.
    let in_memory: m::ActualLrpsResponse = b
        .call("/v1/actual_lrps/list", &m::ActualLrpsRequest::default())
        .await;
    let stored = b
        .store
        .store
        .actual_lrps(&Default::default())
        .await
        .unwrap();
    assert_eq!(
        in_memory.actual_lrps.len(),
        stored.len(),
        "after {} operations",
        ops.get()
    );
    let mut by_key: HashMap<(String, i32, i32), &m::ActualLrp> = HashMap::new();
    for row in &in_memory.actual_lrps {
        let k = row.actual_lrp_key.as_ref().unwrap();
        assert!(
            by_key
                .insert((k.process_guid.clone(), k.index, row.presence), row)
                .is_none(),
            "one row per key"
        );
    }
    for record in &stored {
        let row = by_key
            .get(&(
                record.process_guid.clone(),
                record.index,
                record.presence.as_i32(),
            ))
            .unwrap_or_else(|| {
                panic!(
                    "stored row {}/{} not in memory",
                    record.process_guid, record.index
                )
            });
        assert_eq!(row.state, record.state);
        assert_eq!(
            row.modification_tag.as_ref().unwrap().index as i32,
            record.modification_tag_index
        );
        assert_eq!(
            row.actual_lrp_instance_key.as_ref().unwrap().instance_guid,
            record.instance_guid
        );
    }
    eprintln!("{backend}: {} operations in {seconds} s", ops.get());
}

on_every_backend!(
    desire_creates_unclaimed_instances_and_asks_for_placement,
    desire_twice_is_resource_exists,
    an_invalid_desire_is_refused_and_stores_nothing,
    desired_reads_rebuild_what_was_desired,
    update_scales_instances_up_and_down,
    remove_deletes_the_lrp_and_its_unstarted_instances,
    claim_rules,
    start_rules,
    crash_restarts_at_once_then_backs_off,
    fail_remove_and_retire,
    lists_filter_and_group,
    lrps_survive_a_restart,
    routes_come_back_as_upstream_stores_them,
    invalid_actual_lrp_requests_are_refused_and_change_nothing,
    concurrent_clients_keep_every_invariant,
);
