//! The event streams end to end: the real binary, real SSE over HTTP.

#[macro_use]
mod support;

use std::time::Duration;

use base64::Engine;
use bbs_models as m;
use futures::StreamExt;
use prost::Message;
use support::{config_json, Server};

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    id: Option<u64>,
    kind: String,
    data: Vec<u8>,
}

/// Reads events off a streaming response.
struct SseReader {
    stream: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        SseReader {
            stream: response.bytes_stream().boxed(),
            buffer: String::new(),
        }
    }

    async fn next(&mut self, timeout: Duration) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    id: None,
                    kind: String::new(),
                    data: Vec::new(),
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        event.id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event.kind = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        event.data = base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .unwrap_or_else(|_| v.as_bytes().to_vec());
                    }
                }
                return Some(event);
            }
            match tokio::time::timeout(timeout, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buffer.push_str(&String::from_utf8_lossy(&chunk)),
                _ => return None,
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Sse> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(Duration::from_secs(10)).await {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }
}

async fn server(extra: serde_json::Value) -> (bbs_store::testing::TestStore, Server) {
    let store = bbs_store::testing::TestStore::new(bbs_store::Backend::Sqlite).await;
    let server = Server::start(config_json(&store.config, extra)).await;
    (store, server)
}

async fn open(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Vec<u8>,
    last: Option<u64>,
) -> SseReader {
    let mut request = server
        .client()
        .clone()
        .request(method, format!("{}{path}", server.api))
        .body(body);
    if let Some(last) = last {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let reader = SseReader::new(request.send().await.unwrap());
    // Let the subscription register before changes are made.
    tokio::time::sleep(Duration::from_millis(100)).await;
    reader
}

fn task_request(guid: &str) -> m::DesireTaskRequest {
    support::fixtures::desire_task(guid)
}

async fn desire_task(server: &Server, guid: &str) {
    let reply: m::TaskLifecycleResponse = server
        .call("/v1/tasks/desire.r2", &task_request(guid))
        .await;
    assert_eq!(reply.error, None);
}

async fn start_task(server: &Server, guid: &str) -> m::StartTaskResponse {
    server
        .call(
            "/v1/tasks/start",
            &m::StartTaskRequest {
                task_guid: guid.into(),
                cell_id: "cell-1".into(),
            },
        )
        .await
}

#[tokio::test]
async fn the_task_stream_carries_each_change_in_commit_order() {
    let (_store, server) = server(serde_json::json!({})).await;
    let mut events = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/tasks.r1",
        vec![],
        None,
    )
    .await;
    desire_task(&server, "t1").await;
    assert!(start_task(&server, "t1").await.should_start);
    // A refused change emits nothing.
    let refused: m::TaskLifecycleResponse = server
        .call(
            "/v1/tasks/resolving",
            &m::TaskGuidRequest {
                task_guid: "t1".into(),
            },
        )
        .await;
    assert!(refused.error.is_some());
    let cancelled: m::TaskLifecycleResponse = server
        .call(
            "/v1/tasks/cancel",
            &m::TaskGuidRequest {
                task_guid: "t1".into(),
            },
        )
        .await;
    assert_eq!(cancelled.error, None);
    let got = events.take(3).await;
    let kinds: Vec<&str> = got.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["task_created", "task_changed", "task_changed"]);
    let ids: Vec<u64> = got.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let created = m::TaskCreatedEvent::decode(got[0].data.as_slice()).unwrap();
    assert_eq!(created.task.unwrap().task_guid, "t1");
    let started = m::TaskChangedEvent::decode(got[1].data.as_slice()).unwrap();
    assert_eq!(
        (started.before.unwrap().state, started.after.unwrap().state),
        (1, 2)
    );
    let cancel = m::TaskChangedEvent::decode(got[2].data.as_slice()).unwrap();
    assert_eq!(cancel.after.unwrap().failure_reason, "task was cancelled");
    assert!(
        events.next(Duration::from_millis(300)).await.is_none(),
        "nothing for the refused change"
    );
}

fn lrp(guid: &str, instances: i32) -> m::DesiredLrp {
    support::fixtures::desired_lrp(guid, instances)
}

