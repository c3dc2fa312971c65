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
    /// TLS to the store: `sql_ca_cert_file` (with `sql_enable_identity_verification`) for
    /// MySQL and PostgreSQL, `etcd_ca_file` (with `etcd_cert_file` and `etcd_key_file` for a
    /// client certificate) for etcd. Each file is checked here, so a bad one is named.
    pub fn store_tls(&self) -> Result<bbs_store::StoreTls, ConfigError> {
        if let Some(ca) = &self.sql_ca_cert_file {
            PemFile::new("sql_ca_cert_file", ca)
                .roots()
                .map_err(tls_error)?;
        }
        let etcd_identity = all_or_none([
            ("etcd_cert_file", &self.etcd_cert_file),
            ("etcd_key_file", &self.etcd_key_file),
        ])?;
        if let Some(ca) = &self.etcd_ca_file {
            let ca = PemFile::new("etcd_ca_file", ca);
            let identity = etcd_identity.map(|[cert, key]| Identity {
                certificate: cert,
                private_key: key,
            });
            bbs_tls::client(ServerCheck::Full(ca), identity).map_err(tls_error)?;
        } else if etcd_identity.is_some() {
            return Err(bad(
                "etcd_ca_file",
                "required with etcd_cert_file and etcd_key_file",
            ));
        }
        Ok(bbs_store::StoreTls {
            sql_ca: self.sql_ca_cert_file.clone(),
            sql_verify_identity: self.sql_enable_identity_verification,
            etcd_ca: self.etcd_ca_file.clone(),
            etcd_identity: self.etcd_cert_file.clone().zip(self.etcd_key_file.clone()),
        })
    }

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
        let client =
            |files: Option<[PemFile; 3]>| -> Result<Option<Arc<ClientConfig>>, ConfigError> {
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
