//! Server configuration: upstream's `bbs.json` keys where they apply, from a JSON or TOML file
//! (`bbs --config PATH`), overridden by `BBS_<KEY>` environment variables.
//!
//! Unknown keys stop start-up with a message naming the key. Upstream keys that do not apply
//! here (locket, loggregator, ...) are accepted and ignored, so an existing `bbs.json` works.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bbs_store::{Backend, StoreConfig};
use serde::Deserialize;

/// A configuration problem, worded for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub(crate) fn bad(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("invalid configuration key `{key}`: {why}"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    // Network.
    pub listen_address: String,
    pub health_address: String,
    /// Serves /metrics; empty turns it off.
    pub debug_address: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_request_body_bytes: usize,
    /// Requests handled at once (event streams aside); one more is answered 503 at once, which
    /// Go clients retry. 0: no bound. Ours (docs/reliability.md, "Overload").
    pub max_pending_requests: usize,

    // Store.
    pub database_driver: String,
    pub database_connection_string: String,
    pub sql_ca_cert_file: Option<PathBuf>,
    pub sql_enable_identity_verification: bool,
    pub max_open_database_connections: u32,
    /// Key prefix for the etcd store; empty keeps upstream's layout.
    pub etcd_key_prefix: String,
    /// TLS to etcd (upstream's etcd-era keys): the CA, and the optional client identity.
    pub etcd_ca_file: Option<PathBuf>,
    pub etcd_cert_file: Option<PathBuf>,
    pub etcd_key_file: Option<PathBuf>,
    /// Upstream's etcd-era store (the etcd v2 API): with a SQL `database_driver`, its records
    /// are copied once into an empty SQL store at start-up, as the Go BBS did; `bbs migrate
    /// --from-etcd-v2` reads it too (docs/migration.md).
    pub etcd_cluster_urls: Vec<String>,
    pub etcd_client_session_cache_size: Option<serde_json::Value>,
    pub etcd_max_idle_conns_per_host: Option<serde_json::Value>,

    // Events.
    /// Events kept for resuming subscribers, by count and by age.
    pub event_retention_count: usize,
    #[serde(with = "humantime_serde")]
    pub event_retention_duration: Duration,
    /// Events queued per subscriber before a slow one is disconnected.
    pub event_subscriber_buffer: usize,

    // Actors.
    pub actor_mailbox_capacity: usize,
    /// Storage actors (concurrent store operations); 0 = max_open_database_connections.
    pub storage_actors: usize,

    // Encryption.
    pub active_key_label: Option<String>,
    pub encryption_keys: BTreeMap<String, String>,
    /// "xchacha20-poly1305" (default) or "aes-256-gcm" (upstream's format, for a rollback).
    pub encryption_write_format: String,

    // Collaborators.
    pub auctioneer_address: Option<String>,
    pub auctioneer_ca_cert: Option<PathBuf>,
    pub auctioneer_client_cert: Option<PathBuf>,
    pub auctioneer_client_key: Option<PathBuf>,
    pub auctioneer_require_tls: bool,
    pub rep_ca_cert: Option<PathBuf>,
    pub rep_client_cert: Option<PathBuf>,
    pub rep_client_key: Option<PathBuf>,
    pub rep_client_session_cache_size: u32,

    // Timing and workers.
    #[serde(with = "humantime_serde")]
    pub communication_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub converge_repeat_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub kick_task_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub expire_pending_task_duration: Duration,
    #[serde(with = "humantime_serde")]
    pub expire_completed_task_duration: Duration,
    pub convergence_workers: u32,
    pub update_workers: u32,
    pub task_callback_workers: u32,
    pub max_task_retries: u32,
    #[serde(with = "humantime_serde")]
    pub report_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub lock_retry_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub db_connection_timeout: Duration,
    /// Bounds each store read (upstream's DSN read timeout; 0 = none).
    #[serde(with = "humantime_serde")]
    pub db_read_timeout: Duration,
    /// Bounds each store write: past it the write fails, and its record is read back once
    /// the store answers again (upstream's DSN write timeout; 0 = none).
    #[serde(with = "humantime_serde")]
    pub db_write_timeout: Duration,

    // Logging and identity.
    pub log_level: String,
    pub session_name: String,
    /// The lock owner; a random one when unset (upstream refuses to start without it).
    pub uuid: Option<String>,

    // Locket (bbs-reference §10). Without `locket_address` the lock is taken in the store
    // and cells register over HTTP (docs/locket.md).
    pub locket_address: Option<String>,
    pub locket_ca_cert_file: Option<PathBuf>,
    pub locket_client_cert_file: Option<PathBuf>,
    pub locket_client_key_file: Option<PathBuf>,
    /// Seconds; 0 leaves gRPC keepalive off.
    pub locket_client_keepalive_time: u64,
    pub locket_client_keepalive_timeout: u64,

    // Upstream keys accepted for compatibility and ignored here, so an upstream bbs.json
    // loads while a misspelt key still fails.
    pub require_ssl: Option<serde_json::Value>,
    pub advertise_url: Option<serde_json::Value>,
    pub access_log_path: Option<serde_json::Value>,
    pub max_idle_database_connections: Option<serde_json::Value>,
    pub max_database_connection_lifetime: Option<serde_json::Value>,
    pub enable_db_health_check: Option<serde_json::Value>,
    pub health_check_interval: Option<serde_json::Value>,
    pub health_check_timeout: Option<serde_json::Value>,
    pub health_check_failure_threshold: Option<serde_json::Value>,
    pub desired_lrp_creation_timeout: Option<serde_json::Value>,
    pub debug_lrp_start_heartbeats: Option<serde_json::Value>,
    pub loggregator: Option<serde_json::Value>,
    pub advanced_metrics: Option<serde_json::Value>,
    pub redact_secrets: Option<serde_json::Value>,
    pub redact_patterns: Option<serde_json::Value>,
    pub time_format: Option<serde_json::Value>,
    pub max_data_string_length: Option<serde_json::Value>,
    pub locks_locket_enabled: Option<serde_json::Value>,
    pub cell_registrations_locket_enabled: Option<serde_json::Value>,
}

