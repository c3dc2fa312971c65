//! `bbs locket`: a locket-compatible gRPC server over any of the BBS stores, configured with
//! upstream locket's keys (locket cmd/locket/config).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bbs_locket::service::{self, LocalLocket, SWEEP_INTERVAL};
use bbs_locket::table::LockTable;
use bbs_store::{Backend, StoreConfig, StoreTls};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use slog::{error, info, Logger};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::{bad, ConfigError};

/// Upstream locket's keys; the ones this server does not use are accepted and ignored, so a
/// locket.json from a Diego deployment loads unchanged.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocketSettings {
    pub listen_address: String,
    /// Serves /metrics; empty turns it off.
    pub debug_address: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub database_driver: String,
    pub database_connection_string: String,
    pub sql_ca_cert_file: Option<PathBuf>,
    pub sql_enable_identity_verification: bool,
    pub max_open_database_connections: u32,
    /// Our addition, as in the BBS: etcd as locket's store.
    pub etcd_key_prefix: String,
    pub etcd_ca_file: Option<PathBuf>,
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
    pub log_level: String,

    pub db_connection_timeout: Option<serde_json::Value>,
    pub db_read_timeout: Option<serde_json::Value>,
    pub db_write_timeout: Option<serde_json::Value>,
    pub db_operation_timeout: Option<serde_json::Value>,
    pub max_database_connection_lifetime: Option<serde_json::Value>,
    pub loggregator: Option<serde_json::Value>,
    pub report_interval: Option<serde_json::Value>,
    pub health_check_timeout: Option<serde_json::Value>,
    pub health_check_failure_threshold: Option<serde_json::Value>,
    pub health_check_interval: Option<serde_json::Value>,
    pub enable_db_health_check: Option<serde_json::Value>,
    pub debug_server_config: Option<serde_json::Value>,
    pub time_format: Option<serde_json::Value>,
    pub redact_secrets: Option<serde_json::Value>,
    pub redact_patterns: Option<serde_json::Value>,
    pub max_data_string_length: Option<serde_json::Value>,
}

impl Default for LocketSettings {
    fn default() -> Self {
        LocketSettings {
            listen_address: "127.0.0.1:8891".into(),
            debug_address: String::new(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            database_driver: "sqlite".into(),
            database_connection_string: String::new(),
            sql_ca_cert_file: None,
            sql_enable_identity_verification: false,
            max_open_database_connections: 0,
            etcd_key_prefix: String::new(),
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            log_level: "info".into(),
            db_connection_timeout: None,
            db_read_timeout: None,
            db_write_timeout: None,
            db_operation_timeout: None,
            max_database_connection_lifetime: None,
            loggregator: None,
            report_interval: None,
            health_check_timeout: None,
            health_check_failure_threshold: None,
            health_check_interval: None,
            enable_db_health_check: None,
            debug_server_config: None,
            time_format: None,
            redact_secrets: None,
            redact_patterns: None,
            max_data_string_length: None,
        }
    }
}

/// Where locket keeps its table when no connection string is given with SQLite.
pub const DEFAULT_LOCKET_SQLITE_PATH: &str = "locket-data/locket.sqlite3";

impl LocketSettings {
    pub fn load(path: &Path) -> Result<LocketSettings, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
        let settings: LocketSettings = serde_json::from_str(&text)
            .map_err(|e| ConfigError(format!("cannot read the configuration: {e}")))?;
        settings.store_config()?;
        settings.tls()?;
        Ok(settings)
    }

