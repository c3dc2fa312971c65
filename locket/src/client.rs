//! The gRPC client of a locket (ours or upstream's), with upstream's mutual TLS and keepalive
//! settings (locket's `ClientLocketConfig`).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::LocketResult;
use crate::models::locket_client::LocketClient;
use crate::models::*;
use crate::Locket;

/// Upstream's `locket_*` client keys.
#[derive(Clone, Debug, Default)]
pub struct ClientConfig {
    /// `locket_address`: host:port.
    pub address: String,
    pub ca_cert_file: Option<PathBuf>,
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// `locket_client_keepalive_time` / `_timeout`, in seconds; zero leaves keepalive off.
    pub keepalive_time: u64,
    pub keepalive_timeout: u64,
}

/// A problem with the client's configuration, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct ConfigError {
    pub key: &'static str,
    pub reason: String,
}

fn read(key: &'static str, path: &Option<PathBuf>) -> Result<Vec<u8>, ConfigError> {
    let path = path.as_ref().ok_or_else(|| ConfigError {
        key,
        reason: "must be set: locket speaks only mutual TLS".into(),
    })?;
    std::fs::read(path).map_err(|e| ConfigError {
        key,
        reason: format!("cannot read {}: {e}", path.display()),
    })
}

/// Reads and checks the certificates and address, so a bad one stops start-up naming its key.
pub fn channel_check(config: &ClientConfig) -> Result<(), ConfigError> {
    endpoint(config).map(|_| ())
}

fn endpoint(config: &ClientConfig) -> Result<Endpoint, ConfigError> {
    if config.address.is_empty() {
        return Err(ConfigError {
            key: "locket_address",
            reason: "must be set".into(),
        });
    }
    let ca = read("locket_ca_cert_file", &config.ca_cert_file)?;
    let cert = read("locket_client_cert_file", &config.client_cert_file)?;
    let key = read("locket_client_key_file", &config.client_key_file)?;
    let pem_error = |key: &'static str| {
        move |e: bbs_tls::TlsError| ConfigError {
            key,
            reason: e.to_string(),
        }
    };
    for (name, path) in [
        ("locket_ca_cert_file", &config.ca_cert_file),
        ("locket_client_cert_file", &config.client_cert_file),
    ] {
        if let Some(path) = path {
            bbs_tls::PemFile::new(name, path)
                .certificates()
                .map_err(pem_error(name))?;
        }
    }
    if let Some(path) = &config.client_key_file {
        bbs_tls::PemFile::new("locket_client_key_file", path)
            .private_key()
            .map_err(pem_error("locket_client_key_file"))?;
    }
    let host = match config.address.rsplit_once(':') {
        Some((host, _)) => host.trim_matches(['[', ']']).to_owned(),
        None => {
            return Err(ConfigError {
                key: "locket_address",
                reason: format!("{:?} is not host:port", config.address),
            })
        }
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(host);
    let invalid = |e: tonic::transport::Error| ConfigError {
        key: "locket_address",
        reason: e.to_string(),
    };
    let mut endpoint = Endpoint::from_shared(format!("https://{}", config.address))
        .map_err(invalid)?
        .connect_timeout(Duration::from_secs(10))
        .tls_config(tls)
        .map_err(invalid)?;
    if config.keepalive_time > 0 {
        endpoint = endpoint
            .http2_keep_alive_interval(Duration::from_secs(config.keepalive_time))
            .keep_alive_timeout(Duration::from_secs(config.keepalive_timeout.max(1)));
    }
    Ok(endpoint)
}

/// Builds a channel that connects on first use and reconnects by itself, so a locket that is
/// unreachable at start-up is simply retried. Needs a Tokio runtime.
pub fn channel(config: &ClientConfig) -> Result<Channel, ConfigError> {
    Ok(endpoint(config)?.connect_lazy())
}

/// Locket over gRPC; each call gives up after `timeout`.
#[derive(Clone)]
pub struct GrpcLocket {
    client: LocketClient<Channel>,
    timeout: Duration,
}

impl GrpcLocket {
    pub fn new(channel: Channel, timeout: Duration) -> Self {
        GrpcLocket {
            client: LocketClient::new(channel),
            timeout,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        // Upstream's clients tag each call so locket's logs can follow it.
        if let Ok(value) = uuid::Uuid::new_v4().to_string().parse() {
            request.metadata_mut().insert("uuid", value);
        }
        request
    }
}

#[async_trait]
impl Locket for GrpcLocket {
    async fn lock(&self, resource: &Resource, ttl_seconds: i64) -> LocketResult<()> {
        let request = self.request(LockRequest {
            resource: Some(resource.clone()),
            ttl_in_seconds: ttl_seconds,
        });
        self.client.clone().lock(request).await?;
        Ok(())
    }

    async fn release(&self, resource: &Resource) -> LocketResult<()> {
        let request = self.request(ReleaseRequest {
            resource: Some(resource.clone()),
        });
        self.client.clone().release(request).await?;
        Ok(())
    }

    async fn fetch(&self, key: &str) -> LocketResult<Resource> {
        let request = self.request(FetchRequest { key: key.into() });
        let response = self.client.clone().fetch(request).await?.into_inner();
        Ok(response.resource.unwrap_or_default())
    }

    async fn fetch_all(&self, type_code: TypeCode) -> LocketResult<Vec<Resource>> {
        #[allow(deprecated)]
        let request = self.request(FetchAllRequest {
            r#type: crate::rules::type_string(type_code as i32, ""),
            type_code: type_code as i32,
        });
        Ok(self
            .client
            .clone()
            .fetch_all(request)
            .await?
            .into_inner()
            .resources)
    }
}