impl Settings {
    /// Names of the ignored upstream keys that are set, for a start-up log line.
    pub fn ignored_keys(&self) -> Vec<&'static str> {
        let all: [(&'static str, bool); 21] = [
            (
                "etcd_client_session_cache_size",
                self.etcd_client_session_cache_size.is_some(),
            ),
            (
                "etcd_max_idle_conns_per_host",
                self.etcd_max_idle_conns_per_host.is_some(),
            ),
            ("require_ssl", self.require_ssl.is_some()),
            ("advertise_url", self.advertise_url.is_some()),
            ("access_log_path", self.access_log_path.is_some()),
            (
                "max_idle_database_connections",
                self.max_idle_database_connections.is_some(),
            ),
            (
                "max_database_connection_lifetime",
                self.max_database_connection_lifetime.is_some(),
            ),
            (
                "enable_db_health_check",
                self.enable_db_health_check.is_some(),
            ),
            (
                "health_check_interval",
                self.health_check_interval.is_some(),
            ),
            ("health_check_timeout", self.health_check_timeout.is_some()),
            (
                "health_check_failure_threshold",
                self.health_check_failure_threshold.is_some(),
            ),
            (
                "desired_lrp_creation_timeout",
                self.desired_lrp_creation_timeout.is_some(),
            ),
            (
                "debug_lrp_start_heartbeats",
                self.debug_lrp_start_heartbeats.is_some(),
            ),
            ("loggregator", self.loggregator.is_some()),
            ("advanced_metrics", self.advanced_metrics.is_some()),
            ("redact_secrets", self.redact_secrets.is_some()),
            ("redact_patterns", self.redact_patterns.is_some()),
            ("time_format", self.time_format.is_some()),
            (
                "max_data_string_length",
                self.max_data_string_length.is_some(),
            ),
            ("locks_locket_enabled", self.locks_locket_enabled.is_some()),
            (
                "cell_registrations_locket_enabled",
                self.cell_registrations_locket_enabled.is_some(),
            ),
        ];
        all.into_iter()
            .filter(|(_, set)| *set)
            .map(|(k, _)| k)
            .collect()
    }
}

