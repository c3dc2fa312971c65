//! Fresh, isolated stores for tests on every backend: a temporary SQLite file, a new MySQL or
//! PostgreSQL database, or a unique etcd key prefix. Each is removed when dropped.
//!
//! Which servers to use comes from the environment, with the defaults of the development
//! machines and CI:
//! `TEST_MYSQL_URL` (mysql://root@127.0.0.1:3306/test), `TEST_POSTGRES_URL`
//! (postgres://postgres@127.0.0.1:5432/postgres), `TEST_ETCD_ENDPOINTS` (http://127.0.0.1:2379).
//! `TEST_BACKENDS` (comma-separated; default all four) names the backends to test; a backend
//! left out is reported as skipped by every test, never silently.

use std::sync::Arc;

use diesel_async::{
    AsyncConnection, AsyncMysqlConnection, AsyncPgConnection, SimpleAsyncConnection,
};

use crate::{connect, Backend, Store, StoreConfig, StoreResult};

pub fn mysql_admin_url() -> String {
    std::env::var("TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

pub fn postgres_admin_url() -> String {
    std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// With `TEST_STORE_TLS_DIR` (set by scripts/ensure-tls-stores: `ca.crt`, `client.crt`,
/// `client.key`), the test stores are TLS-only servers: every store connection goes over TLS,
/// the BBS's verified against that CA.
pub fn store_tls() -> Option<crate::StoreTls> {
    let dir = std::path::PathBuf::from(std::env::var_os("TEST_STORE_TLS_DIR")?);
    Some(crate::StoreTls {
        sql_ca: Some(dir.join("ca.crt")),
        sql_verify_identity: true,
        etcd_ca: Some(dir.join("ca.crt")),
        etcd_identity: Some((dir.join("client.crt"), dir.join("client.key"))),
    })
}

/// A MySQL connection for test administration, over TLS when the test stores need it.
async fn mysql_connect(url: &str) -> diesel::ConnectionResult<AsyncMysqlConnection> {
    match store_tls() {
        None => AsyncMysqlConnection::establish(url).await,
        Some(_) => {
            let separator = if url.contains('?') { '&' } else { '?' };
            AsyncMysqlConnection::establish(&format!(
                "{url}{separator}require_ssl=true&verify_ca=false"
            ))
            .await
        }
    }
}

/// A PostgreSQL connection for test administration, over TLS when the test stores need it.
async fn postgres_connect(url: &str) -> diesel::ConnectionResult<AsyncPgConnection> {
    let Some(tls) = store_tls() else {
        return AsyncPgConnection::establish(url).await;
    };
    let ca = tls.sql_ca.expect("a CA");
    let config = bbs_tls::client(
        bbs_tls::ServerCheck::Full(bbs_tls::PemFile::new("TEST_STORE_TLS_DIR", &ca)),
        None,
    )
    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    let separator = if url.contains('?') { '&' } else { '?' };
    let (client, connection) = tokio_postgres::connect(
        &format!("{url}{separator}sslmode=require"),
        tokio_postgres_rustls::MakeRustlsConnect::new(config),
    )
    .await
    .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
    AsyncPgConnection::try_from_client_and_connection(client, connection).await
}

/// An etcd client for test administration, with the test stores' TLS when they need it.
async fn etcd_connect(endpoints: &str) -> Result<etcd_client::Client, etcd_client::Error> {
    let options = store_tls().map(|tls| {
        let read = |p: &std::path::Path| std::fs::read(p).unwrap_or_default();
        let (cert, key) = tls.etcd_identity.expect("an identity");
        etcd_client::ConnectOptions::new().with_tls(
            etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(
                    &tls.etcd_ca.expect("a CA"),
                )))
                .identity(etcd_client::Identity::from_pem(read(&cert), read(&key))),
        )
    });
    etcd_client::Client::connect([endpoints], options).await
}

pub fn etcd_endpoints() -> String {
    std::env::var("TEST_ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into())
}

/// Whether `TEST_BACKENDS` includes `backend`. Prints a line when it does not, so a skipped
/// backend always shows in the test output.
pub fn enabled(backend: Backend) -> bool {
    let on = match std::env::var("TEST_BACKENDS") {
        Ok(list) if !list.trim().is_empty() && list.trim() != "all" => list
            .split(',')
            .any(|name| Backend::parse(name.trim()) == Some(backend)),
        _ => true,
    };
    if !on {
        eprintln!("SKIPPED: backend {backend} is not in TEST_BACKENDS");
    }
    on
}

/// A store on its own fresh database, plus what it takes to reopen it or point a server at it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub config: StoreConfig,
    cleanup: Option<Cleanup>,
    _dir: Option<tempfile::TempDir>,
}

/// How to remove a test database when its store is dropped.
pub enum Cleanup {
    Mysql { admin: String, database: String },
    Postgres { admin: String, database: String },
    Etcd { endpoints: String, root: String },
}

impl TestStore {
    /// Creates a fresh database on `backend` and opens a migrated store on it.
    pub async fn new(backend: Backend) -> TestStore {
        let (config, cleanup, dir) = fresh_config(backend).await;
        let store = connect(&config)
            .await
            .unwrap_or_else(|e| panic!("cannot open the {backend} store: {e}"));
        TestStore {
            store,
            config,
            cleanup,
            _dir: dir,
        }
    }

    /// Runs SQL directly on this test's database (to break or repair it underneath a server).
    pub async fn raw_sql(&self, sql: &str) {
        raw_sql_on(&self.config, sql).await
    }

    /// Runs a query of five text columns (the last nullable) on this test's MySQL or
    /// PostgreSQL database, for reading its live schema.
    pub async fn text_rows(&self, sql: &str) -> Vec<[Option<String>; 5]> {
        use diesel_async::RunQueryDsl;
        let rows: Vec<TextRow> = match self.config.backend {
            Backend::Mysql => {
                let mut c = mysql_connect(&self.config.connection_string)
                    .await
                    .expect("connect");
                diesel::sql_query(sql).load(&mut c).await.expect("query")
            }
            Backend::Postgres => {
                let mut c = postgres_connect(&self.config.connection_string)
                    .await
                    .expect("connect");
                diesel::sql_query(sql).load(&mut c).await.expect("query")
            }
            other => panic!("{other} has no information_schema"),
        };
        rows.into_iter()
            .map(|r| [Some(r.a), Some(r.b), Some(r.c), Some(r.d), r.e])
            .collect()
    }

    /// Another handle on the same database (no clean-up of its own), for a second server
    /// beside the first; the original must outlive it.
    pub fn sharing(&self) -> TestStore {
        TestStore {
            store: Arc::clone(&self.store),
            config: self.config.clone(),
            cleanup: None,
            _dir: None,
        }
    }

    /// Opens the same database again, as a restarted server would.
    pub async fn reopen(&self) -> StoreResult<Arc<dyn Store>> {
        connect(&self.config).await
    }
}

#[derive(diesel::QueryableByName)]
struct TextRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    a: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    b: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    c: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    d: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    e: Option<String>,
}

