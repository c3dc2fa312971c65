//! The HTTP clients the BBS calls other components with (auctioneer, reps, task callbacks),
//! each with the TLS upstream gives it.

use std::sync::Arc;
use std::time::Duration;

use bbs_tls::rustls::ClientConfig;

/// TLS for the outbound clients; `None` where the configuration sets none.
#[derive(Clone, Debug, Default)]
pub struct OutboundTls {
    /// Mutual TLS to reps (`rep_*`); with it only a cell's `https` rep URL is used.
    pub rep: Option<Arc<ClientConfig>>,
    /// Mutual TLS to the auctioneer (`auctioneer_*`).
    pub auctioneer: Option<Arc<ClientConfig>>,
    /// Without it, a failed TLS call to the auctioneer is tried again over plain HTTP.
    pub auctioneer_require_tls: bool,
    /// Completion callbacks: the server's own certificate, trusting `ca_file`.
    pub callbacks: Option<Arc<ClientConfig>>,
}

/// A client with `timeout` (zero: none) and, when given, `tls` for `https` URLs; an error
/// names `keys`, the configuration the TLS came from (a client silently without its
/// certificates would be worse than not starting).
pub fn http_client(
    timeout: Duration,
    tls: Option<&Arc<ClientConfig>>,
    keys: &str,
) -> Result<reqwest::Client, crate::BbsError> {
    let mut builder = reqwest::Client::builder();
    if !timeout.is_zero() {
        builder = builder.timeout(timeout);
    }
    if let Some(tls) = tls {
        builder = builder.use_preconfigured_tls((**tls).clone());
    }
    builder.build().map_err(|e| {
        crate::BbsError::Unavailable(format!("cannot make the HTTP client for {keys}: {e}"))
    })
}
