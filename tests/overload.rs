//! Overload (docs/reliability.md): past `max_pending_requests` a request is answered 503 at
//! once, with no body, as upstream answers before its migrations finish and Go clients retry;
//! a client that sends its body slowly holds only its own connection; idle connections cost
//! the server a bounded amount of memory and leave the API answering.

#[macro_use]
mod support;

use std::time::Duration;

use bbs_models as m;
use bbs_store::Backend;
use support::proxy::{Mode, StoreProxy};
use support::{config_json, fixtures, test_store, ErrorOnly, Server};

async fn desire(server: &Server, guid: &str) -> Option<m::Error> {
    let reply: ErrorOnly = server
        .call("/v1/tasks/desire.r2", &fixtures::desire_task(guid))
        .await;
    reply.error
}

async fn metric(server: &Server, name: &str) -> f64 {
    server
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Three writes wait on a silent store and hold the three admissions; the fourth request,
/// a write or a read, is refused at once and changes nothing; once the store answers, the
/// three succeed and requests are admitted again. SQLite cannot be made silent from outside and is not run here.
async fn requests_past_the_bound_are_refused_at_once(backend: Backend) {
    let Some(store) = test_store(backend).await else {
        return;
    };
    let (proxy, through_proxy) = StoreProxy::in_front_of(&store.config, backend).await;
    let server = Server::start(config_json(
        &through_proxy,
        serde_json::json!({
            "max_pending_requests": 3,
            "db_write_timeout": "10s",
            "lock_ttl": "120s",
            "lock_retry_interval": "60s",
        }),
    ))
    .await;
    assert_eq!(desire(&server, "before").await, None);

    proxy.set(Mode::Hang);
    let hung =
        futures::future::join_all(["hung-1", "hung-2", "hung-3"].map(|guid| desire(&server, guid)));
    let refused = async {
        let admitted = tokio::time::timeout(Duration::from_secs(8), async {
            while metric(&server, "bbs_requests_pending").await < 3.0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(admitted.is_ok(), "the three writes were never admitted");
        for (path, body) in [
            ("/v1/tasks/desire.r2", fixtures::desire_task("refused")),
            ("/v1/tasks/list.r3", Default::default()),
        ] {
            let body = prost::Message::encode_to_vec(&body);
            let response = server.post_raw(path, body).await;
            assert_eq!(response.status(), 503, "{path}");
            assert_eq!(response.headers().get("content-type"), None, "{path}");
            assert!(response.bytes().await.unwrap().is_empty(), "{path}");
        }
        assert!(metric(&server, "bbs_requests_shed_total").await >= 2.0);
        proxy.set(Mode::Pass);
    };
    let (hung, ()) = tokio::join!(hung, refused);
    // The admitted writes were only delayed: once the store answers, they succeed.
    assert_eq!(hung, [None, None, None]);
    assert_eq!(desire(&server, "after").await, None);
    assert_eq!(metric(&server, "bbs_requests_pending").await, 0.0);
    let listed: m::TasksResponse = server
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    assert!(listed.tasks.iter().all(|t| t.task_guid != "refused"));
}

/// With room for one request at a time, a client sending its body a byte at a time does not
/// hold that room: other clients are answered meanwhile, and its own request then succeeds.
/// The store plays no part here, so SQLite alone runs it.
async fn a_slow_body_holds_only_its_connection(backend: Backend) {
    let Some(store) = test_store(backend).await else {
        return;
    };
    let server = Server::start(config_json(
        &store.config,
        serde_json::json!({ "max_pending_requests": 1 }),
    ))
    .await;
    let body = prost::Message::encode_to_vec(&fixtures::desire_task("slow"));
    let (sent, chunks) = futures::channel::mpsc::unbounded::<Result<Vec<u8>, std::io::Error>>();
    let slow = server
        .client()
        .post(format!("{}/v1/tasks/desire.r2", server.api))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Length", body.len())
        .body(reqwest::Body::wrap_stream(chunks))
        .send();
    let others = async {
        sent.unbounded_send(Ok(body[..1].to_vec())).unwrap();
        for i in 0..5 {
            assert_eq!(desire(&server, &format!("meanwhile-{i}")).await, None);
        }
        for byte in &body[1..] {
            sent.unbounded_send(Ok(vec![*byte])).unwrap();
        }
        drop(sent);
    };
    let (slow, ()) = tokio::join!(slow, others);
    let slow = slow.expect("the slow request was answered");
    assert_eq!(slow.status(), 200);
    let reply: ErrorOnly = prost::Message::decode(slow.bytes().await.unwrap()).unwrap();
    assert_eq!(reply.error, None);
}

/// Idle connections (`OVERLOAD_IDLE`, 2,000 unless set; docs/reliability.md has 10,000):
/// the API keeps answering while they are open, and each costs the server a bounded amount
/// of memory, well under its 64 KiB of socket buffers. The store plays no part here, so
/// SQLite alone runs it.
async fn idle_connections_cost_little(backend: Backend) {
    let Some(store) = test_store(backend).await else {
        return;
    };
    let count: usize = std::env::var("OVERLOAD_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let server = Server::start(config_json(&store.config, serde_json::json!({}))).await;
    assert_eq!(desire(&server, "before").await, None);
    let before = server.rss_kib();
    let address = server
        .api
        .rsplit("//")
        .next()
        .expect("an API address")
        .to_owned();
    let mut idle = Vec::with_capacity(count);
    for _ in 0..count {
        idle.push(
            tokio::net::TcpStream::connect(&address)
                .await
                .expect("an idle connection"),
        );
    }
    assert_eq!(desire(&server, "while-idle").await, None);
    let during = server.rss_kib();
    let per_connection = during.saturating_sub(before) as f64 / count as f64;
    eprintln!(
        "{count} idle connections: server resident {before} KiB before, {during} KiB with them \
         open ({per_connection:.1} KiB each)"
    );
    assert!(
        per_connection < 32.0,
        "{per_connection:.1} KiB per idle connection"
    );
    drop(idle);
    assert_eq!(desire(&server, "after").await, None);
}

on_backends!([sqlite] [a_slow_body_holds_only_its_connection, idle_connections_cost_little]);
on_backends!([mysql, postgres, etcd][requests_past_the_bound_are_refused_at_once]);