    pub fn store_config(&self) -> Result<StoreConfig, ConfigError> {
        let backend = Backend::parse(&self.database_driver).ok_or_else(|| {
            bad(
                "database_driver",
                format!(
                    "{:?} is not one of sqlite, mysql, postgres, etcd",
                    self.database_driver
                ),
            )
        })?;
        let connection_string = match (backend, self.database_connection_string.trim()) {
            (Backend::Sqlite, "") => DEFAULT_LOCKET_SQLITE_PATH.to_owned(),
            (_, "") => {
                return Err(bad(
                    "database_connection_string",
                    format!("required with database_driver {backend}"),
                ))
            }
            (_, s) => s.to_owned(),
        };
        let etcd_identity = match (&self.etcd_cert_file, &self.etcd_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(bad(
                    "etcd_cert_file",
                    "etcd_cert_file and etcd_key_file go together",
                ))
            }
        };
        Ok(StoreConfig {
            backend,
            connection_string,
            max_connections: match self.max_open_database_connections {
                0 => 16,
                n => n,
            },
            etcd_root: self.etcd_key_prefix.clone(),
            tls: StoreTls {
                sql_ca: self.sql_ca_cert_file.clone(),
                sql_verify_identity: self.sql_enable_identity_verification,
                etcd_ca: self.etcd_ca_file.clone(),
                etcd_identity,
            },
        })
    }

    /// Locket speaks only mutual TLS, as upstream's does.
    pub fn tls(&self) -> Result<ServerTlsConfig, ConfigError> {
        let read = |key: &'static str, path: &Option<PathBuf>| {
            let path = path
                .as_ref()
                .ok_or_else(|| bad(key, "must be set: locket speaks only mutual TLS"))?;
            std::fs::read(path)
                .map_err(|e| bad(key, format!("cannot read {}: {e}", path.display())))
        };
        let ca = read("ca_file", &self.ca_file)?;
        let cert = read("cert_file", &self.cert_file)?;
        let key = read("key_file", &self.key_file)?;
        // Checked with our own TLS set-up for errors that name the key and the file.
        if let (Some(ca), Some(cert), Some(key)) = (&self.ca_file, &self.cert_file, &self.key_file)
        {
            bbs_tls::mutual_server(
                bbs_tls::PemFile::new("ca_file", ca),
                bbs_tls::Identity {
                    certificate: bbs_tls::PemFile::new("cert_file", cert),
                    private_key: bbs_tls::PemFile::new("key_file", key),
                },
            )
            .map_err(|e| bad(e.key(), &e))?;
        }
        Ok(ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, key))
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(false)
            .timeout(Duration::from_secs(10)))
    }
}

/// Runs locket until SIGINT or SIGTERM; returns the exit code.
pub async fn run(settings: LocketSettings, log: Logger, metrics: Arc<PrometheusHandle>) -> i32 {
    let (tls, store_config) = match (settings.tls(), settings.store_config()) {
        (Ok(tls), Ok(store)) => (tls, store),
        (Err(e), _) | (_, Err(e)) => {
            error!(log, "invalid-config"; "error" => %e);
            return 2;
        }
    };
    let debug = match crate::server::serve_debug(&settings.debug_address, &metrics) {
        Ok(handle) => handle,
        Err(e) => {
            error!(log, "debug-listen-failed"; "address" => &settings.debug_address, "error" => %e);
            return 1;
        }
    };
    let code = serve(settings, tls, store_config, &log).await;
    if let Some(debug) = debug {
        debug.stop(false).await;
    }
    info!(log, "exited"; "code" => code);
    code
}

async fn serve(
    settings: LocketSettings,
    tls: ServerTlsConfig,
    store_config: StoreConfig,
    log: &Logger,
) -> i32 {
    let listener = match service::bind(&settings.listen_address).await {
        Ok(listener) => listener,
        Err(e) => {
            error!(log, "listen-failed"; "address" => &settings.listen_address, "error" => %e);
            return 1;
        }
    };
    let store = match bbs_store::connect(&store_config).await {
        Ok(store) => store,
        Err(e) => {
            error!(log, "store-open-failed"; "backend" => store_config.backend.name(), "error" => %e);
            return 1;
        }
    };
    let locket = LocalLocket::start(LockTable::new(store), SWEEP_INTERVAL, log.clone());
    info!(log, "started"; "address" => &settings.listen_address, "backend" => store_config.backend.name());
    let signalled = async {
        let signal = crate::server::termination().await;
        info!(log, "signalled"; "signal" => signal);
    };
    match service::serve(listener, tls, locket.clone(), log.clone(), signalled).await {
        Ok(()) => {
            locket.expirer().stop();
            0
        }
        Err(e) => {
            error!(log, "serve-failed"; "error" => %e);
            1
        }
    }
}
