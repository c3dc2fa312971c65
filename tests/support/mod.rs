//! Runs the real `bbs` binary against a real store for end-to-end tests.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bbs_store::{Backend, StoreConfig};
use prost::Message;

/// A free loopback port (bound, then released for the server to take). Taken below the
/// kernel's ephemeral range (32768 and up), so an outgoing connection of some other test cannot
/// take it between this check and the server's bind; each test binary walks its own stretch
/// (by process id), and no port is handed out twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id() * 997) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

/// The `error` field every upstream response carries as field 1.
#[derive(Clone, PartialEq, Message)]
pub struct ErrorOnly {
    #[prost(message, optional, tag = "1")]
    pub error: Option<bbs_models::Error>,
}

/// The certificates of this test process when the suite runs with TLS (`TEST_TLS=1`): every
/// server then serves mutual TLS, and every fake collaborator HTTPS with client checks.
pub fn tls() -> Option<&'static certs::Pki> {
    static PKI: std::sync::OnceLock<Option<certs::Pki>> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        std::env::var("TEST_TLS")
            .is_ok_and(|v| !v.is_empty() && v != "0")
            .then(certs::Pki::new)
    })
    .as_ref()
}

/// Runs the `bbs` binary with `args` in `dir`, its output in `dir`'s stdout.log and
/// stderr.log (read back by `log()`).
pub fn spawn_bbs(args: &[&std::ffi::OsStr], dir: &std::path::Path) -> Child {
    let log = |name: &str| Stdio::from(std::fs::File::create(dir.join(name)).unwrap());
    Command::new(env!("CARGO_BIN_EXE_bbs"))
        .args(args)
        .current_dir(dir)
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"))
        .spawn()
        .expect("start bbs")
}

pub struct Server {
    child: Child,
    pub api: String,
    pub debug: String,
    pub health: String,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    client: reqwest::Client,
}

/// The server's store TLS keys for `tls`.
pub fn store_tls_keys(tls: &bbs_store::StoreTls) -> serde_json::Value {
    let mut keys = serde_json::Map::new();
    if let Some(ca) = &tls.sql_ca {
        keys.insert("sql_ca_cert_file".into(), serde_json::json!(ca));
        keys.insert(
            "sql_enable_identity_verification".into(),
            serde_json::json!(tls.sql_verify_identity),
        );
    }
    if let Some(ca) = &tls.etcd_ca {
        keys.insert("etcd_ca_file".into(), serde_json::json!(ca));
    }
    if let Some((cert, key)) = &tls.etcd_identity {
        keys.insert("etcd_cert_file".into(), serde_json::json!(cert));
        keys.insert("etcd_key_file".into(), serde_json::json!(key));
    }
    serde_json::Value::Object(keys)
}

/// The JSON config for `store` with fresh ports.
pub fn config_json(store: &StoreConfig, extra: serde_json::Value) -> serde_json::Value {
    let mut config = serde_json::json!({
        "listen_address": format!("127.0.0.1:{}", free_port()),
        "health_address": format!("127.0.0.1:{}", free_port()),
        "debug_address": format!("127.0.0.1:{}", free_port()),
        "database_driver": store.backend.name(),
        "database_connection_string": store.connection_string,
        "etcd_key_prefix": store.etcd_root,
        "log_level": "debug",
        "converge_repeat_interval": "1h",
        // A fixed lock owner, as a BOSH instance id is: a server restarted after a crash
        // re-takes its own lock at once instead of waiting out the TTL.
        "uuid": "test-node",
        "active_key_label": "test-key",
        "encryption_keys": {"test-key": "a test passphrase"},
    });
    let tls_keys = tls().map(|pki| pki.server_keys()).unwrap_or_default();
    let store_keys = store_tls_keys(&store.tls);
    for extra in [&tls_keys, &store_keys, &extra] {
        if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                config.insert(k.clone(), v.clone());
            }
        }
    }
    config
}

impl Server {
    /// Starts `bbs --config` with `config` and waits until the API answers.
    pub async fn start(config: serde_json::Value) -> Server {
        let server = Server::spawn(config);
        server.wait_ready().await;
        server
    }

    /// Starts `bbs --config` without waiting; with TLS keys in `config`, its client presents
    /// the test process's client certificate.
    pub fn spawn(config: serde_json::Value) -> Server {
        let client = match tls() {
            Some(pki) if config.get("cert_file").is_some() => pki.http_client(Some(&pki.client)),
            _ => reqwest::Client::new(),
        };
        Server::spawn_with(config, client)
    }

