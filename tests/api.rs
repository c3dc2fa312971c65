//! End-to-end API tests: the real binary, real stores, upstream's wire conventions.

mod support;

use std::time::Duration;

use bbs_models::{
    error::Type, DomainsResponse, PingResponse, UpsertDomainRequest, UpsertDomainResponse,
};
use prost::Message;
use support::{config_json, free_port, ErrorOnly, Server};

/// The domain round trip, then a restart, on one backend.
async fn domains_survive_a_restart(backend: bbs_store::Backend) {
    let Some(store) = support::test_store(backend).await else {
        return;
    };
    let config = config_json(&store.config, serde_json::json!({}));
    let mut server = Server::start(config.clone()).await;

    let ping: PingResponse = server.call("/v1/ping", &()).await;
    assert!(ping.available);

    for (domain, ttl) in [("cf-apps", 0), ("cf-tasks", 3600), ("cf-apps", 0)] {
        let reply: UpsertDomainResponse = server
            .call(
                "/v1/domains/upsert",
                &UpsertDomainRequest {
                    domain: domain.into(),
                    ttl,
                },
            )
            .await;
        assert_eq!(reply.error, None, "upsert {domain}");
    }
    let listed: DomainsResponse = server.call("/v1/domains/list", &()).await;
    assert_eq!(listed.error, None);
    assert_eq!(listed.domains, ["cf-apps", "cf-tasks"]);

    assert_eq!(server.stop(), Some(0), "clean exit; log:\n{}", server.log());
    let server = Server::start(config).await;
    let listed: DomainsResponse = server.call("/v1/domains/list", &()).await;
    assert_eq!(listed.domains, ["cf-apps", "cf-tasks"], "after restart");
}

mod round_trip {
    use bbs_store::Backend;

    #[tokio::test]
    async fn sqlite() {
        super::domains_survive_a_restart(Backend::Sqlite).await;
    }

    #[tokio::test]
    async fn mysql() {
        super::domains_survive_a_restart(Backend::Mysql).await;
    }

    #[tokio::test]
    async fn postgres() {
        super::domains_survive_a_restart(Backend::Postgres).await;
    }

    #[tokio::test]
    async fn etcd() {
        super::domains_survive_a_restart(Backend::Etcd).await;
    }
}

async fn sqlite_server() -> (bbs_store::testing::TestStore, Server) {
    let store = bbs_store::testing::TestStore::new(bbs_store::Backend::Sqlite).await;
    let server = Server::start(config_json(&store.config, serde_json::json!({}))).await;
    (store, server)
}

