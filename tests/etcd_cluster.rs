//! The server on a three-member etcd cluster (docs/reliability.md, "The store goes away"):
//! no write fails while a follower is killed and while it rejoins; when the leader is killed,
//! the writes in flight fail and then writes go on; every write answered is in the store, and memory and
//! store agree. Plain HTTP to etcd: the TLS pass (TEST_TLS=1) says so and leaves it to the
//! plain pass.

mod support;

use std::time::{Duration, Instant};

use bbs_models as m;
use bbs_store::{Backend, StoreConfig, TaskFilter};
use support::etcd_cluster::Cluster;
use support::{config_json, fixtures, ErrorOnly, Server};

/// Desires tasks until `count` more are answered without error, retrying a refused one (a
/// write that failed may have landed: ResourceExists then means it did). Returns the writes
/// that failed and the longest stretch without an answered write.
async fn write(server: &Server, acknowledged: &mut Vec<String>, count: usize) -> (usize, Duration) {
    let (mut failed, mut longest) = (0, Duration::ZERO);
    let mut last_success = Instant::now();
    let target = acknowledged.len() + count;
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.len() < target {
        assert!(
            Instant::now() < deadline,
            "writes did not resume within 60 s"
        );
        let guid = format!("task-{}", acknowledged.len());
        let reply: ErrorOnly = server
            .call("/v1/tasks/desire.r2", &fixtures::desire_task(&guid))
            .await;
        match reply.error {
            None => {}
            Some(e) if e.r#type() == m::error::Type::ResourceExists && failed > 0 => {}
            Some(e) => {
                if failed == 0 {
                    eprintln!(
                        "etcd cluster: first failed write: {:?} {}",
                        e.r#type(),
                        e.message
                    );
                }
                failed += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        }
        longest = longest.max(last_success.elapsed());
        last_success = Instant::now();
        acknowledged.push(guid);
    }
    (failed, longest)
}

#[actix_web::test]
async fn writes_survive_a_member_and_the_leader_killed() {
    if !bbs_store::testing::enabled(Backend::Etcd) {
        return;
    }
    if support::tls().is_some() {
        eprintln!("etcd cluster: plain HTTP to etcd; this test runs in the plain pass only");
        return;
    }
    let mut cluster = Cluster::start().await;
    let store_config = StoreConfig {
        backend: Backend::Etcd,
        connection_string: cluster.endpoints(),
        max_connections: 4,
        etcd_root: format!("/bbs-cluster-{}", uuid::Uuid::new_v4()),
        tls: Default::default(),
    };
    let server = Server::start(config_json(
        &store_config,
        serde_json::json!({
            "db_write_timeout": "5s",
            "db_read_timeout": "5s",
            "lock_ttl": "30s",
            "lock_retry_interval": "5s",
        }),
    ))
    .await;
    let mut acknowledged = Vec::new();
    write(&server, &mut acknowledged, 50).await;

    let leader = cluster.leader().await.expect("a leader");
    let follower = (leader + 1) % 3;
    cluster.members[follower].kill();
    let (follower_failed, follower_gap) = write(&server, &mut acknowledged, 50).await;
    cluster.members[follower].restart();
    assert!(
        cluster.settles(Duration::from_secs(30)).await,
        "the follower never rejoined"
    );
    let (rejoin_failed, rejoin_gap) = write(&server, &mut acknowledged, 50).await;

    let leader = cluster.leader().await.expect("a leader");
    let killed_at = Instant::now();
    cluster.members[leader].kill();
    let (leader_failed, leader_gap) = write(&server, &mut acknowledged, 50).await;
    let new_leader = cluster.leader().await;
    eprintln!(
        "etcd cluster: follower {} killed: {follower_failed} writes failed, longest gap \
         {follower_gap:?}; rejoined: {rejoin_failed} failed, gap {rejoin_gap:?}; leader {} \
         killed: {leader_failed} failed, longest gap {leader_gap:?} (writes answered again \
         {:?} after the kill), new leader {:?}",
        cluster.members[follower].name,
        cluster.members[leader].name,
        killed_at.elapsed(),
        new_leader.map(|i| cluster.members[i].name.clone()),
    );
    // A follower's loss and return cost no write: a call the dead member refused is sent to
    // another. The leader's loss costs the writes in flight (they wait out db_write_timeout
    // for an answer the election dropped) and those sent during the election.
    assert_eq!((follower_failed, rejoin_failed), (0, 0));
    assert_ne!(new_leader, Some(leader));
    cluster.members[leader].restart();
    assert!(
        cluster.settles(Duration::from_secs(30)).await,
        "the old leader never rejoined"
    );
    write(&server, &mut acknowledged, 10).await;

    // Every answered write is in the store, and memory holds exactly what the store holds.
    let store = bbs_store::connect(&store_config)
        .await
        .expect("the cluster");
    let mut stored: Vec<String> = store
        .tasks(&TaskFilter::default())
        .await
        .expect("the stored tasks")
        .into_iter()
        .map(|t| t.guid)
        .collect();
    stored.sort();
    let listed: m::TasksResponse = server
        .call("/v1/tasks/list.r3", &m::TasksRequest::default())
        .await;
    let mut in_memory: Vec<String> = listed.tasks.into_iter().map(|t| t.task_guid).collect();
    in_memory.sort();
    assert_eq!(in_memory, stored, "memory and store disagree");
    acknowledged.sort();
    for guid in &acknowledged {
        assert!(
            stored.binary_search(guid).is_ok(),
            "{guid} was answered but is not stored"
        );
    }
}
