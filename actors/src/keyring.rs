//! Encryption keys and the two record ciphers (see docs/encryption.md).
//!
//! * XChaCha20-Poly1305, the default: 24-byte random nonces, so nonce reuse is not a concern
//!   however many records are written. Key = HKDF-SHA256(passphrase, salt
//!   "bbs-rs/record-key/v1", info = label).
//! * AES-256-GCM, upstream's format, read always and written on request: 12-byte random
//!   nonce, key = SHA-256(passphrase), exactly as the Go BBS derives it.

use std::collections::BTreeMap;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::rand::{SecureRandom, SystemRandom};

/// The salt of our key derivation; changing it would orphan every record.
const HKDF_SALT: &[u8] = b"bbs-rs/record-key/v1";

/// Which cipher new records are written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFormat {
    XChaCha20Poly1305,
    /// Upstream's AES-256-GCM "02" blobs, so a Go BBS can take the database back.
    UpstreamAesGcm,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("Key with label {0:?} was not found")]
    UnknownLabel(String),
    #[error("encryption key label {0:?} must be 1 to 127 bytes with no ':'")]
    BadLabel(String),
    #[error("the active key label {0:?} is not among the encryption keys")]
    NoActiveKey(String),
    #[error("could not open envelope: the record was tampered with or the key is wrong")]
    Tampered,
    #[error("could not open envelope: {0}")]
    Malformed(String),
}

struct Key {
    xchacha: [u8; 32],
    aes: LessSafeKey,
}

/// The labelled keys from the configuration; one is active for writing.
pub struct KeyRing {
    keys: BTreeMap<String, Key>,
    active: String,
    format: WriteFormat,
    random: SystemRandom,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("labels", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .field("format", &self.format)
            .finish()
    }
}

fn derive_xchacha_key(label: &str, passphrase: &str) -> [u8; 32] {
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, HKDF_SALT);
    let prk = salt.extract(passphrase.as_bytes());
    let info = [label.as_bytes()];
    let mut out = [0u8; 32];
    prk.expand(&info, Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    out
}

fn upstream_key(passphrase: &str) -> LessSafeKey {
    let digest = ring::digest::digest(&ring::digest::SHA256, passphrase.as_bytes());
    let unbound =
        UnboundKey::new(&AES_256_GCM, digest.as_ref()).expect("SHA-256 is an AES-256 key length");
    LessSafeKey::new(unbound)
}

pub fn check_label(label: &str) -> Result<(), KeyError> {
    if label.is_empty() || label.len() > 127 || label.contains(':') {
        Err(KeyError::BadLabel(label.to_owned()))
    } else {
        Ok(())
    }
}

impl KeyRing {
    pub fn new(
        keys: &BTreeMap<String, String>,
        active: &str,
        format: WriteFormat,
    ) -> Result<KeyRing, KeyError> {
        let mut ring = BTreeMap::new();
        for (label, passphrase) in keys {
            check_label(label)?;
            ring.insert(
                label.clone(),
                Key {
                    xchacha: derive_xchacha_key(label, passphrase),
                    aes: upstream_key(passphrase),
                },
            );
        }
        if !ring.contains_key(active) {
            return Err(KeyError::NoActiveKey(active.to_owned()));
        }
        Ok(KeyRing {
            keys: ring,
            active: active.to_owned(),
            format,
            random: SystemRandom::new(),
        })
    }

    pub fn active_label(&self) -> &str {
        &self.active
    }

    pub fn has_label(&self, label: &str) -> bool {
        self.keys.contains_key(label)
    }

    pub fn format(&self) -> WriteFormat {
        self.format
    }

    fn key(&self, label: &str) -> Result<&Key, KeyError> {
        self.keys
            .get(label)
            .ok_or_else(|| KeyError::UnknownLabel(label.to_owned()))
    }

