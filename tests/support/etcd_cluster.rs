//! A three-member etcd cluster on loopback, each member a process the test can kill with
//! SIGKILL and start again on its data. Needs Debian's `etcd` (scripts/ensure-etcd installs it).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Member {
    pub name: String,
    pub client_url: String,
    args: Vec<String>,
    log: std::path::PathBuf,
    process: Option<Child>,
}

pub struct Cluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Member {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("an etcd log file");
        let child = Command::new("etcd")
            .args(&self.args)
            .stdout(Stdio::from(log.try_clone().expect("a log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("etcd runs (scripts/ensure-etcd installs it)");
        self.process = Some(child);
    }

    /// SIGKILL: the member stops mid-whatever, as a crashed host would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the member again on its data; it rejoins the cluster.
    pub fn restart(&mut self) {
        self.kill();
        self.start();
    }

    pub async fn healthy(&self) -> bool {
        let Ok(response) = reqwest::Client::new()
            .get(format!("{}/health", self.client_url))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        else {
            return false;
        };
        response
            .text()
            .await
            .is_ok_and(|body| body.contains("\"health\":\"true\""))
    }

    /// Whether this member leads the cluster now.
    pub async fn is_leader(&self) -> bool {
        let Ok(mut client) = etcd_client::Client::connect([&self.client_url], None).await else {
            return false;
        };
        match client.status().await {
            Ok(status) => status
                .header()
                .is_some_and(|h| h.member_id() == status.leader()),
            Err(_) => false,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Cluster {
    /// Three members on free loopback ports, each with its own data directory.
    pub async fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("a cluster directory");
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| (super::free_port(), super::free_port()))
            .collect();
        let peers: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect();
        let token = format!("bbs-test-{}", uuid::Uuid::new_v4());
        let mut members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let client_url = format!("http://127.0.0.1:{client}");
                let peer_url = format!("http://127.0.0.1:{peer}");
                let args = [
                    "--name",
                    &format!("m{i}"),
                    "--data-dir",
                    &dir.path().join(format!("m{i}")).to_string_lossy(),
                    "--listen-client-urls",
                    &client_url,
                    "--advertise-client-urls",
                    &client_url,
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                    "--initial-cluster",
                    &peers.join(","),
                    "--initial-cluster-token",
                    &token,
                    "--initial-cluster-state",
                    "new",
                ]
                .map(str::to_owned)
                .to_vec();
                Member {
                    name: format!("m{i}"),
                    client_url,
                    args,
                    log: dir.path().join(format!("m{i}.log")),
                    process: None,
                }
            })
            .collect();
        for member in &mut members {
            member.start();
        }
        let cluster = Cluster { members, _dir: dir };
        assert!(
            cluster.settles(Duration::from_secs(30)).await,
            "the etcd cluster never became healthy"
        );
        cluster
    }

    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every member is healthy and one leads.
    pub async fn settles(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let mut healthy = true;
            for member in &self.members {
                healthy &= member.healthy().await;
            }
            if healthy && self.leader().await.is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// The index of the member that leads now.
    pub async fn leader(&self) -> Option<usize> {
        for (i, member) in self.members.iter().enumerate() {
            if member.is_leader().await {
                return Some(i);
            }
        }
        None
    }
}