/// A fresh MySQL or PostgreSQL database as the Go BBS left it at an earlier upstream schema
/// `version`: upstream's migrations up to it, and that version recorded. Not opened: opening
/// it (here or by a server) is what brings it forward.
pub struct UpstreamDatabase {
    pub config: StoreConfig,
    cleanup: Option<Cleanup>,
}

impl UpstreamDatabase {
    pub async fn at(backend: Backend, version: i64) -> UpstreamDatabase {
        use crate::sql::upgrade::{apply, remaining};
        let (config, cleanup, _) = fresh_config(backend).await;
        let url = config.connection_string.clone();
        macro_rules! build {
            ($conn:expr) => {{
                let mut conn = $conn.await.expect("connect");
                conn.batch_execute(crate::sql::migrate::CONFIGURATIONS_DDL)
                    .await
                    .expect("configurations");
                for step in remaining(0).take_while(|step| step.version <= version) {
                    apply(&mut conn, backend, step, None)
                        .await
                        .unwrap_or_else(|e| panic!("upstream migration {}: {e}", step.version));
                }
            }};
        }
        match backend {
            Backend::Mysql => build!(mysql_connect(&url)),
            Backend::Postgres => build!(postgres_connect(&url)),
            other => panic!("upstream never wrote a {other} database"),
        }
        UpstreamDatabase { config, cleanup }
    }

    /// Runs SQL on the database (to write rows as the Go BBS of that version did).
    pub async fn raw_sql(&self, sql: &str) {
        raw_sql_on(&self.config, sql).await
    }

    /// Opens it, lending `codec` to upstream's record-rewriting migrations.
    pub async fn open(mut self, codec: Option<&dyn crate::UpgradeCodec>) -> StoreResult<TestStore> {
        let store = crate::connect_with(&self.config, crate::SchemaUse::Migrate(codec)).await?;
        Ok(TestStore {
            store,
            config: self.config.clone(),
            cleanup: self.cleanup.take(),
            _dir: None,
        })
    }
}