    /// Starts `bbs --config` without waiting, talking to it with `client`.
    pub fn spawn_with(config: serde_json::Value, client: reqwest::Client) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("bbs.json");
        let mut file = std::fs::File::create(&config_path).unwrap();
        file.write_all(config.to_string().as_bytes()).unwrap();
        let child = spawn_bbs(&["--config".as_ref(), config_path.as_os_str()], dir.path());
        let scheme = if config.get("cert_file").is_some() {
            "https"
        } else {
            "http"
        };
        Server {
            child,
            api: format!("{scheme}://{}", config["listen_address"].as_str().unwrap()),
            debug: format!("http://{}", config["debug_address"].as_str().unwrap()),
            health: format!("http://{}", config["health_address"].as_str().unwrap()),
            dir,
            config_path,
            client,
        }
    }

    /// The client that speaks to this server (with its client certificate under TLS).
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = self
                .client
                .post(format!("{}/v1/ping", self.api))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "bbs did not become ready; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server, from /proc.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// POSTs raw bytes to an API path.
    pub async fn post_raw(&self, path: &str, body: Vec<u8>) -> reqwest::Response {
        self.client
            .post(format!("{}{}", self.api, path))
            .header("Content-Type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// POSTs a protobuf request and decodes a protobuf response.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &self,
        path: &str,
        request: &Req,
    ) -> Resp {
        let response = self.post_raw(path, request.encode_to_vec()).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/x-protobuf",
            "{path}"
        );
        Resp::decode(response.bytes().await.unwrap()).expect("a protobuf response")
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.debug))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Waits for the server to exit on its own; its exit code.
    pub fn stop_when_exited(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the API port refuses connections (a passive server keeps it closed).
    pub async fn api_refused(&self) -> bool {
        match self
            .client
            .post(format!("{}/v1/ping", self.api))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(_) => false,
            Err(e) => e.is_connect(),
        }
    }

    /// Whether the health port answers 200.
    pub async fn healthy(&self) -> bool {
        matches!(
            reqwest::Client::new().get(format!("{}/", self.health)).send().await,
            Ok(r) if r.status() == 200
        )
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A store on a fresh database of `backend`, or `None` when TEST_BACKENDS leaves it out.
pub async fn test_store(backend: Backend) -> Option<bbs_store::testing::TestStore> {
    if !bbs_store::testing::enabled(backend) {
        return None;
    }
    Some(bbs_store::testing::TestStore::new(backend).await)
}
pub mod certs;
pub mod etcd_cluster;
pub mod etcd_v2;
pub mod inproc;
pub mod locket;

/// Expands each case (an `async fn(Backend)`) into one test per backend, in modules named
/// after the backends, e.g. `postgres::claim_rules`.
#[macro_export]
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite { $( #[actix_web::test] async fn $case() { super::$case(bbs_store::Backend::Sqlite).await } )* }
        mod mysql { $( #[actix_web::test] async fn $case() { super::$case(bbs_store::Backend::Mysql).await } )* }
        mod postgres { $( #[actix_web::test] async fn $case() { super::$case(bbs_store::Backend::Postgres).await } )* }
        mod etcd { $( #[actix_web::test] async fn $case() { super::$case(bbs_store::Backend::Etcd).await } )* }
    };
}

/// Like `on_every_backend!`, for the backends named (for a case that cannot run on the others,
/// which its doc comment says): `on_backends!([mysql, postgres, etcd] [case, ...]);`.
#[macro_export]
macro_rules! on_backends {
    ([$($backend:ident),+ $(,)?] $cases:tt) => {
        $( on_backends!(@one $backend $cases); )+
    };
    (@one $backend:ident [$($case:ident),+ $(,)?]) => {
        mod $backend {
            $(
                #[actix_web::test]
                async fn $case() {
                    let backend = bbs_store::Backend::parse(stringify!($backend))
                        .expect("a backend's name");
                    super::$case(backend).await
                }
            )+
        }
    };
}

pub mod fixtures {
    //! Requests the tests share.

    use std::collections::BTreeMap;

    use bbs_models as m;

    /// A valid desired LRP in domain `cf-apps` with one static metric tag.
    pub fn desired_lrp(guid: &str, instances: i32) -> m::DesiredLrp {
        let mut tags = BTreeMap::new();
        tags.insert(
            "source_id".to_owned(),
            m::MetricTagValue {
                r#static: "s".into(),
                dynamic: 0,
            },
        );
        m::DesiredLrp {
            process_guid: guid.into(),
            domain: "cf-apps".into(),
            root_fs: "preloaded:cflinuxfs4".into(),
            instances,
            action: Some(m::Action {
                run_action: Some(m::RunAction {
                    path: "/app".into(),
                    user: "vcap".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            metric_tags: tags,
            ..Default::default()
        }
    }

    /// A valid task in domain `d` running /bin/true.
    pub fn desire_task(guid: &str) -> m::DesireTaskRequest {
        m::DesireTaskRequest {
            task_guid: guid.into(),
            domain: "d".into(),
            task_definition: Some(m::TaskDefinition {
                root_fs: "docker:///busybox".into(),
                action: Some(m::Action {
                    run_action: Some(m::RunAction {
                        path: "/bin/true".into(),
                        user: "root".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }
}
pub mod proxy;
