//! The task lifecycle on every backend: one test per transition rule (bbs-reference §3.1),
//! validation, auctioneer requests, completion callbacks, and a 1,000-task run.

#[macro_use]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use bbs_actors::ActorSettings;
use bbs_models as m;
use bbs_models::error::Type;
use bbs_models::task::State;
use bbs_store::Backend;
use support::inproc::{eventually, FakeServer, TestBbs};

fn settings(auctioneer: Option<&FakeServer>) -> ActorSettings {
    ActorSettings {
        storage_actors: 4,
        auctioneer_address: auctioneer.map(|a| a.url.clone()),
        communication_timeout: Duration::from_secs(2),
        max_task_retries: 2,
        task_callback_workers: 16,
        kick_task_duration: Duration::from_millis(300),
        ..ActorSettings::default()
    }
}

async fn bbs(backend: Backend) -> Option<TestBbs> {
    TestBbs::start(backend, settings(None)).await
}

fn definition(callback: Option<&str>) -> m::TaskDefinition {
    m::TaskDefinition {
        root_fs: "docker:///busybox".into(),
        action: Some(m::Action {
            run_action: Some(m::RunAction {
                path: "/bin/echo".into(),
                user: "vcap".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        memory_mb: 128,
        disk_mb: 256,
        annotation: "a note".into(),
        completion_callback_url: callback.unwrap_or_default().into(),
        placement_tags: vec!["t1".into()],
        ..Default::default()
    }
}

async fn desire(b: &TestBbs, guid: &str, callback: Option<&str>) -> Option<m::Error> {
    let reply: m::TaskLifecycleResponse = b
        .call(
            "/v1/tasks/desire.r2",
            &m::DesireTaskRequest {
                task_guid: guid.into(),
                domain: "tests".into(),
                task_definition: Some(definition(callback)),
            },
        )
        .await;
    reply.error
}

async fn start(b: &TestBbs, guid: &str, cell: &str) -> m::StartTaskResponse {
    b.call(
        "/v1/tasks/start",
        &m::StartTaskRequest {
            task_guid: guid.into(),
            cell_id: cell.into(),
        },
    )
    .await
}

async fn guid_call(b: &TestBbs, path: &str, guid: &str) -> Option<m::Error> {
    let reply: m::TaskLifecycleResponse = b
        .call(
            path,
            &m::TaskGuidRequest {
                task_guid: guid.into(),
            },
        )
        .await;
    reply.error
}

async fn complete(b: &TestBbs, guid: &str, cell: &str) -> Option<m::Error> {
    let reply: m::TaskLifecycleResponse = b
        .call(
            "/v1/tasks/complete",
            &m::CompleteTaskRequest {
                task_guid: guid.into(),
                cell_id: cell.into(),
                failed: false,
                failure_reason: String::new(),
                result: "the result".into(),
            },
        )
        .await;
    reply.error
}

async fn reject(b: &TestBbs, guid: &str) -> Option<m::Error> {
    let reply: m::TaskLifecycleResponse = b
        .call(
            "/v1/tasks/reject",
            &m::RejectTaskRequest {
                task_guid: guid.into(),
                rejection_reason: "no capacity".into(),
            },
        )
        .await;
    reply.error
}

async fn fail(b: &TestBbs, guid: &str) -> Option<m::Error> {
    let reply: m::TaskLifecycleResponse = b
        .call(
            "/v1/tasks/fail",
            &m::FailTaskRequest {
                task_guid: guid.into(),
                failure_reason: "gave up".into(),
            },
        )
        .await;
    reply.error
}

async fn get(b: &TestBbs, guid: &str) -> m::TaskResponse {
    b.call(
        "/v1/tasks/get_by_task_guid.r3",
        &m::TaskByGuidRequest {
            task_guid: guid.into(),
        },
    )
    .await
}

async fn task(b: &TestBbs, guid: &str) -> m::Task {
    let reply = get(b, guid).await;
    assert_eq!(reply.error, None, "get {guid}");
    reply.task.expect("a task")
}

fn state_of(task: &m::Task) -> State {
    State::try_from(task.state).unwrap()
}

fn transition_error(error: Option<m::Error>, from: &str, to: &str) {
    let error = error.expect("an error");
    assert_eq!(error.kind(), Type::InvalidStateTransition);
    assert_eq!(
        error.message,
        format!("Cannot transition from {from} to {to}")
    );
}

/// Brings a fresh task to `state` (on cell-1 when running).
async fn task_in(b: &TestBbs, guid: &str, state: State) {
    assert_eq!(desire(b, guid, None).await, None);
    if state == State::Pending {
        return;
    }
    assert!(start(b, guid, "cell-1").await.should_start);
    if state == State::Running {
        return;
    }
    assert_eq!(complete(b, guid, "cell-1").await, None);
    if state == State::Completed {
        return;
    }
    assert_eq!(guid_call(b, "/v1/tasks/resolving", guid).await, None);
}

/// The store agrees with what the API says.
async fn stored_state(b: &TestBbs, guid: &str) -> Option<i32> {
    b.store.store.task(guid).await.unwrap().map(|t| t.state)
}

// ---- desire ----------------------------------------------------------------------------

async fn desire_creates_a_pending_task(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    assert_eq!(desire(&b, "t1", None).await, None);
    let t = task(&b, "t1").await;
    assert_eq!(state_of(&t), State::Pending);
    assert_eq!(t.domain, "tests");
    assert_eq!(t.created_at, t.updated_at);
    assert_eq!(t.task_definition, Some(definition(None)));
    assert_eq!(stored_state(&b, "t1").await, Some(State::Pending as i32));
}

async fn desire_twice_is_resource_exists(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    assert_eq!(desire(&b, "t1", None).await, None);
    assert_eq!(
        desire(&b, "t1", None).await.unwrap().kind(),
        Type::ResourceExists
    );
}

/// The group commit: desires arriving together share commits, and a write the store refuses
/// (a task row the server's memory does not know, put there behind its back) fails only its
/// own request; every other one is answered, listed and stored.
async fn a_refused_write_fails_only_its_own_request(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    let ghost = bbs_store::TaskRecord {
        guid: "ghost".into(),
        domain: "tests".into(),
        task_definition: "02not-read".into(),
        created_at: 1,
        ..Default::default()
    };
    b.store.store.insert_task(&ghost).await.unwrap();
    let guids: Vec<String> = (0..40).map(|i| format!("storm-{i:02}")).collect();
    let (ghost_answer, answers) = futures::join!(
        desire(&b, "ghost", None),
        futures::future::join_all(guids.iter().map(|g| desire(&b, g, None)))
    );
    let error = ghost_answer.expect("the refused write is answered with an error");
    assert_eq!(error.kind(), Type::ResourceExists);
    assert_eq!(error.message, "the requested resource already exists");
    assert!(answers.iter().all(Option::is_none), "{answers:?}");
    let listed: m::TasksResponse = b
        .call(
            "/v1/tasks/list.r3",
            &m::TasksRequest {
                domain: "tests".into(),
                ..Default::default()
            },
        )
        .await;
    let mut listed: Vec<String> = listed.tasks.into_iter().map(|t| t.task_guid).collect();
    listed.sort();
    assert_eq!(listed, guids);
    for guid in &guids {
        assert_eq!(
            stored_state(&b, guid).await,
            Some(State::Pending as i32),
            "{guid}"
        );
    }
    // The row the server did not write is as it was.
    assert_eq!(b.store.store.task("ghost").await.unwrap(), Some(ghost));
}

async fn invalid_desires_are_refused_and_store_nothing(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    let cases: Vec<(m::DesireTaskRequest, &str)> = vec![
        (
            m::DesireTaskRequest {
                task_guid: "bad guid!".into(),
                domain: "d".into(),
                task_definition: Some(definition(None)),
            },
            "Invalid field: task_guid",
        ),
        (
            m::DesireTaskRequest {
                task_guid: "g1".into(),
                domain: "".into(),
                task_definition: Some(definition(None)),
            },
            "Invalid field: domain",
        ),
        (
            m::DesireTaskRequest {
                task_guid: "g2".into(),
                domain: "d".into(),
                task_definition: Some(m::TaskDefinition {
                    action: None,
                    ..definition(None)
                }),
            },
            "invalid action type",
        ),
        (
            m::DesireTaskRequest {
                task_guid: "g3".into(),
                domain: "d".into(),
                task_definition: None,
            },
            "Invalid field: task_definition",
        ),
    ];
    for (request, message) in cases {
        let reply: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &request).await;
        let error = reply.error.expect("an error");
        assert_eq!(error.kind(), Type::InvalidRequest);
        assert_eq!(error.message, message);
    }
    let garbage = b.post_raw("/v1/tasks/desire.r2", vec![0xff, 0x01]).await;
    assert_eq!(garbage.status(), 200);
    let body = actix_web::test::read_body(garbage).await;
    let error = <m::TaskLifecycleResponse as prost::Message>::decode(body)
        .unwrap()
        .error
        .unwrap();
    assert_eq!(
        (error.kind(), error.message.as_str()),
        (Type::InvalidRequest, "the request received is invalid")
    );
    assert!(b
        .store
        .store
        .tasks(&Default::default())
        .await
        .unwrap()
        .is_empty());
}

// ---- start -----------------------------------------------------------------------------

async fn start_runs_a_pending_task_on_the_cell(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Pending).await;
    let reply = start(&b, "t1", "cell-1").await;
    assert_eq!((reply.error, reply.should_start), (None, true));
    let t = task(&b, "t1").await;
    assert_eq!(
        (state_of(&t), t.cell_id.as_str()),
        (State::Running, "cell-1")
    );
    assert_eq!(stored_state(&b, "t1").await, Some(State::Running as i32));
}

async fn start_again_on_the_same_cell_is_a_no_op(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Running).await;
    let before = task(&b, "t1").await;
    let reply = start(&b, "t1", "cell-1").await;
    assert_eq!((reply.error, reply.should_start), (None, false));
    assert_eq!(task(&b, "t1").await, before);
}

async fn start_on_another_cell_is_refused(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Running).await;
    let reply = start(&b, "t1", "cell-2").await;
    assert!(!reply.should_start);
    transition_error(reply.error, "Running", "Running");
}

