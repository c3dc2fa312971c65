//! A throwaway etcd member serving the v2 API (etcd 3.4 needs `--enable-v2`), where tests
//! lay out upstream's etcd-era keyspace as the Go BBS wrote it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct EtcdV2 {
    child: Option<Child>,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl EtcdV2 {
    pub async fn start() -> EtcdV2 {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (super::free_port(), super::free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new("etcd")
            .args(["--name", "v2", "--enable-v2=true", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("v2={peer_url}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd (scripts/ensure-etcd installs it)");
        let etcd = EtcdV2 {
            child: Some(child),
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = reqwest::get(format!("{}/v2/keys/", etcd.url)).await {
                if r.status().is_success() {
                    return etcd;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("etcd with the v2 API did not come up");
    }

    /// A handle on an etcd some other process runs (for its URL only).
    pub fn at(url: &str) -> EtcdV2 {
        EtcdV2 {
            child: None,
            url: url.to_owned(),
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Sets `key` to `value`, with an etcd TTL when given.
    pub async fn put(&self, key: &str, value: &str, ttl: Option<u64>) {
        let mut form = vec![("value", value.to_owned())];
        if let Some(ttl) = ttl {
            form.push(("ttl", ttl.to_string()));
        }
        let response = reqwest::Client::new()
            .put(format!("{}/v2/keys{key}", self.url))
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "PUT {key}: {}",
            response.status()
        );
    }

    pub async fn get(&self, key: &str) -> Option<String> {
        let response = reqwest::get(format!("{}/v2/keys{key}", self.url))
            .await
            .unwrap();
        if response.status() == 404 {
            return None;
        }
        let body: serde_json::Value = response.json().await.unwrap();
        body["node"]["value"].as_str().map(str::to_owned)
    }
}

impl Drop for EtcdV2 {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