#[tokio::test]
async fn expired_domains_are_not_listed() {
    let (_store, server) = sqlite_server().await;
    let _: UpsertDomainResponse = server
        .call(
            "/v1/domains/upsert",
            &UpsertDomainRequest {
                domain: "short-lived".into(),
                ttl: 1,
            },
        )
        .await;
    let listed: DomainsResponse = server.call("/v1/domains/list", &()).await;
    assert_eq!(listed.domains, ["short-lived"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let listed: DomainsResponse = server.call("/v1/domains/list", &()).await;
    assert!(listed.domains.is_empty(), "{:?}", listed.domains);
}

#[tokio::test]
async fn an_empty_domain_is_refused_and_nothing_is_stored() {
    let (store, server) = sqlite_server().await;
    let reply: UpsertDomainResponse = server
        .call("/v1/domains/upsert", &UpsertDomainRequest::default())
        .await;
    let error = reply.error.expect("an error");
    assert_eq!(error.kind(), Type::InvalidRequest);
    assert_eq!(error.message, "Invalid field: domain");
    assert!(store.store.domains().await.unwrap().is_empty());
}

/// Routes with no request message ignore the body, as upstream's do.
const NO_REQUEST: &[&str] = &["Ping", "Domains", "Cells"];

#[tokio::test]
async fn a_malformed_body_is_invalid_request_on_every_route() {
    let (_store, server) = sqlite_server().await;
    let garbage = vec![0xff, 0xff, 0xff, 0x01];
    for route in bbs::http::routes::ROUTES {
        let response = if route.method == "GET" {
            server
                .client()
                .clone()
                .get(format!("{}{}", server.api, route.path))
                .body(garbage.clone())
                .send()
                .await
                .unwrap()
        } else {
            server.post_raw(route.path, garbage.clone()).await
        };
        let status = response.status().as_u16();
        if route.path.starts_with("/v1/events/tasks") {
            assert_eq!(
                status, 200,
                "{}: the task streams ignore their body",
                route.name
            );
            continue;
        }
        if route.path.starts_with("/v1/events") {
            assert_eq!(
                status, 500,
                "{}: event streams refuse a bad body with 500",
                route.name
            );
            continue;
        }
        assert_eq!(status, 200, "{}", route.name);
        let body = response.bytes().await.unwrap();
        if route.name == "Ping" {
            assert!(PingResponse::decode(body).unwrap().available);
            continue;
        }
        let error = ErrorOnly::decode(body).expect("protobuf").error;
        if NO_REQUEST.contains(&route.name) {
            assert!(
                error.is_none() || error.as_ref().unwrap().kind() != Type::InvalidRequest,
                "{} has no request message",
                route.name
            );
        } else {
            let error = error.unwrap_or_else(|| panic!("{} gave no error", route.name));
            assert_eq!(error.kind(), Type::InvalidRequest, "{}", route.name);
            assert_eq!(
                error.message, "the request received is invalid",
                "{}",
                route.name
            );
        }
    }
}

#[tokio::test]
async fn unknown_paths_are_plain_404_and_wrong_methods_405() {
    let (_store, server) = sqlite_server().await;
    let response = server.post_raw("/v1/no_such_route", vec![]).await;
    assert_eq!(response.status(), 404);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    // Removed upstream routes 404 too, so old clients fall back as they do against Go.
    assert_eq!(
        server
            .post_raw("/v1/desired_lrps/list", vec![])
            .await
            .status(),
        404
    );
    let response = server
        .client()
        .clone()
        .get(format!("{}/v1/ping", server.api))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
}

/// Ping reads no body, so a body past the limit changes nothing: still upstream's
/// PingResponse, announced by Content-Length or streamed.
#[tokio::test]
async fn a_ping_ignores_an_oversized_body() {
    let store = bbs_store::testing::TestStore::new(bbs_store::Backend::Sqlite).await;
    let config = config_json(
        &store.config,
        serde_json::json!({ "max_request_body_bytes": 1024 * 1024 }),
    );
    let server = Server::start(config).await;
    let streamed = || {
        reqwest::Body::wrap_stream(futures::stream::iter(
            (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 512 * 1024]))),
        ))
    };
    for body in [reqwest::Body::from(vec![7u8; 2 * 1024 * 1024]), streamed()] {
        let response = server
            .client()
            .post(format!("{}/v1/ping", server.api))
            .body(body)
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status(), 200);
        let ping = PingResponse::decode(response.bytes().await.unwrap()).expect("a ping");
        assert!(ping.available);
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused_without_memory_growth() {
    let store = bbs_store::testing::TestStore::new(bbs_store::Backend::Sqlite).await;
    let config = config_json(
        &store.config,
        serde_json::json!({ "max_request_body_bytes": 1024 * 1024 }),
    );
    let server = Server::start(config).await;
    let before = server.rss_kib();
    let client = server.client().clone();
    let refused = |body: bytes::Bytes| {
        let error = ErrorOnly::decode(body)
            .expect("a protobuf answer")
            .error
            .expect("an error");
        assert_eq!(error.kind(), Type::InvalidRequest);
        assert!(
            error.message.contains("max_request_body_bytes"),
            "{}",
            error.message
        );
    };
    for _ in 0..10 {
        // Announced by Content-Length: refused before the body is read. Over TLS the
        // client may still be writing when the connection closes, and then sees that
        // instead of the answer.
        let response = client
            .post(format!("{}/v1/domains/upsert", server.api))
            .body(vec![7u8; 32 * 1024 * 1024])
            .send()
            .await;
        match response {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                refused(response.bytes().await.unwrap());
            }
            Err(e) => assert!(support::tls().is_some(), "{e}"),
        }
        // Streamed with no length: refused once the limit is passed.
        let chunks = futures::stream::iter(
            (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 512 * 1024]))),
        );
        let response = client
            .post(format!("{}/v1/domains/upsert", server.api))
            .body(reqwest::Body::wrap_stream(chunks))
            .send()
            .await;
        if let Ok(response) = response {
            assert_eq!(response.status(), 200);
            refused(response.bytes().await.unwrap());
        }
    }
    let after = server.rss_kib();
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB"
    );
    let ping: PingResponse = server.call("/v1/ping", &()).await;
    assert!(ping.available, "still serving");
    assert!(
        store.store.domains().await.unwrap().is_empty(),
        "nothing stored"
    );
}