async fn start_of_a_finished_task_is_refused(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "done", State::Completed).await;
    transition_error(
        start(&b, "done", "cell-1").await.error,
        "Completed",
        "Running",
    );
    task_in(&b, "resolving", State::Resolving).await;
    transition_error(
        start(&b, "resolving", "cell-1").await.error,
        "Resolving",
        "Running",
    );
}

async fn start_of_a_missing_task_is_not_found(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    let reply = start(&b, "ghost", "cell-1").await;
    assert_eq!(reply.error.unwrap().kind(), Type::ResourceNotFound);
}

// ---- cancel and fail -------------------------------------------------------------------

async fn cancel_completes_pending_and_running_tasks(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    for (guid, s) in [("p", State::Pending), ("r", State::Running)] {
        task_in(&b, guid, s).await;
        assert_eq!(guid_call(&b, "/v1/tasks/cancel", guid).await, None);
        let t = task(&b, guid).await;
        assert_eq!(state_of(&t), State::Completed);
        assert!(t.failed);
        assert_eq!(t.failure_reason, "task was cancelled");
        assert_eq!(t.cell_id, "");
        assert_eq!(stored_state(&b, guid).await, Some(State::Completed as i32));
    }
}

async fn cancel_of_a_finished_task_is_refused(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "c", State::Completed).await;
    transition_error(
        guid_call(&b, "/v1/tasks/cancel", "c").await,
        "Completed",
        "Completed",
    );
    task_in(&b, "r", State::Resolving).await;
    transition_error(
        guid_call(&b, "/v1/tasks/cancel", "r").await,
        "Resolving",
        "Completed",
    );
    assert_eq!(
        guid_call(&b, "/v1/tasks/cancel", "ghost")
            .await
            .unwrap()
            .kind(),
        Type::ResourceNotFound
    );
}