/// Where the embedded default store lives when no connection string is given.
pub const DEFAULT_SQLITE_PATH: &str = "bbs-data/bbs.sqlite3";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen_address: "127.0.0.1:8889".into(),
            health_address: "127.0.0.1:8890".into(),
            debug_address: "127.0.0.1:17017".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            max_request_body_bytes: 8 * 1024 * 1024,
            max_pending_requests: 4096,
            database_driver: "sqlite".into(),
            database_connection_string: String::new(),
            sql_ca_cert_file: None,
            sql_enable_identity_verification: false,
            max_open_database_connections: 0,
            etcd_key_prefix: String::new(),
            etcd_ca_file: None,
            etcd_cert_file: None,
            etcd_key_file: None,
            etcd_cluster_urls: Vec::new(),
            etcd_client_session_cache_size: None,
            etcd_max_idle_conns_per_host: None,
            event_retention_count: 10_000,
            event_retention_duration: Duration::from_secs(300),
            event_subscriber_buffer: 1024,
            actor_mailbox_capacity: 1024,
            storage_actors: 0,
            active_key_label: None,
            encryption_keys: BTreeMap::new(),
            encryption_write_format: "xchacha20-poly1305".into(),
            auctioneer_address: None,
            auctioneer_ca_cert: None,
            auctioneer_client_cert: None,
            auctioneer_client_key: None,
            auctioneer_require_tls: false,
            rep_ca_cert: None,
            rep_client_cert: None,
            rep_client_key: None,
            rep_client_session_cache_size: 0,
            communication_timeout: Duration::from_secs(10),
            converge_repeat_interval: Duration::from_secs(30),
            kick_task_duration: Duration::from_secs(30),
            expire_pending_task_duration: Duration::from_secs(30 * 60),
            expire_completed_task_duration: Duration::from_secs(120),
            convergence_workers: 20,
            update_workers: 1000,
            task_callback_workers: 1000,
            max_task_retries: 3,
            report_interval: Duration::from_secs(60),
            lock_ttl: Duration::from_secs(15),
            lock_retry_interval: Duration::from_secs(5),
            db_connection_timeout: Duration::from_secs(600),
            db_read_timeout: Duration::from_secs(600),
            db_write_timeout: Duration::from_secs(600),
            log_level: "info".into(),
            session_name: "bbs".into(),
            uuid: None,
            locket_address: None,
            locket_ca_cert_file: None,
            locket_client_cert_file: None,
            locket_client_key_file: None,
            locket_client_keepalive_time: 0,
            locket_client_keepalive_timeout: 0,
            require_ssl: None,
            advertise_url: None,
            access_log_path: None,
            max_idle_database_connections: None,
            max_database_connection_lifetime: None,
            enable_db_health_check: None,
            health_check_interval: None,
            health_check_timeout: None,
            health_check_failure_threshold: None,
            desired_lrp_creation_timeout: None,
            debug_lrp_start_heartbeats: None,
            loggregator: None,
            advanced_metrics: None,
            redact_secrets: None,
            redact_patterns: None,
            time_format: None,
            max_data_string_length: None,
            locks_locket_enabled: None,
            cell_registrations_locket_enabled: None,
        }
    }
}

/// Keys that can be overridden from the environment as `BBS_<KEY>`.
const ENV_KEYS: &[&str] = &[
    "listen_address",
    "health_address",
    "debug_address",
    "ca_file",
    "cert_file",
    "key_file",
    "max_request_body_bytes",
    "max_pending_requests",
    "database_driver",
    "database_connection_string",
    "sql_ca_cert_file",
    "sql_enable_identity_verification",
    "max_open_database_connections",
    "etcd_key_prefix",
    "etcd_ca_file",
    "etcd_cert_file",
    "etcd_key_file",
    "actor_mailbox_capacity",
    "event_retention_count",
    "event_retention_duration",
    "event_subscriber_buffer",
    "storage_actors",
    "active_key_label",
    "encryption_write_format",
    "auctioneer_address",
    "auctioneer_require_tls",
    "communication_timeout",
    "db_read_timeout",
    "db_write_timeout",
    "converge_repeat_interval",
    "kick_task_duration",
    "expire_pending_task_duration",
    "expire_completed_task_duration",
    "convergence_workers",
    "update_workers",
    "task_callback_workers",
    "max_task_retries",
    "report_interval",
    "log_level",
    "session_name",
    "uuid",
    "lock_ttl",
    "lock_retry_interval",
    "locket_address",
    "locket_ca_cert_file",
    "locket_client_cert_file",
    "locket_client_key_file",
];

