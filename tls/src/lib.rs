//! TLS as Diego's components set it up (bbs-reference §1.1, tlsconfig's internal-service
//! defaults): TLS 1.2 and 1.3 only, TLS 1.2 limited to ECDHE-RSA with AES-GCM, and mutual
//! TLS wherever upstream requires it. Every file comes with the config key that named it, so
//! a bad file stops start-up with a message an operator can act on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

pub use rustls;

/// A TLS file or setting that cannot be used; `key()` names the config key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        key: String,
        path: PathBuf,
        reason: String,
    },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { key: String, path: PathBuf },
    #[error("{path} holds no PEM private key")]
    NoPrivateKey { key: String, path: PathBuf },
    #[error("{reason}")]
    Invalid { key: String, reason: String },
}

impl TlsError {
    /// The config key the error is about.
    pub fn key(&self) -> &str {
        match self {
            TlsError::Unreadable { key, .. }
            | TlsError::NoCertificate { key, .. }
            | TlsError::NoPrivateKey { key, .. }
            | TlsError::Invalid { key, .. } => key,
        }
    }
}

/// A PEM file and the config key that names it.
#[derive(Clone, Copy, Debug)]
pub struct PemFile<'a> {
    pub key: &'a str,
    pub path: &'a Path,
}

impl<'a> PemFile<'a> {
    pub fn new(key: &'a str, path: &'a Path) -> Self {
        PemFile { key, path }
    }

    fn unreadable(&self, reason: impl std::fmt::Display) -> TlsError {
        TlsError::Unreadable {
            key: self.key.to_owned(),
            path: self.path.to_owned(),
            reason: reason.to_string(),
        }
    }

    /// Every certificate in the file, in order.
    pub fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        std::fs::metadata(self.path).map_err(|e| self.unreadable(e))?;
        let certs = CertificateDer::pem_file_iter(self.path)
            .map_err(|e| self.unreadable(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.unreadable(e))?;
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                key: self.key.to_owned(),
                path: self.path.to_owned(),
            });
        }
        Ok(certs)
    }

    /// The file's private key (PKCS#8, PKCS#1 or SEC1).
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        std::fs::metadata(self.path).map_err(|e| self.unreadable(e))?;
        PrivateKeyDer::from_pem_file(self.path).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey {
                key: self.key.to_owned(),
                path: self.path.to_owned(),
            },
            other => self.unreadable(other),
        })
    }

    /// The file's certificates as trust anchors.
    pub fn roots(&self) -> Result<RootCertStore, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in self.certificates()? {
            roots.add(cert).map_err(|e| TlsError::Invalid {
                key: self.key.to_owned(),
                reason: format!(
                    "{} is not a usable CA certificate: {e}",
                    self.path.display()
                ),
            })?;
        }
        Ok(roots)
    }
}

/// A certificate chain and its private key, e.g. `cert_file` and `key_file`.
#[derive(Clone, Copy, Debug)]
pub struct Identity<'a> {
    pub certificate: PemFile<'a>,
    pub private_key: PemFile<'a>,
}

impl Identity<'_> {
    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        Ok((
            self.certificate.certificates()?,
            self.private_key.private_key()?,
        ))
    }

    fn mismatch(&self, e: rustls::Error) -> TlsError {
        TlsError::Invalid {
            key: self.private_key.key.to_owned(),
            reason: format!(
                "{} does not go with {} ({}): {e}",
                self.private_key.path.display(),
                self.certificate.key,
                self.certificate.path.display()
            ),
        }
    }
}

/// Upstream's suites: every TLS 1.3 suite, and for TLS 1.2 only ECDHE-RSA with AES-256-GCM
/// or AES-128-GCM (so an ECDSA key serves TLS 1.3 only, as it does upstream).
pub fn provider() -> Arc<CryptoProvider> {
    let base = ring::default_provider();
    let cipher_suites = base
        .cipher_suites
        .iter()
        .copied()
        .filter(|suite| match suite {
            rustls::SupportedCipherSuite::Tls13(_) => true,
            rustls::SupportedCipherSuite::Tls12(_) => matches!(
                suite.suite(),
                rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
                    | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
            ),
        })
        .collect();
    Arc::new(CryptoProvider {
        cipher_suites,
        ..base
    })
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn invalid(key: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        key: key.to_owned(),
        reason: e.to_string(),
    }
}

/// A server that requires and verifies a client certificate signed by `client_ca`
/// (upstream's RequireAndVerifyClientCert).
pub fn mutual_server(client_ca: PemFile, identity: Identity) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let roots = Arc::new(client_ca.roots()?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| invalid(client_ca.key, e))?;
    let (certs, key) = identity.load()?;
    ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| invalid(identity.certificate.key, e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| identity.mismatch(e))
}

/// How a client checks the server it connects to.
#[derive(Clone, Copy, Debug)]
pub enum ServerCheck<'a> {
    /// The chain against `ca` and the host name (the usual check).
    Full(PemFile<'a>),
    /// The chain against `ca`, but not the host name (upstream's SQL connections without
    /// `sql_enable_identity_verification`).
    ChainOnly(PemFile<'a>),
}

/// A client that checks its server as `check` says and, with `identity`, presents it.
pub fn client(check: ServerCheck, identity: Option<Identity>) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let (ca, chain_only) = match check {
        ServerCheck::Full(ca) => (ca, false),
        ServerCheck::ChainOnly(ca) => (ca, true),
    };
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(ca.roots()?), provider.clone())
            .build()
            .map_err(|e| invalid(ca.key, e))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(VERSIONS)
        .map_err(|e| invalid(ca.key, e))?;
    let builder = if chain_only {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(verifier)))
    } else {
        builder.with_webpki_verifier(verifier)
    };
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => {
            let (certs, key) = identity.load()?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| identity.mismatch(e))
        }
    }
}

/// Verifies the chain and signatures as the inner verifier does, and accepts any host name.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