async fn fail_completes_a_task_with_the_reason(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Running).await;
    assert_eq!(fail(&b, "t1").await, None);
    let t = task(&b, "t1").await;
    assert_eq!(
        (state_of(&t), t.failed, t.failure_reason.as_str()),
        (State::Completed, true, "gave up")
    );
    transition_error(fail(&b, "t1").await, "Completed", "Completed");
}

// ---- reject ----------------------------------------------------------------------------

async fn reject_returns_the_task_to_pending_until_retries_run_out(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Running).await;
    // max_task_retries = 2: rejections 1 and 2 go back to Pending, the third fails the task.
    for n in 1..=2 {
        assert_eq!(reject(&b, "t1").await, None);
        let t = task(&b, "t1").await;
        assert_eq!((state_of(&t), t.rejection_count), (State::Pending, n));
        assert_eq!(t.rejection_reason, "no capacity");
        assert_eq!(
            t.cell_id, "cell-1",
            "upstream leaves cell_id on a rejected task"
        );
    }
    assert_eq!(reject(&b, "t1").await, None);
    let t = task(&b, "t1").await;
    assert_eq!((state_of(&t), t.failed), (State::Completed, true));
    assert_eq!(t.failure_reason, "no capacity");
    assert_eq!(stored_state(&b, "t1").await, Some(State::Completed as i32));
}

