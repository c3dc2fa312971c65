//! The store goes away and comes back (docs/reliability.md): the server's store connections run
//! through a proxy the test controls. While the store is silent or refuses, reads are served
//! from memory, writes fail with upstream's UnknownError within db_write_timeout, and
//! `bbs_store_available` says 0; once it answers again the server writes again without a
//! restart. A write whose COMMIT reached the store but whose answer did not is read back, so
//! memory and store agree. SQLite has no connection to lose and is not run here.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use bbs_models as m;
use bbs_models::error::Type;
use bbs_store::Backend;
use support::proxy::{Mode, StoreProxy};
use support::{config_json, fixtures, test_store, ErrorOnly, Server};

const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

async fn desire(server: &Server, guid: &str) -> Option<m::Error> {
    let reply: ErrorOnly = server
        .call("/v1/tasks/desire.r2", &fixtures::desire_task(guid))
        .await;
    reply.error
}

/// The task guids memory holds, read through the API; it must answer within a second.
async fn listed(server: &Server) -> Vec<String> {
    let started = Instant::now();
    let reply: m::TasksResponse = server
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a read waited on the store: {:?}",
        started.elapsed()
    );
    assert_eq!(reply.error, None);
    let mut guids: Vec<String> = reply.tasks.into_iter().map(|t| t.task_guid).collect();
    guids.sort();
    guids
}

async fn store_available(server: &Server) -> Option<f64> {
    server
        .metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("bbs_store_available "))
        .and_then(|v| v.trim().parse().ok())
}