impl Settings {
    /// Loads `path` (if any) with `BBS_*` overrides from `env`, then validates.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            let format = match path.extension().and_then(|e| e.to_str()) {
                Some("toml") => config::FileFormat::Toml,
                _ => config::FileFormat::Json,
            };
            builder = builder.add_source(config::File::from(path).format(format));
        }
        Self::build(builder, env)
    }

    /// Settings from a configuration's text rather than its file (`toml` or JSON), with the
    /// same `BBS_*` overrides and checks as [`Settings::load`].
    pub fn from_text(
        text: &str,
        toml: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let format = if toml {
            config::FileFormat::Toml
        } else {
            config::FileFormat::Json
        };
        Self::build(
            config::Config::builder().add_source(config::File::from_str(text, format)),
            env,
        )
    }

    fn build(
        builder: config::ConfigBuilder<config::builder::DefaultState>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut overrides = std::collections::HashMap::new();
        for (name, value) in env {
            let Some(key) = name.strip_prefix("BBS_") else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if !ENV_KEYS.contains(&key.as_str()) {
                return Err(ConfigError(format!(
                    "unknown environment override `{name}`: no configuration key `{key}` can be \
                     set from the environment"
                )));
            }
            overrides.insert(key, value);
        }
        let built = builder
            .add_source(config::Environment::default().source(Some(overrides)))
            .build()
            .map_err(|e| ConfigError(format!("cannot read the configuration: {e}")))?;
        let settings: Settings = built
            .try_deserialize()
            .map_err(|e| ConfigError(describe_deserialize_error(&e.to_string())))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("listen_address", &self.listen_address),
            ("health_address", &self.health_address),
        ] {
            parse_address(key, value)?;
        }
        if !self.debug_address.is_empty() {
            parse_address("debug_address", &self.debug_address)?;
        }
        self.backend()?;
        self.etcd_v2()?;
        if !matches!(
            self.log_level.as_str(),
            "debug" | "info" | "warn" | "error" | "fatal"
        ) {
            return Err(bad(
                "log_level",
                format!(
                    "{:?} is not one of debug, info, warn, error, fatal",
                    self.log_level
                ),
            ));
        }
        for (key, value) in [
            ("convergence_workers", self.convergence_workers),
            ("update_workers", self.update_workers),
            ("task_callback_workers", self.task_callback_workers),
        ] {
            if value == 0 {
                return Err(bad(key, "must be greater than 0"));
            }
        }
        if self.event_subscriber_buffer == 0 {
            return Err(bad("event_subscriber_buffer", "must be greater than 0"));
        }
        if self.actor_mailbox_capacity == 0 {
            return Err(bad("actor_mailbox_capacity", "must be greater than 0"));
        }
        if self.max_request_body_bytes < 1024 {
            return Err(bad("max_request_body_bytes", "must be at least 1024"));
        }
        if self.report_interval.is_zero() {
            return Err(bad("report_interval", "must be greater than 0"));
        }
        for label in self.encryption_keys.keys() {
            if label.is_empty() || label.len() > 127 || label.contains(':') {
                return Err(bad(
                    "encryption_keys",
                    format!("label {label:?} must be 1 to 127 bytes with no ':'"),
                ));
            }
        }
        if let Some(active) = &self.active_key_label {
            if !self.encryption_keys.contains_key(active) {
                return Err(bad(
                    "active_key_label",
                    format!("{active:?} is not a label in encryption_keys"),
                ));
            }
        }
        if !self.encryption_keys.is_empty() && self.active_key_label.is_none() {
            return Err(bad(
                "active_key_label",
                "required when encryption_keys are set",
            ));
        }
        self.write_format()?;
        // Like upstream, a shared store needs keys; only the embedded default may run without.
        if self.encryption_keys.is_empty() && self.backend()? != Backend::Sqlite {
            return Err(bad(
                "encryption_keys",
                format!(
                    "required with database_driver {} (records are encrypted at rest; see docs/encryption.md)",
                    self.database_driver
                ),
            ));
        }
        self.key_ring()?;
        self.api_tls()?;
        self.outbound_tls()?;
        for (key, value) in [
            ("kick_task_duration", self.kick_task_duration),
            ("converge_repeat_interval", self.converge_repeat_interval),
            (
                "expire_pending_task_duration",
                self.expire_pending_task_duration,
            ),
            (
                "expire_completed_task_duration",
                self.expire_completed_task_duration,
            ),
        ] {
            if value.is_zero() {
                return Err(bad(key, "must be greater than 0"));
            }
        }
        if self.storage_actors > 1024 {
            return Err(bad("storage_actors", "must be at most 1024"));
        }
        if self.max_open_database_connections > 10_000 {
            return Err(bad(
                "max_open_database_connections",
                "must be at most 10000",
            ));
        }
        self.store_config()?;
        if self.lock_ttl < Duration::from_secs(1) {
            return Err(bad(
                "lock_ttl",
                "must be at least 1s (it is sent in whole seconds)",
            ));
        }
        if self.lock_retry_interval.is_zero() {
            return Err(bad("lock_retry_interval", "must be greater than 0"));
        }
        self.locket_client()?;
        Ok(())
    }

    /// The locket client's settings when `locket_address` is set; its certificates are read
    /// now, so a bad one stops start-up naming its key.
    pub fn locket_client(&self) -> Result<Option<bbs_locket::client::ClientConfig>, ConfigError> {
        let Some(address) = self.locket_address.as_deref().filter(|a| !a.is_empty()) else {
            return Ok(None);
        };
        let config = bbs_locket::client::ClientConfig {
            address: address.to_owned(),
            ca_cert_file: self.locket_ca_cert_file.clone(),
            client_cert_file: self.locket_client_cert_file.clone(),
            client_key_file: self.locket_client_key_file.clone(),
            keepalive_time: self.locket_client_keepalive_time,
            keepalive_timeout: self.locket_client_keepalive_timeout,
        };
        bbs_locket::client::channel_check(&config).map_err(|e| bad(e.key, e.reason))?;
        Ok(Some(config))
    }

    /// The BBS lock's owner, timing and retry (bbs-reference §10).
    pub fn lock_settings(&self, owner: String) -> bbs_locket::runner::LockSettings {
        bbs_locket::runner::LockSettings {
            owner,
            ttl: self.lock_ttl,
            retry_interval: self.lock_retry_interval,
        }
    }

    pub fn write_format(&self) -> Result<bbs_actors::keyring::WriteFormat, ConfigError> {
        match self.encryption_write_format.as_str() {
            "xchacha20-poly1305" => Ok(bbs_actors::keyring::WriteFormat::XChaCha20Poly1305),
            "aes-256-gcm" => Ok(bbs_actors::keyring::WriteFormat::UpstreamAesGcm),
            other => Err(bad(
                "encryption_write_format",
                format!("{other:?} is not one of xchacha20-poly1305, aes-256-gcm"),
            )),
        }
    }

    /// The key ring, when keys are configured.
    pub fn key_ring(&self) -> Result<Option<bbs_actors::keyring::KeyRing>, ConfigError> {
        let Some(active) = &self.active_key_label else {
            return Ok(None);
        };
        bbs_actors::keyring::KeyRing::new(&self.encryption_keys, active, self.write_format()?)
            .map(Some)
            .map_err(|e| bad("encryption_keys", e))
    }

    /// The etcd-era cluster from `etcd_cluster_urls`, checked as upstream checked it: http or
    /// https URLs, one scheme for all, and a client certificate and key for https.
    pub fn etcd_v2(&self) -> Result<Option<crate::migrate::etcd_v2::EtcdV2Config>, ConfigError> {
        if self.etcd_cluster_urls.is_empty() {
            return Ok(None);
        }
        let mut scheme: Option<String> = None;
        for raw in &self.etcd_cluster_urls {
            let parsed = url::Url::parse(raw)
                .map_err(|e| bad("etcd_cluster_urls", format!("{raw:?} is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad(
                    "etcd_cluster_urls",
                    format!("{raw:?} is neither http nor https"),
                ));
            }
            match &scheme {
                Some(s) if s != parsed.scheme() => {
                    return Err(bad(
                        "etcd_cluster_urls",
                        "the URLs mix http and https; use one scheme",
                    ))
                }
                _ => scheme = Some(parsed.scheme().to_owned()),
            }
        }
        let identity = match (&self.etcd_cert_file, &self.etcd_key_file) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => None,
        };
        if scheme.as_deref() == Some("https") && identity.is_none() {
            return Err(bad(
                "etcd_cert_file",
                "etcd_cert_file and etcd_key_file are required with https etcd_cluster_urls",
            ));
        }
        Ok(Some(crate::migrate::etcd_v2::EtcdV2Config {
            urls: self.etcd_cluster_urls.clone(),
            ca: self.etcd_ca_file.clone(),
            identity,
        }))
    }

    pub fn backend(&self) -> Result<Backend, ConfigError> {
        Backend::parse(&self.database_driver).ok_or_else(|| {
            bad(
                "database_driver",
                format!(
                    "{:?} is not one of sqlite, mysql, postgres, etcd",
                    self.database_driver
                ),
            )
        })
    }

    pub fn store_config(&self) -> Result<StoreConfig, ConfigError> {
        let backend = self.backend()?;
        let connection_string = match (backend, self.database_connection_string.trim()) {
            (Backend::Sqlite, "") => DEFAULT_SQLITE_PATH.to_owned(),
            (_, "") => {
                return Err(bad(
                    "database_connection_string",
                    format!("required with database_driver {backend}"),
                ))
            }
            (_, s) => s.to_owned(),
        };
        Ok(StoreConfig {
            backend,
            connection_string,
            max_connections: self.pool_size() as u32,
            etcd_root: self.etcd_key_prefix.clone(),
            tls: self.store_tls()?,
        })
    }

    /// Connections in the SQL pool, and storage actors unless set apart.
    pub fn pool_size(&self) -> usize {
        match self.max_open_database_connections {
            0 => 16,
            n => n as usize,
        }
    }

    pub fn storage_actors(&self) -> usize {
        match self.storage_actors {
            0 => self.pool_size(),
            n => n,
        }
    }
}