async fn reject_of_a_finished_or_missing_task_is_refused(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "c", State::Completed).await;
    assert_eq!(reject(&b, "c").await.unwrap().kind(), Type::InvalidRequest);
    assert_eq!(
        reject(&b, "ghost").await.unwrap().kind(),
        Type::ResourceNotFound
    );
}

// ---- complete, resolving, delete -------------------------------------------------------

async fn complete_finishes_a_running_task(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Running).await;
    assert_eq!(complete(&b, "t1", "cell-1").await, None);
    let t = task(&b, "t1").await;
    assert_eq!(state_of(&t), State::Completed);
    assert_eq!(
        (t.result.as_str(), t.cell_id.as_str(), t.failed),
        ("the result", "", false)
    );
    assert!(t.first_completed_at > 0);
}

async fn complete_from_another_cell_is_refused(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Running).await;
    let error = complete(&b, "t1", "cell-2").await.unwrap();
    assert_eq!(error.kind(), Type::RunningOnDifferentCell);
    assert_eq!(error.message, "Running on cell cell-1 not cell-2");
    assert_eq!(state_of(&task(&b, "t1").await), State::Running);
}

async fn complete_of_a_task_not_running_is_refused(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "p", State::Pending).await;
    transition_error(complete(&b, "p", "cell-1").await, "Pending", "Completed");
    task_in(&b, "c", State::Completed).await;
    transition_error(complete(&b, "c", "cell-1").await, "Completed", "Completed");
}

async fn resolving_needs_a_completed_task(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "c", State::Completed).await;
    assert_eq!(guid_call(&b, "/v1/tasks/resolving", "c").await, None);
    assert_eq!(state_of(&task(&b, "c").await), State::Resolving);
    transition_error(
        guid_call(&b, "/v1/tasks/resolving", "c").await,
        "Resolving",
        "Resolving",
    );
    task_in(&b, "r", State::Running).await;
    transition_error(
        guid_call(&b, "/v1/tasks/resolving", "r").await,
        "Running",
        "Resolving",
    );
}

async fn delete_removes_a_resolving_task(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "r", State::Resolving).await;
    assert_eq!(guid_call(&b, "/v1/tasks/delete", "r").await, None);
    assert_eq!(
        get(&b, "r").await.error.unwrap().kind(),
        Type::ResourceNotFound
    );
    assert_eq!(stored_state(&b, "r").await, None);
}

async fn delete_of_a_task_not_resolving_is_refused(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "c", State::Completed).await;
    transition_error(
        guid_call(&b, "/v1/tasks/delete", "c").await,
        "Completed",
        "Resolving",
    );
    task_in(&b, "p", State::Pending).await;
    transition_error(
        guid_call(&b, "/v1/tasks/delete", "p").await,
        "Pending",
        "Resolving",
    );
    assert_eq!(
        guid_call(&b, "/v1/tasks/delete", "ghost")
            .await
            .unwrap()
            .kind(),
        Type::ResourceNotFound
    );
}

// ---- reads -----------------------------------------------------------------------------