/// A missing table is upstream's Unrecoverable: the request gets the error, then the server
/// shuts down (its supervisor restarts it) rather than serving on a broken store.
#[tokio::test]
async fn an_unrecoverable_store_error_is_answered_then_the_server_exits() {
    let Some(store) = support::test_store(bbs_store::Backend::Postgres).await else {
        return;
    };
    let mut server = Server::start(config_json(&store.config, serde_json::json!({}))).await;
    store
        .raw_sql("ALTER TABLE domains RENAME TO domains_gone")
        .await;
    let reply: UpsertDomainResponse = server
        .call(
            "/v1/domains/upsert",
            &UpsertDomainRequest {
                domain: "d".into(),
                ttl: 0,
            },
        )
        .await;
    let error = reply.error.expect("an error");
    assert_eq!(error.kind(), Type::Unrecoverable);
    assert!(
        error.message.starts_with("Unrecoverable Error: "),
        "{}",
        error.message
    );
    let code = server.stop_when_exited(Duration::from_secs(15));
    assert_eq!(code, Some(1), "log:\n{}", server.log());
    assert!(server.log().contains("unrecoverable-error-shutting-down"));
}

/// Upstream opens the API only once it holds the lock, which here needs the store: while the
/// store does not answer, the API port stays closed and only the health server answers.
#[tokio::test]
async fn the_api_stays_closed_until_the_store_answers() {
    // A "MySQL server" that accepts connections and never speaks: the store cannot open.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        let mut connections = Vec::new();
        for stream in silent.incoming().take(4) {
            connections.push(stream);
        }
        std::thread::sleep(Duration::from_secs(30));
    });
    let store = bbs_store::StoreConfig {
        backend: bbs_store::Backend::Mysql,
        connection_string: format!("mysql://root@127.0.0.1:{port}/test"),
        max_connections: 1,
        etcd_root: String::new(),
        tls: Default::default(),
    };
    let server = Server::spawn(config_json(&store, serde_json::json!({})));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server.healthy().await {
        assert!(
            std::time::Instant::now() < deadline,
            "no health:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..4 {
        assert!(server.api_refused().await, "log:\n{}", server.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(server.healthy().await);
    drop(server);
    drop(held);
}

#[tokio::test]
async fn metrics_show_every_actor_mailbox() {
    let (_store, server) = sqlite_server().await;
    let _: DomainsResponse = server.call("/v1/domains/list", &()).await;
    let _: bbs_models::TasksResponse = server
        .call("/v1/tasks/list.r3", &bbs_models::TasksRequest::default())
        .await;
    let metrics = server.metrics().await;
    for actor in ["domains", "storage", "tasks"] {
        for metric in [
            "bbs_actor_mailbox_depth",
            "bbs_actor_mailbox_capacity",
            "bbs_actor_messages_handled_total",
            "bbs_actor_handling_seconds_bucket",
        ] {
            let needle = format!("{metric}{{actor=\"{actor}\"");
            assert!(metrics.contains(&needle), "missing {needle} in:\n{metrics}");
        }
        let idle = format!("bbs_actor_mailbox_depth{{actor=\"{actor}\"}} 0");
        assert!(
            metrics.contains(&idle),
            "{actor} mailbox not drained:\n{metrics}"
        );
    }
    // The start-up callback sweep only: a server holding the lock before it loads skips the
    // catch-up, and the list reads the shared table, outside the mailbox.
    assert!(
        metrics.contains("bbs_actor_messages_handled_total{actor=\"tasks\"} 1"),
        "{metrics}"
    );
}

/// Upstream's RequestCount and RequestLatency per route, OpenFileDescriptors and
/// MigrationDuration (docs/metrics.md).
#[tokio::test]
async fn requests_are_counted_and_timed_per_route() {
    let (_store, server) = sqlite_server().await;
    for _ in 0..2 {
        let _: DomainsResponse = server.call("/v1/domains/list", &()).await;
    }
    assert_eq!(
        server
            .post_raw("/v1/no/such/route", Vec::new())
            .await
            .status(),
        404
    );
    let stream = server.post_raw("/v1/events/tasks.r1", Vec::new()).await;
    assert_eq!(stream.status(), 200);
    drop(stream);
    let metrics = server.metrics().await;
    for needle in [
        "bbs_requests_total{route=\"Domains\"} 2",
        "bbs_request_duration_seconds_count{route=\"Domains\"} 2",
        "bbs_request_duration_seconds_bucket{route=\"Domains\",le=",
        "bbs_requests_total{route=\"unknown\"} 1",
        "bbs_request_duration_seconds_count{route=\"unknown\"} 1",
        "bbs_requests_total{route=\"TaskEventStream\"} 1",
        "bbs_open_file_descriptors ",
        "bbs_migration_duration_seconds ",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
    // An event stream lasts as long as its subscriber: counted, never timed.
    assert!(
        !metrics.contains("bbs_request_duration_seconds_count{route=\"TaskEventStream\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn db_and_per_cell_task_metrics_are_exported() {
    let (_store, server) = sqlite_server().await;
    for guid in ["t-ok", "t-bad"] {
        let _: bbs_models::TaskLifecycleResponse = server
            .call("/v1/tasks/desire.r2", &support::fixtures::desire_task(guid))
            .await;
        let started: bbs_models::StartTaskResponse = server
            .call(
                "/v1/tasks/start",
                &bbs_models::StartTaskRequest {
                    task_guid: guid.into(),
                    cell_id: "cell-1".into(),
                },
            )
            .await;
        assert!(started.should_start);
        let done: bbs_models::TaskLifecycleResponse = server
            .call(
                "/v1/tasks/complete",
                &bbs_models::CompleteTaskRequest {
                    task_guid: guid.into(),
                    cell_id: "cell-1".into(),
                    failed: guid == "t-bad",
                    failure_reason: if guid == "t-bad" {
                        "boom".into()
                    } else {
                        String::new()
                    },
                    result: String::new(),
                },
            )
            .await;
        assert_eq!(done.error, None);
    }
    let metrics = server.metrics().await;
    for needle in [
        "bbs_tasks_started_total{cell_id=\"cell-1\"} 2",
        "bbs_tasks_succeeded_total{cell_id=\"cell-1\"} 1",
        "bbs_tasks_failed_total{cell_id=\"cell-1\"} 1",
        "bbs_db_queries_total{result=\"succeeded\"}",
        "bbs_db_query_seconds_bucket",
        "bbs_db_queries_in_flight",
        "bbs_db_open_connections",
        "bbs_db_wait_count_total",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
}

#[tokio::test]
async fn the_health_server_answers_any_path() {
    let (_store, server) = sqlite_server().await;
    for path in ["/", "/ping", "/anything/else"] {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", server.health))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.unwrap().is_empty());
    }
}

#[test]
fn a_bad_config_key_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bbs.json");
    std::fs::write(&path, r#"{"listen_adress": "127.0.0.1:1"}"#).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bbs"))
        .arg("-config")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listen_adress"), "{stderr}");
}

#[test]
fn a_bad_environment_value_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bbs"))
        .env("BBS_DATABASE_DRIVER", "oracle")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database_driver"), "{stderr}");
}

#[test]
fn an_unreachable_store_stops_start_up() {
    let store = bbs_store::StoreConfig {
        backend: bbs_store::Backend::Postgres,
        connection_string: format!("postgres://postgres@127.0.0.1:{}/nowhere", free_port()),
        max_connections: 1,
        etcd_root: String::new(),
        tls: Default::default(),
    };
    let config = config_json(&store, serde_json::json!({ "debug_address": "" }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bbs.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_bbs"))
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("store-open-failed"), "{stdout}");
}

/// With no configuration at all the server runs on SQLite under ./bbs-data. (Ports are moved
/// by environment so tests can run beside a development server.)
#[tokio::test]
async fn with_no_config_it_serves_on_embedded_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bbs"))
        .env("BBS_LISTEN_ADDRESS", &api)
        .env("BBS_HEALTH_ADDRESS", format!("127.0.0.1:{}", free_port()))
        .env("BBS_DEBUG_ADDRESS", format!("127.0.0.1:{}", free_port()))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..200 {
        if let Ok(r) = reqwest::Client::new()
            .post(format!("http://{api}/v1/ping"))
            .send()
            .await
        {
            if r.status() == 200 {
                ok = PingResponse::decode(r.bytes().await.unwrap())
                    .unwrap()
                    .available;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok);
    assert!(dir.path().join("bbs-data/bbs.sqlite3").exists());
}
