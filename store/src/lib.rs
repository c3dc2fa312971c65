//! BBS persistence: the [`Store`] trait, its SQL and etcd backends, schema versions, and the
//! conformance suite every backend must pass.

#[cfg(feature = "testing")]
pub mod conformance;
mod error;
mod etcd;
mod migrate;
mod records;
pub(crate) mod sql;
mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;
use std::sync::Arc;

pub use error::{StoreError, StoreResult};
pub use etcd::connect_etcd;
pub use migrate::{SchemaUse, SCHEMA_VERSION};
pub use records::*;
pub use sql::{
    connect_mysql, connect_postgres, connect_sqlite, mysql_url_from_dsn, SharedUpgradeCodec,
    UpgradeCodec,
};
pub use store::{Backend, Mutation, PoolStats, Store};

/// What it takes to open a store; built from the server configuration.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub backend: Backend,
    /// SQLite file path, MySQL DSN or URL, PostgreSQL URL or key=value string, or
    /// comma-separated etcd endpoints.
    pub connection_string: String,
    /// Pool size for the SQL backends.
    pub max_connections: u32,
    /// Key prefix for etcd (empty for upstream's layout).
    pub etcd_root: String,
    pub tls: StoreTls,
}

/// TLS to the store, from upstream's keys (bbs-reference §7.1, §8).
#[derive(Clone, Debug, Default)]
pub struct StoreTls {
    /// `sql_ca_cert_file`: TLS to MySQL or PostgreSQL, the server's chain verified against it.
    pub sql_ca: Option<PathBuf>,
    /// `sql_enable_identity_verification`: the server's host name is verified too.
    pub sql_verify_identity: bool,
    /// `etcd_ca_file`: TLS to etcd (`https://` endpoints), the server verified against it.
    pub etcd_ca: Option<PathBuf>,
    /// `etcd_cert_file` and `etcd_key_file`: the client certificate, for etcd's
    /// client-certificate authentication.
    pub etcd_identity: Option<(PathBuf, PathBuf)>,
}

/// Opens the configured store and brings its schema up to date.
pub async fn connect(config: &StoreConfig) -> StoreResult<Arc<dyn Store>> {
    connect_with(config, SchemaUse::Migrate(None)).await
}

/// [`connect`], treating the schema as `schema` says (and lending the keys to upstream's
/// record-rewriting migrations for a database the Go BBS left at an earlier version).
pub async fn connect_with(
    config: &StoreConfig,
    schema: SchemaUse<'_>,
) -> StoreResult<Arc<dyn Store>> {
    match config.backend {
        Backend::Sqlite => {
            connect_sqlite(&config.connection_string, config.max_connections, schema).await
        }
        Backend::Mysql => {
            connect_mysql(
                &config.connection_string,
                config.max_connections,
                &config.tls,
                schema,
            )
            .await
        }
        Backend::Postgres => {
            connect_postgres(
                &config.connection_string,
                config.max_connections,
                &config.tls,
                schema,
            )
            .await
        }
        Backend::Etcd => {
            connect_etcd(
                &config.connection_string,
                &config.etcd_root,
                &config.tls,
                schema,
            )
            .await
        }
    }
}