async fn start_lrp(server: &Server, guid: &str, index: i32, cell: &str) {
    let request = m::StartActualLrpRequest {
        actual_lrp_key: Some(m::ActualLrpKey {
            process_guid: guid.into(),
            index,
            domain: "cf-apps".into(),
        }),
        actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
            instance_guid: format!("i-{index}"),
            cell_id: cell.into(),
        }),
        actual_lrp_net_info: Some(m::ActualLrpNetInfo {
            address: "10.0.0.1".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let reply: m::ActualLrpLifecycleResponse =
        server.call("/v1/actual_lrps/start.r1", &request).await;
    assert_eq!(reply.error, None);
}

#[tokio::test]
#[allow(deprecated)]
async fn the_r0_instance_stream_serves_desired_lrps_in_the_v0_shape() {
    let (_store, server) = server(serde_json::json!({})).await;
    let mut current = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/lrp_instances.r1",
        vec![],
        None,
    )
    .await;
    let mut legacy = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/lrp_instances",
        vec![],
        None,
    )
    .await;
    let run = lrp("web", 1).action.unwrap();
    let mut desired = lrp("web", 1);
    desired.start_timeout_ms = 60_000;
    desired.legacy_download_user = "vcap".into();
    desired.monitor = Some(m::Action {
        timeout_action: Some(Box::new(m::TimeoutAction {
            action: Some(Box::new(run.clone())),
            timeout_ms: 30_000,
            ..Default::default()
        })),
        ..Default::default()
    });
    desired.cached_dependencies = vec![m::CachedDependency {
        name: "lifecycle".into(),
        from: "http://blobs/lifecycle.tgz".into(),
        to: "/tmp/lifecycle".into(),
        cache_key: "lifecycle".into(),
        ..Default::default()
    }];
    desired.image_layers = vec![m::ImageLayer {
        name: "layer".into(),
        url: "http://blobs/layer.tgz".into(),
        destination_path: "/layer".into(),
        layer_type: m::image_layer::Type::Shared as i32,
        media_type: m::image_layer::MediaType::Tgz as i32,
        ..Default::default()
    }];
    let reply: m::DesiredLrpLifecycleResponse = server
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(desired),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    let decode = |e: &Sse| {
        assert_eq!(e.kind, "desired_lrp_created");
        m::DesiredLrpCreatedEvent::decode(e.data.as_slice())
            .unwrap()
            .desired_lrp
            .unwrap()
    };
    let now = decode(&current.take(1).await[0]);
    assert_eq!(now.image_layers.len(), 1);
    assert_eq!(now.cached_dependencies.len(), 1);
    assert_eq!(now.deprecated_start_timeout_s, 0);

    {
        let old = decode(&legacy.take(1).await[0]);
        assert!(old.image_layers.is_empty() && old.cached_dependencies.is_empty());
        assert_eq!(old.deprecated_start_timeout_s, 60);
        let timeout = old.monitor.unwrap().timeout_action.unwrap();
        assert_eq!(timeout.deprecated_timeout_ns, 30_000_000_000);
        // The shared layer and the cached dependency, in that order, download before setup.
        let setup = old.setup.unwrap().serial_action.unwrap();
        let downloads: Vec<String> = setup.actions[0]
            .parallel_action
            .as_ref()
            .unwrap()
            .actions
            .iter()
            .map(|a| a.download_action.as_ref().unwrap().artifact.clone())
            .collect();
        assert_eq!(downloads, ["layer", "lifecycle"]);
        assert_eq!(*old.action.as_ref().unwrap(), run);
    }
}

#[tokio::test]
async fn the_instance_stream_filters_by_cell() {
    let (_store, server) = server(serde_json::json!({})).await;
    let filter = m::EventsByCellId {
        cell_id: "cell-1".into(),
    }
    .encode_to_vec();
    let mut on_cell = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/lrp_instances.r1",
        filter,
        None,
    )
    .await;
    let mut all = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/lrp_instances.r1",
        vec![],
        None,
    )
    .await;
    let reply: m::DesiredLrpLifecycleResponse = server
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(lrp("web", 2)),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    start_lrp(&server, "web", 0, "cell-1").await;
    start_lrp(&server, "web", 1, "cell-2").await;
    let everything: Vec<String> = all.take(5).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        everything,
        [
            "desired_lrp_created",
            "actual_lrp_instance_created",
            "actual_lrp_instance_created",
            "actual_lrp_instance_changed",
            "actual_lrp_instance_changed"
        ]
    );
    let filtered = on_cell.take(2).await;
    let kinds: Vec<&str> = filtered.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["desired_lrp_created", "actual_lrp_instance_changed"],
        "desired events always pass; instances on cell-1 only"
    );
    let changed = m::ActualLrpInstanceChangedEvent::decode(filtered[1].data.as_slice()).unwrap();
    assert_eq!(changed.actual_lrp_instance_key.unwrap().cell_id, "cell-1");
    assert_eq!(changed.after.unwrap().state, "RUNNING");
    assert!(on_cell.next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn the_deprecated_group_stream_folds_instances() {
    let (_store, server) = server(serde_json::json!({})).await;
    let mut groups = open(&server, reqwest::Method::GET, "/v1/events.r1", vec![], None).await;
    let reply: m::DesiredLrpLifecycleResponse = server
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(lrp("web", 1)),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    start_lrp(&server, "web", 0, "cell-1").await;
    let kinds: Vec<String> = groups.take(3).await.into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            "desired_lrp_created",
            "actual_lrp_created",
            "actual_lrp_changed"
        ]
    );
    let garbage = server
        .client()
        .clone()
        .get(format!("{}/v1/events.r1", server.api))
        .body(vec![0xff, 0x01])
        .send()
        .await
        .unwrap();
    assert_eq!(
        garbage.status(),
        500,
        "upstream refuses a bad filter with a bare 500"
    );
}