    fn random<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0u8; N];
        self.random
            .fill(&mut bytes)
            .expect("the system random source works");
        bytes
    }

    /// `[label length][label][24-byte nonce][ciphertext and tag]` under the active key.
    pub fn seal_xchacha(&self, plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[&self.active];
        let nonce: [u8; 24] = self.random();
        let cipher = XChaCha20Poly1305::new(&key.xchacha.into());
        let sealed = cipher
            .encrypt(&XNonce::from(nonce), plaintext)
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        let mut out = Vec::with_capacity(1 + self.active.len() + 24 + sealed.len());
        out.push(self.active.len() as u8);
        out.extend_from_slice(self.active.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Upstream's `[label length][label][12-byte nonce][ciphertext and tag]` under the active
    /// key.
    pub fn seal_aes(&self, plaintext: &[u8]) -> Vec<u8> {
        let key = &self.keys[&self.active];
        let nonce: [u8; 12] = self.random();
        let mut sealed = plaintext.to_vec();
        key.aes
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut sealed,
            )
            .expect("AES-GCM seals any message under 64 GiB");
        let mut out = Vec::with_capacity(1 + self.active.len() + 12 + sealed.len());
        out.push(self.active.len() as u8);
        out.extend_from_slice(self.active.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The label a sealed payload names.
    pub fn label_of(payload: &[u8]) -> Result<&str, KeyError> {
        let length = *payload
            .first()
            .ok_or_else(|| KeyError::Malformed("empty".into()))? as usize;
        let label = payload
            .get(1..1 + length)
            .ok_or_else(|| KeyError::Malformed("label cut short".into()))?;
        std::str::from_utf8(label).map_err(|_| KeyError::Malformed("label is not UTF-8".into()))
    }

    fn split<'a>(
        &self,
        payload: &'a [u8],
        nonce_len: usize,
    ) -> Result<(&'a str, &'a [u8], &'a [u8]), KeyError> {
        let label = Self::label_of(payload)?;
        let rest = &payload[1 + label.len()..];
        if rest.len() < nonce_len + 16 {
            return Err(KeyError::Malformed("ciphertext cut short".into()));
        }
        let (nonce, sealed) = rest.split_at(nonce_len);
        Ok((label, nonce, sealed))
    }

    pub fn open_xchacha(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (label, nonce, sealed) = self.split(payload, 24)?;
        let key = self.key(label)?;
        let nonce: [u8; 24] = nonce
            .try_into()
            .map_err(|_| KeyError::Malformed("nonce".into()))?;
        XChaCha20Poly1305::new(&key.xchacha.into())
            .decrypt(&XNonce::from(nonce), sealed)
            .map_err(|_| KeyError::Tampered)
    }

    pub fn open_aes(&self, payload: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (label, nonce, sealed) = self.split(payload, 12)?;
        let key = self.key(label)?;
        let nonce: [u8; 12] = nonce
            .try_into()
            .map_err(|_| KeyError::Malformed("nonce".into()))?;
        let mut buffer = sealed.to_vec();
        let plaintext = key
            .aes
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut buffer,
            )
            .map_err(|_| KeyError::Tampered)?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(format: WriteFormat) -> KeyRing {
        let mut keys = BTreeMap::new();
        keys.insert("key-a".to_owned(), "passphrase a".to_owned());
        keys.insert("key-b".to_owned(), "passphrase b".to_owned());
        KeyRing::new(&keys, "key-a", format).unwrap()
    }

    #[test]
    fn both_ciphers_round_trip_and_name_their_key() {
        let r = ring(WriteFormat::XChaCha20Poly1305);
        let sealed = r.seal_xchacha(b"secret");
        assert_eq!(KeyRing::label_of(&sealed).unwrap(), "key-a");
        assert_eq!(r.open_xchacha(&sealed).unwrap(), b"secret");
        let sealed = r.seal_aes(b"secret");
        assert_eq!(r.open_aes(&sealed).unwrap(), b"secret");
        assert_ne!(r.seal_xchacha(b"x"), r.seal_xchacha(b"x"), "random nonces");
    }

    #[test]
    fn tampering_is_detected() {
        let r = ring(WriteFormat::XChaCha20Poly1305);
        let mut sealed = r.seal_xchacha(b"secret");
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(r.open_xchacha(&sealed), Err(KeyError::Tampered));
        let mut sealed = r.seal_aes(b"secret");
        sealed[10] ^= 1;
        assert_eq!(r.open_aes(&sealed), Err(KeyError::Tampered));
    }

    #[test]
    fn an_unknown_label_is_named() {
        let r = ring(WriteFormat::XChaCha20Poly1305);
        let mut other_keys = BTreeMap::new();
        other_keys.insert("key-z".to_owned(), "z".to_owned());
        let other = KeyRing::new(&other_keys, "key-z", WriteFormat::XChaCha20Poly1305).unwrap();
        let sealed = other.seal_xchacha(b"secret");
        assert_eq!(
            r.open_xchacha(&sealed),
            Err(KeyError::UnknownLabel("key-z".into()))
        );
    }

    #[test]
    fn labels_and_the_active_key_are_checked() {
        let mut keys = BTreeMap::new();
        keys.insert("a:b".to_owned(), "p".to_owned());
        assert!(matches!(
            KeyRing::new(&keys, "a:b", WriteFormat::XChaCha20Poly1305),
            Err(KeyError::BadLabel(_))
        ));
        let mut keys = BTreeMap::new();
        keys.insert("a".to_owned(), "p".to_owned());
        assert!(matches!(
            KeyRing::new(&keys, "b", WriteFormat::XChaCha20Poly1305),
            Err(KeyError::NoActiveKey(_))
        ));
        assert!(check_label(&"x".repeat(128)).is_err());
        assert!(check_label(&"x".repeat(127)).is_ok());
    }

    #[test]
    fn upstream_key_is_sha256_of_the_passphrase() {
        // A blob built by hand in upstream's format opens with our key ring.
        let key = ring::digest::digest(&ring::digest::SHA256, b"passphrase a");
        let aes = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_ref()).unwrap());
        let nonce = [7u8; 12];
        let mut sealed = b"from the go bbs".to_vec();
        aes.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut sealed,
        )
        .unwrap();
        let mut payload = vec![5u8];
        payload.extend_from_slice(b"key-a");
        payload.extend_from_slice(&nonce);
        payload.extend_from_slice(&sealed);
        assert_eq!(
            ring(WriteFormat::XChaCha20Poly1305)
                .open_aes(&payload)
                .unwrap(),
            b"from the go bbs"
        );
    }
}