impl Drop for UpstreamDatabase {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.run();
        }
    }
}

async fn raw_sql_on(config: &StoreConfig, sql: &str) {
    match config.backend {
        Backend::Mysql => {
            let mut c = mysql_connect(&config.connection_string)
                .await
                .expect("connect");
            c.batch_execute(sql).await.expect("raw sql");
        }
        Backend::Postgres => {
            let mut c = postgres_connect(&config.connection_string)
                .await
                .expect("connect");
            c.batch_execute(sql).await.expect("raw sql");
        }
        Backend::Sqlite => {
            let mut c = crate::sql::SqliteConn::establish(&config.connection_string)
                .await
                .expect("connect");
            c.batch_execute(sql).await.expect("raw sql");
        }
        Backend::Etcd => panic!("etcd has no SQL"),
    }
}

fn unique_name() -> String {
    format!("bbs_test_{}", uuid::Uuid::new_v4().simple())
}

/// Replaces the database (path) part of a URL.
fn with_database(url: &str, database: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("test database URL must be a URL");
    parsed.set_path(database);
    parsed.to_string()
}

/// A database configuration for a fresh, empty database (created, but not yet migrated).
pub async fn fresh_config(
    backend: Backend,
) -> (StoreConfig, Option<Cleanup>, Option<tempfile::TempDir>) {
    let name = unique_name();
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("create temp dir");
            let path = dir.path().join("bbs.sqlite3");
            (
                StoreConfig {
                    backend,
                    connection_string: path.to_string_lossy().into_owned(),
                    max_connections: 8,
                    etcd_root: String::new(),
                    tls: store_tls().unwrap_or_default(),
                },
                None,
                Some(dir),
            )
        }
        Backend::Mysql => {
            let admin = mysql_admin_url();
            let mut conn = mysql_connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("MySQL at {admin} is required for this test: {e}"));
            conn.batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            (
                StoreConfig {
                    backend,
                    connection_string: with_database(&admin, &name),
                    max_connections: 8,
                    etcd_root: String::new(),
                    tls: store_tls().unwrap_or_default(),
                },
                Some(Cleanup::Mysql {
                    admin,
                    database: name,
                }),
                None,
            )
        }
        Backend::Postgres => {
            let admin = postgres_admin_url();
            let mut conn = postgres_connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test: {e}"));
            conn.batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create test database");
            (
                StoreConfig {
                    backend,
                    connection_string: with_database(&admin, &name),
                    max_connections: 8,
                    etcd_root: String::new(),
                    tls: store_tls().unwrap_or_default(),
                },
                Some(Cleanup::Postgres {
                    admin,
                    database: name,
                }),
                None,
            )
        }
        Backend::Etcd => {
            let endpoints = etcd_endpoints();
            let root = format!("/{name}");
            (
                StoreConfig {
                    backend,
                    connection_string: endpoints.clone(),
                    max_connections: 8,
                    etcd_root: root.clone(),
                    tls: store_tls().unwrap_or_default(),
                },
                Some(Cleanup::Etcd { endpoints, root }),
                None,
            )
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        if let Some(cleanup) = self.cleanup.take() {
            cleanup.run();
        }
    }
}

impl Cleanup {
    /// Drops the database on a thread of its own, since `Drop` cannot await.
    pub fn run(self) {
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                match self {
                    Cleanup::Mysql { admin, database } => {
                        if let Ok(mut c) = mysql_connect(&admin).await {
                            let _ = c
                                .batch_execute(&format!("DROP DATABASE IF EXISTS {database}"))
                                .await;
                        }
                    }
                    Cleanup::Postgres { admin, database } => {
                        if let Ok(mut c) = postgres_connect(&admin).await {
                            let _ = c
                                .batch_execute(&format!(
                                    "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
                                ))
                                .await;
                        }
                    }
                    Cleanup::Etcd { endpoints, root } => {
                        if let Ok(mut c) = etcd_connect(&endpoints).await {
                            let _ = c
                                .delete(
                                    format!("{root}/"),
                                    Some(etcd_client::DeleteOptions::new().with_prefix()),
                                )
                                .await;
                            let _ = c.delete(format!("{root}/version"), None).await;
                        }
                    }
                }
            });
        })
        .join();
    }
}