#[tokio::test]
async fn resume_delivers_exactly_the_missed_events_or_asks_for_a_relist() {
    let (_store, server) = server(serde_json::json!({ "event_retention_count": 10 })).await;
    let mut first = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/tasks.r1",
        vec![],
        None,
    )
    .await;
    desire_task(&server, "a").await;
    desire_task(&server, "b").await;
    let seen = first.take(2).await;
    let last = seen[1].id.unwrap();
    drop(first);
    desire_task(&server, "c").await;
    desire_task(&server, "d").await;
    let mut resumed = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/tasks.r1",
        vec![],
        Some(last),
    )
    .await;
    desire_task(&server, "e").await;
    let got = resumed.take(3).await;
    let guids: Vec<String> = got
        .iter()
        .map(|e| {
            m::TaskCreatedEvent::decode(e.data.as_slice())
                .unwrap()
                .task
                .unwrap()
                .task_guid
        })
        .collect();
    assert_eq!(guids, ["c", "d", "e"]);
    assert_eq!(got[0].id, Some(last + 1));
    assert!(
        resumed.next(Duration::from_millis(300)).await.is_none(),
        "nothing twice"
    );

    for i in 0..20 {
        desire_task(&server, &format!("later-{i}")).await;
    }
    let mut too_old = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/tasks.r1",
        vec![],
        Some(1),
    )
    .await;
    let relist = too_old.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(relist.kind, "relist");
}

#[tokio::test]
async fn a_subscriber_that_reads_nothing_is_dropped_and_memory_stays_bounded() {
    let (_store, server) = server(serde_json::json!({ "event_subscriber_buffer": 16 })).await;
    let stalled = server
        .client()
        .clone()
        .post(format!("{}/v1/events/tasks.r1", server.api))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = server.rss_kib();
    // Large events, so the socket buffers fill and the subscriber's queue backs up.
    for i in 0..600 {
        let mut request = task_request(&format!("big-{i}"));
        request.task_definition.as_mut().unwrap().annotation = "x".repeat(10_000);
        let reply: m::TaskLifecycleResponse = server.call("/v1/tasks/desire.r2", &request).await;
        assert_eq!(reply.error, None);
    }
    let metrics = server.metrics().await;
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bbs_event_subscribers_dropped_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        dropped >= 1.0,
        "the stalled subscriber was dropped:\n{metrics}"
    );
    assert!(metrics.contains("bbs_event_subscribers 0"), "{metrics}");
    let after = server.rss_kib();
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    drop(stalled);
}