/// serde lists every known key after an unknown one; name the key and leave the list out.
fn describe_deserialize_error(message: &str) -> String {
    match message.split_once(", expected one of") {
        Some((head, _)) if head.starts_with("unknown field") => format!(
            "invalid configuration: {}",
            head.replacen("unknown field", "unknown configuration key", 1)
        ),
        _ => format!("invalid configuration: {message}"),
    }
}

fn parse_address(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|e| bad(key, format!("{value:?} is not host:port ({e})")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(contents: &str, extension: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new()
            .suffix(extension)
            .tempfile()
            .unwrap();
        f.write_all(contents.as_bytes()).unwrap();
        f
    }

    fn load(contents: &str) -> Result<Settings, ConfigError> {
        let f = file(contents, ".json");
        Settings::load(Some(f.path()), Vec::new())
    }

    #[test]
    fn etcd_cluster_urls_are_checked_as_upstream_checks_them() {
        let config = load(r#"{"etcd_cluster_urls": ["http://a:4001", "http://b:4001/"]}"#)
            .unwrap()
            .etcd_v2()
            .unwrap()
            .unwrap();
        assert_eq!(config.urls, ["http://a:4001", "http://b:4001/"]);
        assert_eq!(load("{}").unwrap().etcd_v2().unwrap(), None);
        for (json, says) in [
            (
                r#"{"etcd_cluster_urls": ["http://a:4001", "https://b:4001"]}"#,
                "invalid configuration key `etcd_cluster_urls`: the URLs mix http and https; use one scheme",
            ),
            (
                r#"{"etcd_cluster_urls": ["ftp://a"]}"#,
                "invalid configuration key `etcd_cluster_urls`: \"ftp://a\" is neither http nor https",
            ),
            (
                r#"{"etcd_cluster_urls": ["not a url"]}"#,
                "invalid configuration key `etcd_cluster_urls`: \"not a url\" is not a URL",
            ),
            (
                r#"{"etcd_cluster_urls": ["https://a:4001"]}"#,
                "invalid configuration key `etcd_cert_file`: etcd_cert_file and etcd_key_file are required with https etcd_cluster_urls",
            ),
        ] {
            let e = load(json).unwrap_err();
            assert!(e.0.contains(says), "{json}: {e}");
        }
        let ignored =
            load(r#"{"etcd_client_session_cache_size": 10, "etcd_max_idle_conns_per_host": 5}"#)
                .unwrap()
                .ignored_keys();
        assert!(
            ignored.contains(&"etcd_client_session_cache_size"),
            "{ignored:?}"
        );
        assert!(
            ignored.contains(&"etcd_max_idle_conns_per_host"),
            "{ignored:?}"
        );
    }

    #[test]
    fn no_config_means_sqlite_on_the_default_port() {
        let s = Settings::load(None, Vec::new()).unwrap();
        assert_eq!(s.listen_address, "127.0.0.1:8889");
        let store = s.store_config().unwrap();
        assert_eq!(store.backend, Backend::Sqlite);
        assert_eq!(store.connection_string, DEFAULT_SQLITE_PATH);
    }

    #[test]
    fn reads_an_upstream_bbs_json() {
        let s = load(
            r#"{
              "listen_address": "0.0.0.0:8889",
              "health_address": "127.0.0.1:8890",
              "database_driver": "mysql",
              "database_connection_string": "diego:pw@tcp(db:3306)/diego",
              "max_open_database_connections": 200,
              "max_idle_database_connections": 200,
              "expire_completed_task_duration": "2m",
              "active_key_label": "key1",
              "encryption_keys": {"key1": "a passphrase"},
              "convergence_workers": 20,
              "converge_repeat_interval": "30s",
              "expire_pending_task_duration": "30m",
              "loggregator": {"loggregator_api_port": 3458},
              "uuid": "bbs-0"
            }"#,
        )
        .unwrap();
        assert_eq!(s.backend().unwrap(), Backend::Mysql);
        assert_eq!(s.pool_size(), 200);
        assert_eq!(s.expire_pending_task_duration, Duration::from_secs(1800));
        assert_eq!(
            s.ignored_keys(),
            ["max_idle_database_connections", "loggregator"]
        );
    }

    #[test]
    fn the_deploy_configs_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        for name in ["sqlite.json", "mysql.json", "postgres.json", "etcd.json"] {
            Settings::load(Some(&dir.join(name)), Vec::new())
                .unwrap_or_else(|e| panic!("deploy/{name}: {e}"));
        }
        let locket = std::fs::read_to_string(dir.join("locket.json")).unwrap();
        let locket: crate::locket_server::LocketSettings = serde_json::from_str(&locket).unwrap();
        assert_eq!(locket.database_driver, "mysql");
        locket.store_config().unwrap();
    }

    #[test]
    fn locket_address_needs_its_certificates() {
        let e = load(r#"{"locket_address": "locket.service.cf.internal:8891"}"#).unwrap_err();
        assert_eq!(
            e.0,
            "invalid configuration key `locket_ca_cert_file`: must be set: locket speaks only mutual TLS"
        );
        let e = load(r#"{"lock_ttl": "500ms"}"#).unwrap_err();
        assert_eq!(
            e.0,
            "invalid configuration key `lock_ttl`: must be at least 1s (it is sent in whole seconds)"
        );
        let e = load(r#"{"lock_retry_interval": "0s"}"#).unwrap_err();
        assert_eq!(
            e.0,
            "invalid configuration key `lock_retry_interval`: must be greater than 0"
        );
    }

    #[test]
    fn toml_works_too() {
        let f = file(
            "database_driver = \"postgres\"\ndatabase_connection_string = \"postgres://x@h/db\"\nactive_key_label = \"k\"\n[encryption_keys]\nk = \"p\"\n",
            ".toml",
        );
        let s = Settings::load(Some(f.path()), Vec::new()).unwrap();
        assert_eq!(s.backend().unwrap(), Backend::Postgres);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = load(r#"{"listen_adress": "127.0.0.1:1"}"#).unwrap_err();
        assert_eq!(
            e.0,
            "invalid configuration: unknown configuration key `listen_adress`"
        );
    }

    #[test]
    fn a_bad_value_is_named() {
        let e = load(r#"{"database_driver": "oracle"}"#).unwrap_err();
        assert!(e.0.contains("database_driver"), "{e}");
        let e = load(r#"{"listen_address": "nowhere"}"#).unwrap_err();
        assert!(e.0.contains("listen_address"), "{e}");
        let e = load(r#"{"convergence_workers": 0}"#).unwrap_err();
        assert!(e.0.contains("convergence_workers"), "{e}");
        let e = load(r#"{"max_task_retries": "many"}"#).unwrap_err();
        assert!(e.0.contains("max_task_retries"), "{e}");
        let e = load(r#"{"converge_repeat_interval": "soon"}"#).unwrap_err();
        assert!(e.0.contains("converge_repeat_interval"), "{e}");
        let e = load(r#"{"active_key_label": "k2", "encryption_keys": {"k1": "p"}}"#).unwrap_err();
        assert!(e.0.contains("active_key_label"), "{e}");
        let e = load(r#"{"database_driver": "postgres", "active_key_label": "k", "encryption_keys": {"k": "p"}}"#).unwrap_err();
        assert!(e.0.contains("database_connection_string"), "{e}");
        let e = load(
            r#"{"database_driver": "postgres", "database_connection_string": "postgres://h/d"}"#,
        )
        .unwrap_err();
        assert!(e.0.contains("encryption_keys"), "{e}");
        let e = load(r#"{"encryption_keys": {"k": "p"}}"#).unwrap_err();
        assert!(e.0.contains("active_key_label"), "{e}");
        let e = load(r#"{"encryption_write_format": "rot13"}"#).unwrap_err();
        assert!(e.0.contains("encryption_write_format"), "{e}");
        let e =
            load(r#"{"active_key_label": "a:b", "encryption_keys": {"a:b": "p"}}"#).unwrap_err();
        assert!(e.0.contains("encryption_keys"), "{e}");
        let e = load(r#"{"kick_task_duration": "0s"}"#).unwrap_err();
        assert!(e.0.contains("kick_task_duration"), "{e}");
        let e = load(r#"{"storage_actors": 5000}"#).unwrap_err();
        assert!(e.0.contains("storage_actors"), "{e}");
        let e = load(r#"{"cert_file": "/x.crt", "key_file": "/x.key"}"#).unwrap_err();
        assert!(
            e.0.contains("`ca_file`") && e.0.contains("missing: ca_file"),
            "{e}"
        );
        let e = load(r#"{"rep_client_cert": "/x.crt"}"#).unwrap_err();
        assert!(e.0.contains("rep_client_cert"), "{e}");
        let e = load("{ not json").unwrap_err();
        assert!(e.0.contains("cannot read"), "{e}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = Settings::load(Some(Path::new("/nonexistent/bbs.json")), Vec::new()).unwrap_err();
        assert!(e.0.contains("/nonexistent/bbs.json"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let f = file(
            r#"{"listen_address": "127.0.0.1:1111", "max_task_retries": 3}"#,
            ".json",
        );
        let env = vec![
            ("BBS_LISTEN_ADDRESS".to_owned(), "127.0.0.1:2222".to_owned()),
            ("BBS_MAX_TASK_RETRIES".to_owned(), "7".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let s = Settings::load(Some(f.path()), env).unwrap();
        assert_eq!(s.listen_address, "127.0.0.1:2222");
        assert_eq!(s.max_task_retries, 7);
    }

    #[test]
    fn an_unknown_environment_override_is_named() {
        let env = vec![("BBS_LISTEN_ADRESS".to_owned(), "x".to_owned())];
        let e = Settings::load(None, env).unwrap_err();
        assert!(e.0.contains("BBS_LISTEN_ADRESS"), "{e}");
    }
}
