//! Test certificates, made at test time: one CA for the deployment, server certificates for
//! loopback (RSA for TLS 1.2's ECDHE-RSA suites, ECDSA for TLS 1.3), a client certificate,
//! and the bad ones (another CA's, an expired one), written as PEM files for the server's
//! config keys.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256,
};

/// A certificate and key as files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A deployment's certificates, in a directory that lives as long as this value.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    /// RSA server certificate for 127.0.0.1 and localhost.
    pub server: Pair,
    /// ECDSA P-256 server certificate for the same names.
    pub server_ecdsa: Pair,
    pub client: Pair,
    /// Signed by another CA.
    pub foreign_client: Pair,
    /// Signed by the CA, expired in 2020.
    pub expired_client: Pair,
    pub other_ca: PathBuf,
}

/// An RSA-2048 key, generated once per test binary.
fn rsa_key() -> KeyPair {
    use rsa::pkcs8::EncodePrivateKey;
    static DER: OnceLock<Vec<u8>> = OnceLock::new();
    let der = DER.get_or_init(|| {
        rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048)
            .expect("an RSA key")
            .to_pkcs8_der()
            .expect("PKCS#8")
            .as_bytes()
            .to_vec()
    });
    KeyPair::from_pkcs8_der_and_sign_algo(&der.as_slice().into(), &PKCS_RSA_SHA256)
        .expect("rcgen takes the RSA key")
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("a key")).expect("a CA")
}

struct Leaf<'a> {
    name: &'a str,
    sans: &'a [&'a str],
    usage: Vec<ExtendedKeyUsagePurpose>,
    expired: bool,
    serial: u64,
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write a PEM file");
    path
}

fn leaf(dir: &Path, leaf: Leaf, key: KeyPair, issuer: &CertifiedIssuer<'static, KeyPair>) -> Pair {
    let sans: Vec<String> = leaf.sans.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).expect("names");
    params
        .distinguished_name
        .push(DnType::CommonName, leaf.name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = leaf.usage;
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(leaf.serial.into());
    if leaf.expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2020, 1, 2);
    }
    let cert = params.signed_by(&key, issuer).expect("a certificate");
    Pair {
        cert: write(dir, &format!("{}.crt", leaf.name), &cert.pem()),
        key: write(dir, &format!("{}.key", leaf.name), &key.serialize_pem()),
    }
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("a temp dir");
        let d = dir.path();
        let authority = ca("bbs test CA");
        let other = ca("some other CA");
        let loopback: &[&str] = &["127.0.0.1", "localhost"];
        let server = |name, serial| Leaf {
            name,
            sans: loopback,
            // Client use too: the BBS presents its server certificate to callback receivers.
            usage: vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            expired: false,
            serial,
        };
        let client = |name, expired, serial| Leaf {
            name,
            sans: &[],
            usage: vec![ExtendedKeyUsagePurpose::ClientAuth],
            expired,
            serial,
        };
        let key = || KeyPair::generate().expect("a key");
        Pki {
            ca: write(d, "ca.crt", &authority.pem()),
            other_ca: write(d, "other-ca.crt", &other.pem()),
            server: leaf(d, server("server", 1), rsa_key(), &authority),
            server_ecdsa: leaf(d, server("server-ecdsa", 2), key(), &authority),
            client: leaf(d, client("client", false, 3), key(), &authority),
            foreign_client: leaf(d, client("foreign-client", false, 4), key(), &other),
            expired_client: leaf(d, client("expired-client", true, 5), key(), &authority),
            dir,
        }
    }

    /// A client config presenting `pair` (when given) and trusting this CA.
    pub fn client_config(&self, pair: Option<&Pair>) -> bbs_tls::rustls::ClientConfig {
        let identity = pair.map(|p| bbs_tls::Identity {
            certificate: bbs_tls::PemFile::new("client cert", &p.cert),
            private_key: bbs_tls::PemFile::new("client key", &p.key),
        });
        bbs_tls::client(
            bbs_tls::ServerCheck::Full(bbs_tls::PemFile::new("ca", &self.ca)),
            identity,
        )
        .expect("a client config")
    }

    /// An HTTP client that presents `pair` and trusts this CA.
    pub fn http_client(&self, pair: Option<&Pair>) -> reqwest::Client {
        reqwest::Client::builder()
            .use_preconfigured_tls(self.client_config(pair))
            .build()
            .expect("a client")
    }

    /// A server config for `pair` that requires client certificates of this CA.
    pub fn server_config(&self, pair: &Pair) -> Arc<bbs_tls::rustls::ServerConfig> {
        Arc::new(
            bbs_tls::mutual_server(
                bbs_tls::PemFile::new("ca", &self.ca),
                bbs_tls::Identity {
                    certificate: bbs_tls::PemFile::new("cert", &pair.cert),
                    private_key: bbs_tls::PemFile::new("key", &pair.key),
                },
            )
            .expect("a server config"),
        )
    }

    /// The outbound TLS the BBS uses towards this deployment's auctioneer, reps and
    /// callback receivers.
    pub fn outbound(&self) -> bbs_actors::OutboundTls {
        let config = Arc::new(self.client_config(Some(&self.client)));
        bbs_actors::OutboundTls {
            rep: Some(config.clone()),
            auctioneer: Some(config.clone()),
            auctioneer_require_tls: true,
            callbacks: Some(config),
        }
    }

    /// The server's TLS config keys, pointing at these files.
    pub fn server_keys(&self) -> serde_json::Value {
        serde_json::json!({
            "ca_file": self.ca,
            "cert_file": self.server.cert,
            "key_file": self.server.key,
        })
    }
}
