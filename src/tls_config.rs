//! The TLS keys of the configuration (upstream's names, bbs-reference §8) turned into TLS
//! settings: each group of files is all set or all unset, and every file is read and checked
//! at start-up, so a bad one stops the server with the key to fix.

use std::path::PathBuf;
use std::sync::Arc;

use bbs_actors::OutboundTls;
use bbs_tls::rustls::{ClientConfig, ServerConfig};
use bbs_tls::{Identity, PemFile, ServerCheck, TlsError};

use crate::config::{bad, ConfigError, Settings};

fn tls_error(e: TlsError) -> ConfigError {
    bad(e.key(), &e)
}

/// The files of one group when all are set, `None` when none is, else an error naming the
/// missing ones.
fn all_or_none<'a, const N: usize>(
    group: [(&'a str, &'a Option<PathBuf>); N],
) -> Result<Option<[PemFile<'a>; N]>, ConfigError> {
    let missing: Vec<&str> = group
        .iter()
        .filter(|(_, path)| path.is_none())
        .map(|(key, _)| *key)
        .collect();
    if missing.len() == N {
        return Ok(None);
    }
    if let Some(first) = missing.first() {
        let set: Vec<&str> = group
            .iter()
            .filter(|(_, path)| path.is_some())
            .map(|(key, _)| *key)
            .collect();
        return Err(bad(
            first,
            format!(
                "must be set together with {} (missing: {})",
                set.join(", "),
                missing.join(", ")
            ),
        ));
    }
    Ok(Some(group.map(|(key, path)| {
        PemFile::new(key, path.as_deref().expect("checked above"))
    })))
}

impl Settings {
    fn api_files(&self) -> Result<Option<[PemFile<'_>; 3]>, ConfigError> {
        all_or_none([
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ])
    }

    /// The API's TLS: with `ca_file`, `cert_file` and `key_file`, HTTPS only, client
    /// certificates signed by `ca_file` required; with none of them, plain HTTP (the
    /// embedded default; start-up logs a warning).
    pub fn api_tls(&self) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
        let Some([ca, cert, key]) = self.api_files()? else {
            return Ok(None);
        };
        let identity = Identity {
            certificate: cert,
            private_key: key,
        };
        bbs_tls::mutual_server(ca, identity)
            .map(|config| Some(Arc::new(config)))
            .map_err(tls_error)
    }

    /// The outbound clients' TLS, each configured as upstream configures it.
    pub fn outbound_tls(&self) -> Result<OutboundTls, ConfigError> {
        let client = |files: Option<[PemFile; 3]>| -> Result<Option<Arc<ClientConfig>>, ConfigError> {
            let Some([ca, cert, key]) = files else {
                return Ok(None);
            };
            let identity = Identity {
                certificate: cert,
                private_key: key,
            };
            bbs_tls::client(ServerCheck::Full(ca), Some(identity))
                .map(|config| Some(Arc::new(config)))
                .map_err(tls_error)
        };
        let rep = client(all_or_none([
            ("rep_ca_cert", &self.rep_ca_cert),
            ("rep_client_cert", &self.rep_client_cert),
            ("rep_client_key", &self.rep_client_key),
        ])?)?;
        let auctioneer = client(all_or_none([
            ("auctioneer_ca_cert", &self.auctioneer_ca_cert),
            ("auctioneer_client_cert", &self.auctioneer_client_cert),
            ("auctioneer_client_key", &self.auctioneer_client_key),
        ])?)?;
        if self.auctioneer_require_tls && auctioneer.is_none() {
            return Err(bad(
                "auctioneer_require_tls",
                "needs auctioneer_ca_cert, auctioneer_client_cert and auctioneer_client_key",
            ));
        }
        // Callbacks present the server's own certificate and trust `ca_file`, as upstream's.
        let callbacks = client(self.api_files()?)?;
        Ok(OutboundTls {
            rep,
            auctioneer,
            auctioneer_require_tls: self.auctioneer_require_tls,
            callbacks,
        })
    }
}