async fn list_filters_by_domain_and_cell(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "a", State::Running).await;
    task_in(&b, "b", State::Pending).await;
    let other = m::DesireTaskRequest {
        task_guid: "c".into(),
        domain: "other".into(),
        task_definition: Some(definition(None)),
    };
    let _: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &other).await;
    let list = |domain: &str, cell: &str| m::TasksRequest {
        domain: domain.into(),
        cell_id: cell.into(),
    };
    let guids = |r: m::TasksResponse| r.tasks.into_iter().map(|t| t.task_guid).collect::<Vec<_>>();
    assert_eq!(
        guids(b.call("/v1/tasks/list.r3", &list("", "")).await),
        ["a", "b", "c"]
    );
    assert_eq!(
        guids(b.call("/v1/tasks/list.r3", &list("tests", "")).await),
        ["a", "b"]
    );
    assert_eq!(
        guids(b.call("/v1/tasks/list.r3", &list("", "cell-1")).await),
        ["a"]
    );
    assert!(guids(b.call("/v1/tasks/list.r3", &list("none", "")).await).is_empty());
    let missing: m::TaskResponse = b
        .call(
            "/v1/tasks/get_by_task_guid.r3",
            &m::TaskByGuidRequest {
                task_guid: "zz".into(),
            },
        )
        .await;
    assert_eq!(missing.error.unwrap().kind(), Type::ResourceNotFound);
}

async fn r2_routes_downgrade_image_layers(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    let mut d = definition(None);
    d.image_layers = vec![m::ImageLayer {
        name: "layer".into(),
        url: "http://x/l.tgz".into(),
        destination_path: "/l".into(),
        layer_type: m::image_layer::Type::Shared as i32,
        media_type: m::image_layer::MediaType::Tgz as i32,
        digest_algorithm: m::image_layer::DigestAlgorithm::Sha256 as i32,
        digest_value: "abc".into(),
    }];
    let request = m::DesireTaskRequest {
        task_guid: "t".into(),
        domain: "d".into(),
        task_definition: Some(d),
    };
    let _: m::TaskLifecycleResponse = b.call("/v1/tasks/desire.r2", &request).await;
    let by_guid = m::TaskByGuidRequest {
        task_guid: "t".into(),
    };
    let r3: m::TaskResponse = b.call("/v1/tasks/get_by_task_guid.r3", &by_guid).await;
    assert_eq!(
        r3.task.unwrap().task_definition.unwrap().image_layers.len(),
        1
    );
    let r2: m::TaskResponse = b.call("/v1/tasks/get_by_task_guid.r2", &by_guid).await;
    let d2 = r2.task.unwrap().task_definition.unwrap();
    assert!(d2.image_layers.is_empty());
    assert_eq!(d2.cached_dependencies[0].cache_key, "sha256:abc");
    let list: m::TasksResponse = b
        .call("/v1/tasks/list.r2", &m::TasksRequest::default())
        .await;
    assert!(list.tasks[0]
        .task_definition
        .as_ref()
        .unwrap()
        .image_layers
        .is_empty());
}

async fn tasks_survive_a_restart(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Running).await;
    let before = task(&b, "t1").await;
    let again = TestBbs::on(b.store, settings(None)).await;
    assert_eq!(task(&again, "t1").await, before);
}

/// A write the store refuses leaves memory as it was: the API never shows a change that
/// was not persisted. (SQL backends: the table is renamed away underneath the server.)
async fn a_failed_write_changes_nothing(backend: Backend) {
    if backend == Backend::Etcd {
        return; // etcd has no table to take away; its failures are covered by the store suite.
    }
    let Some(b) = bbs(backend).await else { return };
    task_in(&b, "t1", State::Pending).await;
    b.store
        .raw_sql("ALTER TABLE tasks RENAME TO tasks_gone")
        .await;
    let error = start(&b, "t1", "cell-1")
        .await
        .error
        .expect("the write fails");
    assert_eq!(error.kind(), Type::Unrecoverable);
    let t = task(&b, "t1").await;
    assert_eq!(
        (state_of(&t), t.cell_id.as_str()),
        (State::Pending, ""),
        "memory unchanged"
    );
    b.store
        .raw_sql("ALTER TABLE tasks_gone RENAME TO tasks")
        .await;
    assert!(start(&b, "t1", "cell-1").await.should_start);
    assert_eq!(stored_state(&b, "t1").await, Some(State::Running as i32));
}

// ---- auctioneer ------------------------------------------------------------------------

async fn desire_asks_the_auctioneer_to_place_the_task(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    let Some(b) = TestBbs::start(backend, settings(Some(&auctioneer))).await else {
        return;
    };
    assert_eq!(desire(&b, "t1", None).await, None);
    assert!(eventually(Duration::from_secs(5), || !auctioneer.received().is_empty()).await);
    let got = auctioneer.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/v1/tasks");
    assert_eq!(
        got[0].body,
        serde_json::json!([{
            "TaskGuid": "t1", "Domain": "tests", "PlacementTags": ["t1"], "VolumeDrivers": [],
            "RootFs": "docker:///busybox", "MemoryMB": 128, "DiskMB": 256, "MaxPids": 0,
            "state": "Invalid", "failed": false
        }])
    );
}

