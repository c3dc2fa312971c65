//! Runs `bbs locket` against a test store, and talks to it over gRPC with mutual TLS.

#![allow(dead_code)]

use std::io::Write;
use std::process::Child;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bbs_locket::client::{ClientConfig, GrpcLocket};
use bbs_locket::{Locket, LocketError, TypeCode};
use bbs_store::StoreConfig;

use super::certs::Pki;

/// Locket speaks only mutual TLS, so its tests always have certificates: the suite's own under
/// `TEST_TLS=1`, otherwise one set per test binary.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    match super::tls() {
        Some(pki) => pki,
        None => PKI.get_or_init(Pki::new),
    }
}

/// The BBS's `locket_*` keys for a locket at `address`.
pub fn client_keys(address: &str) -> serde_json::Value {
    let pki = pki();
    serde_json::json!({
        "locket_address": address,
        "locket_ca_cert_file": pki.ca,
        "locket_client_cert_file": pki.client.cert,
        "locket_client_key_file": pki.client.key,
    })
}

/// The client keys for the locket at `address`, presenting the suite's client certificate.
pub fn client_config(address: &str) -> ClientConfig {
    let pki = pki();
    ClientConfig {
        address: address.into(),
        ca_cert_file: Some(pki.ca.clone()),
        client_cert_file: Some(pki.client.cert.clone()),
        client_key_file: Some(pki.client.key.clone()),
        keepalive_time: 10,
        keepalive_timeout: 22,
    }
}

/// A gRPC client of the locket at `address`, each call timing out after 5 s.
pub fn client(address: &str) -> GrpcLocket {
    GrpcLocket::new(
        bbs_locket::client::channel(&client_config(address)).expect("a locket channel"),
        Duration::from_secs(5),
    )
}

pub struct LocketProcess {
    child: Child,
    pub address: String,
    pub dir: tempfile::TempDir,
}

impl LocketProcess {
    /// Starts `bbs locket` on `store` at `address` and waits until it answers.
    pub async fn start_at(store: &StoreConfig, address: &str) -> LocketProcess {
        let process = LocketProcess::spawn(store, address);
        process.wait_ready().await;
        process
    }

    pub async fn start(store: &StoreConfig) -> LocketProcess {
        let address = format!("127.0.0.1:{}", super::free_port());
        LocketProcess::start_at(store, &address).await
    }

    pub fn spawn(store: &StoreConfig, address: &str) -> LocketProcess {
        let pki = pki();
        let mut config = serde_json::json!({
            "listen_address": address,
            "database_driver": store.backend.name(),
            "database_connection_string": store.connection_string,
            "etcd_key_prefix": store.etcd_root,
            "ca_file": pki.ca,
            "cert_file": pki.server.cert,
            "key_file": pki.server.key,
            "log_level": "debug",
            // Upstream keys this server ignores, as a Diego locket.json carries them.
            "report_interval": "1m",
            "loggregator": {"loggregator_api_port": 3458},
        });
        if let (Some(config), Some(store_keys)) = (
            config.as_object_mut(),
            super::store_tls_keys(&store.tls).as_object(),
        ) {
            for (k, v) in store_keys {
                config.insert(k.clone(), v.clone());
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("locket.json");
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(config.to_string().as_bytes()))
            .expect("write locket.json");
        let child = super::spawn_bbs(
            &["locket".as_ref(), "--config".as_ref(), path.as_os_str()],
            dir.path(),
        );
        LocketProcess {
            child,
            address: address.into(),
            dir,
        }
    }

    pub async fn wait_ready(&self) {
        let client = client(&self.address);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match client.fetch_all(TypeCode::Presence).await {
                Ok(_) => return,
                Err(LocketError::Transport { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("locket did not become ready: {e}\n{}", self.log()),
            }
        }
    }

    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }
}

impl Drop for LocketProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