/// 100 subscribers each receive every event of a 10,000-change run, in order. A check of the
/// hub's fan-out at scale, the longest test of the suite (a minute on the test build): it runs
/// in the plain pass only, since every other event test already runs over mutual TLS in the
/// TLS pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_subscribers_receive_every_event_of_ten_thousand_changes() {
    if support::tls().is_some() {
        eprintln!("the hub's fan-out at scale runs in the plain pass only (see its doc comment)");
        return;
    }
    const SUBSCRIBERS: usize = 100;
    const TASKS: usize = 2_500; // four changes each: desire, start, complete, resolving
    let (_store, server) = server(serde_json::json!({ "event_subscriber_buffer": 20_000 })).await;
    let server = std::sync::Arc::new(server);
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        readers.push(
            open(
                &server,
                reqwest::Method::POST,
                "/v1/events/tasks.r1",
                vec![],
                None,
            )
            .await,
        );
    }
    let counting = readers.into_iter().map(|mut reader| {
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(TASKS * 4);
            while ids.len() < TASKS * 4 {
                match reader.next(Duration::from_secs(60)).await {
                    Some(e) => ids.push(e.id.unwrap()),
                    None => break,
                }
            }
            ids
        })
    });
    let counting: Vec<_> = counting.collect();
    let writers = (0..8).map(|w| {
        let server = server.clone();
        tokio::spawn(async move {
            for i in (w..TASKS).step_by(8) {
                let guid = format!("t{i}");
                desire_task(&server, &guid).await;
                assert!(start_task(&server, &guid).await.should_start);
                let done: m::TaskLifecycleResponse = server
                    .call(
                        "/v1/tasks/complete",
                        &m::CompleteTaskRequest {
                            task_guid: guid.clone(),
                            cell_id: "cell-1".into(),
                            ..Default::default()
                        },
                    )
                    .await;
                assert_eq!(done.error, None);
                let resolving: m::TaskLifecycleResponse = server
                    .call(
                        "/v1/tasks/resolving",
                        &m::TaskGuidRequest { task_guid: guid },
                    )
                    .await;
                assert_eq!(resolving.error, None);
            }
        })
    });
    for writer in writers {
        writer.await.unwrap();
    }
    for subscriber in counting {
        let ids = subscriber.await.unwrap();
        assert_eq!(ids.len(), TASKS * 4, "every event");
        assert!(
            ids.windows(2).all(|w| w[0] + 1 == w[1]),
            "in order, none missing or repeated"
        );
    }
}

// ---- upstream's event sequences, on every backend ------------------------------------------
//
// Each change's events as upstream's event calculator emits them (bbs-reference §5.4),
// written `kind shape` so that a list reads like the stream. docs/events.md lists the rules.

/// A server on a fresh store of `backend`.
async fn on(backend: bbs_store::Backend) -> Option<(bbs_store::testing::TestStore, Server)> {
    let store = support::test_store(backend).await?;
    let server = Server::start(config_json(&store.config, serde_json::json!({}))).await;
    Some((store, server))
}

fn presence_name(presence: i32) -> &'static str {
    match m::actual_lrp::Presence::try_from(presence) {
        Ok(m::actual_lrp::Presence::Evacuating) => "EVACUATING",
        Ok(m::actual_lrp::Presence::Suspect) => "SUSPECT",
        _ => "ORDINARY",
    }
}

fn row(lrp: &m::ActualLrp) -> String {
    let guid = lrp
        .actual_lrp_instance_key
        .as_ref()
        .map(|k| k.instance_guid.as_str())
        .unwrap_or_default();
    let shape = format!("{}/{}", presence_name(lrp.presence), lrp.state);
    if guid.is_empty() {
        shape
    } else {
        format!("{shape}({guid})")
    }
}

fn group(g: &Option<m::ActualLrpGroup>) -> String {
    let g = g.as_ref().expect("a group");
    let slot = |l: &Option<m::ActualLrp>| l.as_ref().map_or("-".to_owned(), row);
    format!("{{{},{}}}", slot(&g.instance), slot(&g.evacuating))
}

fn info(i: &Option<m::ActualLrpInfo>) -> String {
    let i = i.as_ref().expect("info");
    format!("{}/{}", presence_name(i.presence), i.state)
}