async fn an_unreachable_auctioneer_leaves_the_task_pending(backend: Backend) {
    let auctioneer = FakeServer::start(202).await;
    auctioneer.stop().await;
    let Some(b) = TestBbs::start(backend, settings(Some(&auctioneer))).await else {
        return;
    };
    assert_eq!(desire(&b, "t1", None).await, None);
    assert_eq!(state_of(&task(&b, "t1").await), State::Pending);
}

// ---- callbacks -------------------------------------------------------------------------

/// Completes a task whose callback goes to `receiver`, then waits for it to be deleted.
async fn complete_with_callback(b: &TestBbs, guid: &str, receiver: &FakeServer) {
    let url = format!("{}/done/{guid}", receiver.url);
    assert_eq!(desire(b, guid, Some(&url)).await, None);
    assert!(start(b, guid, "cell-1").await.should_start);
    assert_eq!(complete(b, guid, "cell-1").await, None);
}

async fn gone(b: &TestBbs, guid: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if b.store.store.task(guid).await.unwrap().is_none() {
            return true;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn a_delivered_callback_deletes_the_task(backend: Backend) {
    let receiver = FakeServer::start(200).await;
    let Some(b) = bbs(backend).await else { return };
    complete_with_callback(&b, "t1", &receiver).await;
    assert!(gone(&b, "t1").await, "deleted after delivery");
    let got = receiver.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/done/t1");
    assert_eq!(got[0].body["task_guid"], "t1");
    assert_eq!(got[0].body["result"], "the result");
    assert_eq!(got[0].body["failed"], false);
    assert_eq!(got[0].body["annotation"], "a note");
    assert!(got[0].body["created_at"].as_i64().unwrap() > 0);
}

async fn a_4xx_or_500_answer_still_deletes_the_task(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    for (guid, status) in [("four", 404), ("five", 500)] {
        let receiver = FakeServer::start(status).await;
        complete_with_callback(&b, guid, &receiver).await;
        assert!(gone(&b, guid).await, "{status} deletes");
        assert_eq!(receiver.received().len(), 1);
    }
}

async fn a_503_answer_is_retried(backend: Backend) {
    let receiver = FakeServer::start(200).await;
    receiver.script.lock().unwrap().extend([503, 504]);
    let Some(b) = bbs(backend).await else { return };
    complete_with_callback(&b, "t1", &receiver).await;
    assert!(gone(&b, "t1").await);
    assert_eq!(receiver.received().len(), 3, "503, 504, then 200");
}

async fn a_callback_failing_every_attempt_leaves_the_task_resolving(backend: Backend) {
    // Upstream: three 503/504 answers and the task stays Resolving (no task_changed back to
    // Completed); task convergence demotes it once kick_task_duration has passed.
    let receiver = FakeServer::start(503).await;
    let slow_kick = ActorSettings {
        kick_task_duration: Duration::from_secs(3600),
        ..settings(None)
    };
    let Some(b) = TestBbs::start(backend, slow_kick).await else {
        return;
    };
    let mut events = b
        .bbs
        .events
        .subscribe(bbs_actors::events::Stream::Tasks, String::new(), None);
    complete_with_callback(&b, "t1", &receiver).await;
    assert!(
        eventually(Duration::from_secs(10), || receiver.received().len() == 3).await,
        "three attempts"
    );
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3, "no fourth attempt");
    let stored = b.store.store.task("t1").await.unwrap().expect("kept");
    assert_eq!(stored.state, State::Resolving as i32);
    assert_eq!(state_of(&task(&b, "t1").await), State::Resolving);
    let mut transitions = Vec::new();
    while let Ok(bbs_actors::events::Delivery::Event(n)) = events.try_recv() {
        match &*n.event {
            bbs_actors::events::Event::TaskCreated(_) => transitions.push("created".to_owned()),
            bbs_actors::events::Event::TaskChanged(before, after) => transitions.push(format!(
                "{:?}->{:?}",
                State::try_from(before.state).unwrap(),
                State::try_from(after.state).unwrap()
            )),
            other => transitions.push(format!("{other:?}")),
        }
    }
    assert_eq!(
        transitions,
        [
            "created",
            "Pending->Running",
            "Running->Completed",
            "Completed->Resolving"
        ]
    );
}

async fn an_unreachable_receiver_is_retried_until_it_answers(backend: Backend) {
    // Every attempt fails while the receiver is down; the task stays Resolving until it has
    // been so for kick_task_duration, then goes back to Completed and is tried again, until
    // the receiver is up.
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}/done");
    let Some(b) = bbs(backend).await else { return };
    assert_eq!(desire(&b, "t1", Some(&url)).await, None);
    assert!(start(&b, "t1", "cell-1").await.should_start);
    assert_eq!(complete(&b, "t1", "cell-1").await, None);
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    assert!(
        b.store.store.task("t1").await.unwrap().is_some(),
        "kept while undelivered"
    );
    let received = std::sync::Arc::new(std::sync::Mutex::new(0));
    let counter = received.clone();
    let server = actix_web::HttpServer::new(move || {
        let counter = counter.clone();
        actix_web::App::new().default_service(actix_web::web::to(move || {
            let counter = counter.clone();
            async move {
                *counter.lock().unwrap() += 1;
                actix_web::HttpResponse::Ok().finish()
            }
        }))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", port))
    .unwrap()
    .run();
    actix_web::rt::spawn(server);
    assert!(gone(&b, "t1").await, "delivered once the receiver is up");
    assert_eq!(*received.lock().unwrap(), 1);
}

async fn an_undelivered_callback_is_delivered_after_a_restart(backend: Backend) {
    let port = support::free_port();
    let url = format!("http://127.0.0.1:{port}/done");
    let slow_retry = ActorSettings {
        kick_task_duration: Duration::from_secs(3600),
        ..settings(None)
    };
    let Some(first) = TestBbs::start(backend, slow_retry).await else {
        return;
    };
    assert_eq!(desire(&first, "t1", Some(&url)).await, None);
    assert!(start(&first, "t1", "cell-1").await.should_start);
    assert_eq!(complete(&first, "t1", "cell-1").await, None);
    actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    let stored = first
        .store
        .store
        .task("t1")
        .await
        .unwrap()
        .expect("still owed");
    assert!(stored.state == State::Completed as i32 || stored.state == State::Resolving as i32);

    let receiver = actix_web::HttpServer::new(|| {
        actix_web::App::new().default_service(actix_web::web::to(|| async {
            actix_web::HttpResponse::Ok().finish()
        }))
    })
    .workers(1)
    .disable_signals()
    .bind(("127.0.0.1", port))
    .unwrap()
    .run();
    actix_web::rt::spawn(receiver);
    let restarted = TestBbs::on(first.store, settings(None)).await;
    assert!(gone(&restarted, "t1").await, "delivered after the restart");
}

// ---- volume ----------------------------------------------------------------------------

/// 1,000 tasks through desire, start, complete and callback leave nothing behind, and the
/// receiver sees every task. Deliveries are counted per task: a duplicate could only come from
/// a redelivery after a failed attempt, which this run (a receiver that always answers 200)
/// does not provoke, so the test expects exactly one each.
async fn a_thousand_tasks_leave_nothing_behind(backend: Backend) {
    const TASKS: usize = 1000;
    let receiver = FakeServer::start(200).await;
    let Some(b) = bbs(backend).await else { return };
    let b = std::rc::Rc::new(b);
    let mut work = Vec::new();
    for chunk in (0..TASKS).collect::<Vec<_>>().chunks(TASKS / 8) {
        let b = b.clone();
        let url = receiver.url.clone();
        let chunk = chunk.to_vec();
        work.push(async move {
            for i in chunk {
                let guid = format!("task-{i}");
                let callback = format!("{url}/done/{guid}");
                assert_eq!(desire(&b, &guid, Some(&callback)).await, None);
                assert!(
                    start(&b, &guid, &format!("cell-{}", i % 10))
                        .await
                        .should_start
                );
                assert_eq!(complete(&b, &guid, &format!("cell-{}", i % 10)).await, None);
            }
        });
    }
    futures::future::join_all(work).await;
    assert!(
        eventually(Duration::from_secs(120), || receiver.received().len()
            >= TASKS)
        .await,
        "received {} callbacks",
        receiver.received().len()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = b
            .store
            .store
            .tasks(&Default::default())
            .await
            .unwrap()
            .len();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} tasks left behind"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    let mut per_task: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        *per_task.entry(r.path.clone()).or_default() += 1;
    }
    assert_eq!(per_task.len(), TASKS, "every task called back");
    let duplicates: usize = per_task.values().map(|n| n - 1).sum();
    assert_eq!(
        duplicates, 0,
        "no redelivery was provoked, so none is expected"
    );
}

/// A client that resolved a task with no callback just before the server restarted can still
/// delete it: the restarted server leaves it Resolving (upstream demotes a Resolving task only
/// after kick_task_duration). Found by tests/crash.rs.
async fn a_task_resolved_before_a_restart_can_still_be_deleted(backend: Backend) {
    let slow_kick = || ActorSettings {
        kick_task_duration: Duration::from_secs(3600),
        ..settings(None)
    };
    let Some(b) = TestBbs::start(backend, slow_kick()).await else {
        return;
    };
    assert_eq!(desire(&b, "t1", None).await, None);
    assert_eq!(start(&b, "t1", "cell-1").await.error, None);
    assert_eq!(complete(&b, "t1", "cell-1").await, None);
    assert_eq!(guid_call(&b, "/v1/tasks/resolving", "t1").await, None);
    let again = TestBbs::on(b.store, slow_kick()).await;
    actix_web::rt::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state_of(&task(&again, "t1").await), State::Resolving);
    assert_eq!(guid_call(&again, "/v1/tasks/delete", "t1").await, None);
}