/// A write while the store is away: UnknownError, as upstream's for a database it cannot
/// reach, within the write timeout (plus slack for a loaded machine).
async fn write_fails(server: &Server, guid: &str) -> m::Error {
    let started = Instant::now();
    let error = desire(server, guid)
        .await
        .unwrap_or_else(|| panic!("{guid}: the write succeeded with the store away"));
    assert!(
        started.elapsed() < WRITE_TIMEOUT + Duration::from_secs(3),
        "{guid}: the failure took {:?}",
        started.elapsed()
    );
    assert_eq!(error.r#type(), Type::UnknownError, "{error:?}");
    assert!(
        error.message.starts_with("store unavailable: "),
        "{error:?}"
    );
    error
}

/// Writes again once the store is back; the attempts that still fail (connections the pool
/// had before the outage) fail as UnknownError. How many attempts it took.
async fn writes_again(server: &Server, guid: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match desire(server, guid).await {
            None => return attempts,
            Some(e) if e.r#type() == Type::ResourceExists => return attempts,
            Some(e) => {
                assert_eq!(e.r#type(), Type::UnknownError, "{e:?}");
                assert!(
                    Instant::now() < deadline,
                    "{guid}: no write got through 30 s after the store came back: {e:?}\n{}",
                    server.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Polls `check` until it holds, for up to 15 s (a record whose write had an unknown outcome
/// is read back a second after the failure); whether it came to hold.
async fn settles(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tasks memory holds (through the API), as (guid, state, cell), sorted.
async fn tasks_in_memory(server: &Server) -> Vec<(String, i32, String)> {
    let reply: m::TasksResponse = server
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    let mut tasks: Vec<_> = reply
        .tasks
        .into_iter()
        .map(|t| (t.task_guid, t.state, t.cell_id))
        .collect();
    tasks.sort();
    tasks
}

/// The tasks the store holds, as `tasks_in_memory` gives them.
async fn tasks_in_store(store: &dyn bbs_store::Store) -> Vec<(String, i32, String)> {
    let mut tasks: Vec<_> = store
        .tasks(&Default::default())
        .await
        .expect("stored tasks")
        .into_iter()
        .map(|t| (t.guid, t.state, t.cell_id))
        .collect();
    tasks.sort();
    tasks
}

/// Memory and the store hold the same tasks, once every unsettled write is read back.
async fn memory_matches_store(server: &Server, store: &dyn bbs_store::Store) {
    settles(async || tasks_in_memory(server).await == tasks_in_store(store).await).await;
    assert_eq!(
        tasks_in_memory(server).await,
        tasks_in_store(store).await,
        "tasks: memory against the store"
    );
}

/// Whether memory holds the desired LRP `guid`.
async fn desired_held(server: &Server, guid: &str) -> bool {
    let reply: m::DesiredLrpResponse = server
        .call(
            "/v1/desired_lrps/get_by_process_guid.r3",
            &m::DesiredLrpByProcessGuidRequest {
                process_guid: guid.into(),
            },
        )
        .await;
    reply.error.is_none()
}

/// The state memory holds for index 0 of `guid`.
async fn first_state(server: &Server, guid: &str) -> Option<String> {
    let reply: m::ActualLrpsResponse = server
        .call(
            "/v1/actual_lrps/list",
            &m::ActualLrpsRequest {
                process_guid: guid.into(),
                ..Default::default()
            },
        )
        .await;
    reply.actual_lrps.into_iter().next().map(|a| a.state)
}

async fn the_store_goes_away_and_comes_back(backend: Backend) {
    let Some(store) = test_store(backend).await else {
        return;
    };
    // The server reaches the store through the proxy.
    let (proxy, through_proxy) = StoreProxy::in_front_of(&store.config, backend).await;
    let config = config_json(
        &through_proxy,
        serde_json::json!({
            "log_level": "info",
            "db_write_timeout": "2s",
            "db_read_timeout": "2s",
            // The lock lives in this store too: no refresh falls inside an outage here (one
            // that failed would cost the lock, and the process, as upstream's would).
            "lock_ttl": "120s",
            "lock_retry_interval": "60s",
        }),
    );
    let server = Server::start(config).await;
    assert_eq!(desire(&server, "before").await, None);

    // Silent: nothing comes back.
    proxy.set(Mode::Hang);
    let error = write_fails(&server, "while-silent").await;
    assert_eq!(
        error.message, "store unavailable: no answer from the store in 2s",
        "{error:?}"
    );
    assert!(listed(&server).await.contains(&"before".to_owned()));
    assert_eq!(store_available(&server).await, Some(0.0));
    proxy.set(Mode::Pass);
    let after_silence = writes_again(&server, "after-silence").await;
    assert_eq!(store_available(&server).await, Some(1.0));

    // Refused, as while the store restarts: open connections are reset, new ones refused.
    proxy.set(Mode::Refuse);
    write_fails(&server, "while-refused").await;
    assert_eq!(store_available(&server).await, Some(0.0));
    assert!(listed(&server).await.contains(&"after-silence".to_owned()));
    proxy.set(Mode::Pass);
    let after_restart = writes_again(&server, "after-restart").await;

    // The COMMIT reaches the store, its answer never reaches the server: the write fails,
    // yet the store holds it, and memory must come to hold it too. The proxy finds the
    // COMMIT by reading the bytes, so this part runs in the plain pass only (in the TLS
    // pass, TEST_TLS=1, the store connections are encrypted).
    let plain_sql = backend != Backend::Etcd && store.config.tls.sql_ca.is_none();
    if !plain_sql {
        eprintln!(
            "{backend}: no COMMIT cut here (etcd has none to find, or the connection is TLS)"
        );
    }
    if plain_sql {
        proxy.set(Mode::CutAfterCommitOf("answer-cut"));
        let error = desire(&server, "answer-cut")
            .await
            .expect("the write's answer was cut");
        assert_eq!(error.r#type(), Type::UnknownError, "{error:?}");
        assert!(store.store.task("answer-cut").await.unwrap().is_some());
        memory_matches_store(&server, store.store.as_ref()).await;
        assert!(listed(&server).await.contains(&"answer-cut".to_owned()));

        // The same for a desired LRP and for an instance's claim.
        let desired = fixtures::desired_lrp("lrp", 1);
        proxy.set(Mode::CutAfterCommitOf("lrp-cut"));
        let reply: ErrorOnly = server
            .call(
                "/v1/desired_lrp/desire.r2",
                &m::DesireLrpRequest {
                    desired_lrp: Some(fixtures::desired_lrp("lrp-cut", 1)),
                },
            )
            .await;
        assert_eq!(reply.error.map(|e| e.r#type()), Some(Type::UnknownError));
        assert!(store.store.desired_lrp("lrp-cut").await.unwrap().is_some());
        assert!(
            settles(async || desired_held(&server, "lrp-cut").await).await,
            "memory never took lrp-cut, which the store holds"
        );
        let reply: ErrorOnly = server
            .call(
                "/v1/desired_lrp/desire.r2",
                &m::DesireLrpRequest {
                    desired_lrp: Some(desired),
                },
            )
            .await;
        assert_eq!(reply.error, None);
        proxy.set(Mode::CutAfterCommitOf("ig-1"));
        let claim = m::ClaimActualLrpRequest {
            process_guid: "lrp".into(),
            index: 0,
            actual_lrp_instance_key: Some(m::ActualLrpInstanceKey {
                instance_guid: "ig-1".into(),
                cell_id: "cell-1".into(),
            }),
        };
        let reply: ErrorOnly = server.call("/v1/actual_lrps/claim", &claim).await;
        assert_eq!(reply.error.map(|e| e.r#type()), Some(Type::UnknownError));
        assert!(
            settles(async || first_state(&server, "lrp").await.as_deref() == Some("CLAIMED")).await,
            "memory never took the claim the store holds"
        );

        // Writes committed together, whose answer is cut: each request fails (none is told
        // "exists" by a retry of a batch that had landed), and memory comes to hold them all.
        proxy.set(Mode::CutAfterCommitOf("batch-"));
        let guids: Vec<String> = (0..8).map(|i| format!("batch-{i}")).collect();
        let replies = futures::future::join_all(guids.iter().map(|g| desire(&server, g))).await;
        let mut cut = 0;
        for (guid, error) in guids.iter().zip(replies) {
            if let Some(error) = error {
                assert_eq!(error.r#type(), Type::UnknownError, "{guid}: {error:?}");
                cut += 1;
            }
        }
        eprintln!("{backend}: {cut} of 8 writes committed together had their answer cut");
        proxy.set(Mode::Pass);
    }
    memory_matches_store(&server, store.store.as_ref()).await;
    eprintln!(
        "{backend}: writes got through on attempt {after_silence} after the silence, \
         {after_restart} after the restart"
    );
}

on_backends!([mysql, postgres, etcd][the_store_goes_away_and_comes_back]);