/// One event as `kind shape`, with `[trace]` where the payload carries a trace id.
fn describe(e: &Sse) -> String {
    let data = e.data.as_slice();
    let traced = |text: String, trace: &str| {
        if trace.is_empty() {
            text
        } else {
            format!("{text} [{trace}]")
        }
    };
    match e.kind.as_str() {
        "actual_lrp_instance_created" => {
            let ev = m::ActualLrpInstanceCreatedEvent::decode(data).unwrap();
            traced(
                format!("instance_created {}", row(ev.actual_lrp.as_ref().unwrap())),
                &ev.trace_id,
            )
        }
        "actual_lrp_instance_removed" => {
            let ev = m::ActualLrpInstanceRemovedEvent::decode(data).unwrap();
            traced(
                format!("instance_removed {}", row(ev.actual_lrp.as_ref().unwrap())),
                &ev.trace_id,
            )
        }
        "actual_lrp_instance_changed" => {
            let ev = m::ActualLrpInstanceChangedEvent::decode(data).unwrap();
            traced(
                format!(
                    "instance_changed({}) {} -> {}",
                    ev.actual_lrp_instance_key.unwrap().instance_guid,
                    info(&ev.before),
                    info(&ev.after)
                ),
                &ev.trace_id,
            )
        }
        "actual_lrp_crashed" => {
            let ev = m::ActualLrpCrashedEvent::decode(data).unwrap();
            format!(
                "crashed({}) count {} {}",
                ev.actual_lrp_instance_key.unwrap().instance_guid,
                ev.crash_count,
                ev.crash_reason
            )
        }
        "actual_lrp_created" => {
            let ev = m::ActualLrpCreatedEvent::decode(data).unwrap();
            format!("group_created {}", group(&ev.actual_lrp_group))
        }
        "actual_lrp_removed" => {
            let ev = m::ActualLrpRemovedEvent::decode(data).unwrap();
            format!("group_removed {}", group(&ev.actual_lrp_group))
        }
        "actual_lrp_changed" => {
            let ev = m::ActualLrpChangedEvent::decode(data).unwrap();
            format!(
                "group_changed {} -> {}",
                group(&ev.before),
                group(&ev.after)
            )
        }
        "desired_lrp_created" => {
            let ev = m::DesiredLrpCreatedEvent::decode(data).unwrap();
            traced("desired_lrp_created".into(), &ev.trace_id)
        }
        "desired_lrp_changed" => {
            let ev = m::DesiredLrpChangedEvent::decode(data).unwrap();
            traced("desired_lrp_changed".into(), &ev.trace_id)
        }
        "desired_lrp_removed" => {
            let ev = m::DesiredLrpRemovedEvent::decode(data).unwrap();
            traced("desired_lrp_removed".into(), &ev.trace_id)
        }
        other => other.to_owned(),
    }
}

/// The events a change produced: they are all published before its request is answered, so
/// they are the ones that arrive before the stream goes quiet.
async fn change(reader: &mut SseReader) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(e) = reader.next(Duration::from_millis(400)).await {
        out.push(describe(&e));
    }
    out
}

/// The instance stream and both deprecated group routes.
struct Streams {
    instances: SseReader,
    groups: SseReader,
    groups_r0: SseReader,
}

impl Streams {
    async fn open(server: &Server) -> Streams {
        let post = reqwest::Method::POST;
        Streams {
            instances: open(server, post, "/v1/events/lrp_instances.r1", vec![], None).await,
            groups: open(server, reqwest::Method::GET, "/v1/events.r1", vec![], None).await,
            groups_r0: open(server, reqwest::Method::GET, "/v1/events", vec![], None).await,
        }
    }

    /// One change as (instance stream, group stream); both group routes must agree.
    async fn change(&mut self) -> (Vec<String>, Vec<String>) {
        let instances = change(&mut self.instances).await;
        let groups = change(&mut self.groups).await;
        let groups_r0 = change(&mut self.groups_r0).await;
        assert_eq!(groups, groups_r0, "the r0 group stream reports the same");
        (instances, groups)
    }
}

fn lrp_key(index: i32) -> m::ActualLrpKey {
    m::ActualLrpKey {
        process_guid: "web".into(),
        index,
        domain: "cf-apps".into(),
    }
}

fn instance_key(guid: &str, cell: &str) -> m::ActualLrpInstanceKey {
    m::ActualLrpInstanceKey {
        instance_guid: guid.into(),
        cell_id: cell.into(),
    }
}

async fn desire_web(server: &Server, instances: i32) {
    let reply: m::DesiredLrpLifecycleResponse = server
        .call(
            "/v1/desired_lrp/desire.r2",
            &m::DesireLrpRequest {
                desired_lrp: Some(lrp("web", instances)),
            },
        )
        .await;
    assert_eq!(reply.error, None);
}