/// Upstream's convergence demotes a task Resolving for longer than kick_task_duration back to
/// Completed, and hands it to the callback worker, which does nothing without a callback URL:
/// the task stays Completed (it is not resolved again by the server).
async fn a_stuck_resolving_task_without_a_callback_goes_back_to_completed(backend: Backend) {
    let Some(b) = bbs(backend).await else { return };
    assert_eq!(desire(&b, "t1", None).await, None);
    assert_eq!(start(&b, "t1", "cell-1").await.error, None);
    assert_eq!(complete(&b, "t1", "cell-1").await, None);
    assert_eq!(guid_call(&b, "/v1/tasks/resolving", "t1").await, None);
    // kick_task_duration is 300 ms here: a few sweeps pass.
    actix_web::rt::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state_of(&task(&b, "t1").await), State::Completed);
    assert_eq!(
        b.store.store.task("t1").await.unwrap().unwrap().state,
        State::Completed as i32
    );
}

on_every_backend!(
    a_stuck_resolving_task_without_a_callback_goes_back_to_completed,
    a_task_resolved_before_a_restart_can_still_be_deleted,
    desire_creates_a_pending_task,
    desire_twice_is_resource_exists,
    a_refused_write_fails_only_its_own_request,
    invalid_desires_are_refused_and_store_nothing,
    start_runs_a_pending_task_on_the_cell,
    start_again_on_the_same_cell_is_a_no_op,
    start_on_another_cell_is_refused,
    start_of_a_finished_task_is_refused,
    start_of_a_missing_task_is_not_found,
    cancel_completes_pending_and_running_tasks,
    cancel_of_a_finished_task_is_refused,
    fail_completes_a_task_with_the_reason,
    reject_returns_the_task_to_pending_until_retries_run_out,
    reject_of_a_finished_or_missing_task_is_refused,
    complete_finishes_a_running_task,
    complete_from_another_cell_is_refused,
    complete_of_a_task_not_running_is_refused,
    resolving_needs_a_completed_task,
    delete_removes_a_resolving_task,
    delete_of_a_task_not_resolving_is_refused,
    list_filters_by_domain_and_cell,
    r2_routes_downgrade_image_layers,
    tasks_survive_a_restart,
    a_failed_write_changes_nothing,
    desire_asks_the_auctioneer_to_place_the_task,
    an_unreachable_auctioneer_leaves_the_task_pending,
    a_delivered_callback_deletes_the_task,
    a_4xx_or_500_answer_still_deletes_the_task,
    a_503_answer_is_retried,
    a_callback_failing_every_attempt_leaves_the_task_resolving,
    an_unreachable_receiver_is_retried_until_it_answers,
    an_undelivered_callback_is_delivered_after_a_restart,
    a_thousand_tasks_leave_nothing_behind,
);