async fn start_as(server: &Server, guid: &str, cell: &str) {
    let reply: m::ActualLrpLifecycleResponse = server
        .call(
            "/v1/actual_lrps/start.r1",
            &m::StartActualLrpRequest {
                actual_lrp_key: Some(lrp_key(0)),
                actual_lrp_instance_key: Some(instance_key(guid, cell)),
                actual_lrp_net_info: Some(m::ActualLrpNetInfo {
                    address: format!("{cell}.addr"),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(reply.error, None);
}

async fn evacuate_running(server: &Server, guid: &str, cell: &str) {
    let reply: m::EvacuationResponse = server
        .call(
            "/v1/actual_lrps/evacuate_running.r1",
            &m::EvacuateRunningActualLrpRequest {
                actual_lrp_key: Some(lrp_key(0)),
                actual_lrp_instance_key: Some(instance_key(guid, cell)),
                actual_lrp_net_info: Some(m::ActualLrpNetInfo {
                    address: format!("{cell}.addr"),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(reply.error, None);
    assert!(reply.keep_container);
}

/// One web instance RUNNING as `i0` on `draining`, with the three streams open after it.
async fn running_web(server: &Server) -> Streams {
    desire_web(server, 1).await;
    start_as(server, "i0", "draining").await;
    Streams::open(server).await
}

async fn evacuation_is_reported_as_upstream_reports_it(backend: bbs_store::Backend) {
    let Some((_store, server)) = on(backend).await else {
        return;
    };
    let mut streams = running_web(&server).await;
    evacuate_running(&server, "i0", "draining").await;
    assert_eq!(
        streams.change().await,
        (
            vec![
                "instance_changed(i0) ORDINARY/RUNNING -> EVACUATING/RUNNING".to_owned(),
                "instance_created ORDINARY/UNCLAIMED".to_owned(),
            ],
            vec![
                "group_created {-,EVACUATING/RUNNING(i0)}".to_owned(),
                "group_changed {ORDINARY/RUNNING(i0),-} -> {ORDINARY/UNCLAIMED,-}".to_owned(),
            ]
        )
    );
    // The replacement is claimed and starts elsewhere: the evacuating copy goes with it.
    let claimed: m::ActualLrpLifecycleResponse = server
        .call(
            "/v1/actual_lrps/claim",
            &m::ClaimActualLrpRequest {
                process_guid: "web".into(),
                index: 0,
                actual_lrp_instance_key: Some(instance_key("i1", "fresh")),
            },
        )
        .await;
    assert_eq!(claimed.error, None);
    assert_eq!(
        streams.change().await,
        (
            vec!["instance_changed(i1) ORDINARY/UNCLAIMED -> ORDINARY/CLAIMED".to_owned()],
            vec!["group_changed {ORDINARY/UNCLAIMED,-} -> {ORDINARY/CLAIMED(i1),-}".to_owned()]
        )
    );
    start_as(&server, "i1", "fresh").await;
    assert_eq!(
        streams.change().await,
        (
            vec![
                "instance_changed(i1) ORDINARY/CLAIMED -> ORDINARY/RUNNING".to_owned(),
                "instance_removed EVACUATING/RUNNING(i0)".to_owned(),
            ],
            vec![
                "group_changed {ORDINARY/CLAIMED(i1),-} -> {ORDINARY/RUNNING(i1),-}".to_owned(),
                "group_removed {-,EVACUATING/RUNNING(i0)}".to_owned(),
            ]
        )
    );
}

async fn removing_an_evacuating_instance_is_one_removal(backend: bbs_store::Backend) {
    let Some((_store, server)) = on(backend).await else {
        return;
    };
    let mut streams = running_web(&server).await;
    evacuate_running(&server, "i0", "draining").await;
    streams.change().await;
    let reply: m::RemoveEvacuatingActualLrpResponse = server
        .call(
            "/v1/actual_lrps/remove_evacuating",
            &m::RemoveEvacuatingActualLrpRequest {
                actual_lrp_key: Some(lrp_key(0)),
                actual_lrp_instance_key: Some(instance_key("i0", "draining")),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    assert_eq!(
        streams.change().await,
        (
            vec!["instance_removed EVACUATING/RUNNING(i0)".to_owned()],
            vec!["group_removed {-,EVACUATING/RUNNING(i0)}".to_owned()]
        )
    );
}

async fn an_evacuated_crash_emits_no_crash_event(backend: bbs_store::Backend) {
    let Some((_store, server)) = on(backend).await else {
        return;
    };
    let mut streams = running_web(&server).await;
    let reply: m::EvacuationResponse = server
        .call(
            "/v1/actual_lrps/evacuate_crashed",
            &m::EvacuateCrashedActualLrpRequest {
                actual_lrp_key: Some(lrp_key(0)),
                actual_lrp_instance_key: Some(instance_key("i0", "draining")),
                error_message: "oom".into(),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    assert_eq!(
        streams.change().await,
        (
            vec![
                "instance_created ORDINARY/UNCLAIMED".to_owned(),
                "instance_removed ORDINARY/RUNNING(i0)".to_owned(),
            ],
            vec!["group_changed {ORDINARY/RUNNING(i0),-} -> {ORDINARY/UNCLAIMED,-}".to_owned()]
        )
    );
}

async fn crash(server: &Server) {
    let reply: m::ActualLrpLifecycleResponse = server
        .call(
            "/v1/actual_lrps/crash",
            &m::CrashActualLrpRequest {
                actual_lrp_key: Some(lrp_key(0)),
                actual_lrp_instance_key: Some(instance_key("i0", "draining")),
                error_message: "oom".into(),
            },
        )
        .await;
    assert_eq!(reply.error, None);
}

async fn crashes_restart_then_stay_crashed(backend: bbs_store::Backend) {
    let Some((_store, server)) = on(backend).await else {
        return;
    };
    let mut streams = running_web(&server).await;
    crash(&server).await;
    assert_eq!(
        streams.change().await,
        (
            vec![
                "crashed(i0) count 1 oom".to_owned(),
                "instance_created ORDINARY/UNCLAIMED".to_owned(),
                "instance_removed ORDINARY/RUNNING(i0)".to_owned(),
            ],
            vec![
                "crashed(i0) count 1 oom".to_owned(),
                "group_changed {ORDINARY/RUNNING(i0),-} -> {ORDINARY/UNCLAIMED,-}".to_owned(),
            ]
        )
    );
    start_as(&server, "i0", "draining").await;
    streams.change().await;
    crash(&server).await;
    streams.change().await;
    start_as(&server, "i0", "draining").await;
    streams.change().await;
    crash(&server).await;
    // The third crash leaves the instance CRASHED: the same row, changed.
    assert_eq!(
        streams.change().await,
        (
            vec![
                "crashed(i0) count 3 oom".to_owned(),
                "instance_changed(i0) ORDINARY/RUNNING -> ORDINARY/CRASHED".to_owned(),
            ],
            vec![
                "crashed(i0) count 3 oom".to_owned(),
                "group_changed {ORDINARY/RUNNING(i0),-} -> {ORDINARY/CRASHED,-}".to_owned(),
            ]
        )
    );
}

#[allow(deprecated)] // metrics_guid is deprecated upstream, and still sent
async fn desired_events_carry_the_stored_metrics_guid(backend: bbs_store::Backend) {
    let Some((_store, server)) = on(backend).await else {
        return;
    };
    let mut instances = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/lrp_instances.r1",
        vec![],
        None,
    )
    .await;
    desire_web(&server, 1).await;
    let created = instances.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(created.kind, "desired_lrp_created");
    let event = m::DesiredLrpCreatedEvent::decode(created.data.as_slice()).unwrap();
    assert_eq!(event.desired_lrp.unwrap().metrics_guid, "", "as stored");
    let read: m::DesiredLrpResponse = server
        .call(
            "/v1/desired_lrps/get_by_process_guid.r2",
            &m::DesiredLrpByProcessGuidRequest {
                process_guid: "web".into(),
            },
        )
        .await;
    assert_eq!(
        read.desired_lrp.unwrap().metrics_guid,
        "s",
        "reads fill it from source_id"
    );
}

/// POSTs `request` with upstream's trace header.
async fn traced_call<Req: Message>(server: &Server, path: &str, request: &Req, trace: &str) {
    let response = server
        .client()
        .clone()
        .post(format!("{}{path}", server.api))
        .header("X-Vcap-Request-Id", trace)
        .body(request.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reply = support::ErrorOnly::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(reply.error, None, "{path}");
}

async fn events_carry_the_trace_id_where_upstream_does(backend: bbs_store::Backend) {
    let Some((_store, server)) = on(backend).await else {
        return;
    };
    let mut instances = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/lrp_instances.r1",
        vec![],
        None,
    )
    .await;
    let desire = m::DesireLrpRequest {
        desired_lrp: Some(lrp("web", 1)),
    };
    traced_call(&server, "/v1/desired_lrp/desire.r2", &desire, "t-desire").await;
    assert_eq!(
        change(&mut instances).await,
        [
            "desired_lrp_created [t-desire]",
            "instance_created ORDINARY/UNCLAIMED [t-desire]"
        ]
    );
    // Upstream's lifecycle routes do not pass the request id on.
    let claim = m::ClaimActualLrpRequest {
        process_guid: "web".into(),
        index: 0,
        actual_lrp_instance_key: Some(instance_key("i0", "c1")),
    };
    traced_call(&server, "/v1/actual_lrps/claim", &claim, "t-claim").await;
    assert_eq!(
        change(&mut instances).await,
        ["instance_changed(i0) ORDINARY/UNCLAIMED -> ORDINARY/CLAIMED"]
    );
    let update = m::UpdateDesiredLrpRequest {
        process_guid: "web".into(),
        update: Some(m::DesiredLrpUpdate {
            optional_instances: Some(m::desired_lrp_update::OptionalInstances::Instances(2)),
            ..Default::default()
        }),
    };
    traced_call(&server, "/v1/desired_lrp/update", &update, "t-update").await;
    let mut got = change(&mut instances).await;
    got.sort();
    assert_eq!(
        got,
        [
            "desired_lrp_changed [t-update]",
            "instance_created ORDINARY/UNCLAIMED [t-update]"
        ]
    );
    let retire = m::RetireActualLrpRequest {
        actual_lrp_key: Some(lrp_key(1)),
    };
    traced_call(&server, "/v1/actual_lrps/retire", &retire, "t-retire").await;
    assert_eq!(
        change(&mut instances).await,
        ["instance_removed ORDINARY/UNCLAIMED [t-retire]"]
    );
    let remove = m::RemoveDesiredLrpRequest {
        process_guid: "web".into(),
    };
    traced_call(&server, "/v1/desired_lrp/remove", &remove, "t-remove").await;
    assert_eq!(
        change(&mut instances).await,
        ["desired_lrp_removed [t-remove]"]
    );
}

async fn removing_a_desired_lrp_removes_the_ordinary_group_only(backend: bbs_store::Backend) {
    let Some((_store, server)) = on(backend).await else {
        return;
    };
    let mut streams = running_web(&server).await;
    evacuate_running(&server, "i0", "draining").await;
    streams.change().await;
    let reply: m::DesiredLrpLifecycleResponse = server
        .call(
            "/v1/desired_lrp/remove",
            &m::RemoveDesiredLrpRequest {
                process_guid: "web".into(),
            },
        )
        .await;
    assert_eq!(reply.error, None);
    assert_eq!(
        streams.change().await,
        (
            vec![
                "desired_lrp_removed".to_owned(),
                "instance_removed ORDINARY/UNCLAIMED".to_owned(),
            ],
            vec![
                "desired_lrp_removed".to_owned(),
                "group_removed {ORDINARY/UNCLAIMED,-}".to_owned(),
            ]
        )
    );
}

async fn event_streams_send_upstreams_headers(backend: bbs_store::Backend) {
    let Some((_store, server)) = on(backend).await else {
        return;
    };
    let response = server
        .client()
        .clone()
        .post(format!("{}/v1/events/lrp_instances.r1", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(headers["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(
        headers["cache-control"],
        "no-cache, no-store, must-revalidate"
    );
    assert_eq!(headers["transfer-encoding"], "chunked");
    assert!(headers.get("content-length").is_none());
    assert_eq!(headers["connection"], "keep-alive");
    // Only event streams: other responses carry no connection header, as upstream's.
    let ping = server.post_raw("/v1/ping", vec![]).await;
    assert!(ping.headers().get("connection").is_none());
}

async fn sigterm_closes_streams_and_idle_connections_at_once(backend: bbs_store::Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let config = config_json(&store.config, serde_json::json!({}));
    let mut server = Server::start(config.clone()).await;
    let mut stream = open(
        &server,
        reqwest::Method::POST,
        "/v1/events/lrp_instances.r1",
        vec![],
        None,
    )
    .await;
    // An idle keep-alive connection, as Go clients hold for 90 s.
    let idle = server.client().clone();
    let ping = idle
        .post(format!("{}/v1/ping", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), 200);
    let asked = std::time::Instant::now();
    let code = server.stop();
    let took = asked.elapsed();
    assert_eq!(code, Some(0), "{}", server.log());
    // The HTTP server's graceful stop used to wait out its 10 s timeout here.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        stream.next(Duration::from_secs(1)).await.is_none(),
        "the stream ended"
    );
    // A restart on the same ports right away.
    let again = Server::start(config).await;
    let ping = again.post_raw("/v1/ping", vec![]).await;
    assert_eq!(ping.status(), 200);
    let ping = m::PingResponse::decode(ping.bytes().await.unwrap()).unwrap();
    assert!(ping.available);
}

on_every_backend!(
    evacuation_is_reported_as_upstream_reports_it,
    removing_an_evacuating_instance_is_one_removal,
    an_evacuated_crash_emits_no_crash_event,
    crashes_restart_then_stay_crashed,
    desired_events_carry_the_stored_metrics_guid,
    events_carry_the_trace_id_where_upstream_does,
    removing_a_desired_lrp_removes_the_ordinary_group_only,
    event_streams_send_upstreams_headers,
    sigterm_closes_streams_and_idle_connections_at_once,
);
