//! How record blobs are encoded for the store (bbs-reference §6.2).
//!
//! A serialized model is the envelope `[0x02 (protobuf), version 0][protobuf bytes]`; JSON
//! values (routes, metric tags, internal routes) have no envelope. The outer encoding is a
//! two-character prefix plus standard padded base64 of the (sealed) payload:
//!
//! * `01`: not encrypted (upstream's etcd-era base64 encoding); written only without keys.
//! * `02`: upstream's AES-256-GCM `[label len][label][nonce 12][ciphertext+tag]`.
//! * `03`: ours, XChaCha20-Poly1305 `[label len][label][nonce 24][ciphertext+tag]`.
//!
//! Every blob names its key label, so records written under older keys stay readable while
//! the EncryptorActor rewrites them under the active one.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{BbsError, BbsResult};
use crate::keyring::{KeyError, KeyRing, WriteFormat};

const ENVELOPE_PROTO: u8 = 2;
const ENVELOPE_VERSION: u8 = 0;
const ENCODING_BASE64: &str = "01";
const ENCODING_AES_GCM: &str = "02";
const ENCODING_XCHACHA: &str = "03";

impl From<KeyError> for BbsError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::UnknownLabel(label) => BbsError::UnknownKeyLabel(label),
            other => BbsError::Deserialize(other.to_string()),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Codec {
    keys: Option<Arc<KeyRing>>,
}

impl Codec {
    /// A codec without keys: blobs are written unencrypted.
    pub fn new() -> Self {
        Codec { keys: None }
    }

    pub fn with_keys(keys: Arc<KeyRing>) -> Self {
        Codec { keys: Some(keys) }
    }

    pub fn keys(&self) -> Option<&KeyRing> {
        self.keys.as_deref()
    }

    fn encode_bytes(&self, payload: &[u8]) -> String {
        let (prefix, sealed) = match &self.keys {
            None => (ENCODING_BASE64, None),
            Some(keys) => match keys.format() {
                WriteFormat::XChaCha20Poly1305 => {
                    (ENCODING_XCHACHA, Some(keys.seal_xchacha(payload)))
                }
                WriteFormat::UpstreamAesGcm => (ENCODING_AES_GCM, Some(keys.seal_aes(payload))),
            },
        };
        let body = sealed.as_deref().unwrap_or(payload);
        let mut out = String::with_capacity(2 + body.len() * 4 / 3 + 4);
        out.push_str(prefix);
        STANDARD.encode_string(body, &mut out);
        out
    }

    fn split(blob: &str) -> BbsResult<(&str, Vec<u8>)> {
        let (Some(prefix), Some(body)) = (blob.get(..2), blob.get(2..)) else {
            return Err(BbsError::Deserialize("blob too short".into()));
        };
        let raw = STANDARD
            .decode(body)
            .map_err(|e| BbsError::Deserialize(format!("bad base64: {e}")))?;
        Ok((prefix, raw))
    }

    fn ring(&self) -> BbsResult<&KeyRing> {
        self.keys.as_deref().ok_or_else(|| {
            BbsError::Deserialize(
                "the record is encrypted and no encryption_keys are configured".into(),
            )
        })
    }

    fn decode_bytes(&self, blob: &str) -> BbsResult<Vec<u8>> {
        let (prefix, raw) = Self::split(blob)?;
        match prefix {
            ENCODING_BASE64 => Ok(raw),
            ENCODING_AES_GCM => Ok(self.ring()?.open_aes(&raw)?),
            ENCODING_XCHACHA => Ok(self.ring()?.open_xchacha(&raw)?),
            other => Err(BbsError::Deserialize(format!("unknown encoding {other:?}"))),
        }
    }

    /// A blob's plaintext payload (the envelope and model, or the JSON), opened with
    /// whichever key its label names.
    pub fn open(&self, blob: &str) -> BbsResult<Vec<u8>> {
        self.decode_bytes(blob)
    }

    /// A payload sealed under the active key in the configured format (unencrypted without
    /// keys): the inverse of [`Codec::open`].
    pub fn seal(&self, payload: &[u8]) -> String {
        self.encode_bytes(payload)
    }

    /// Whether the Go BBS at its final version can read the blob: only its AES-GCM encoding
    /// (`02`); it has no reader for the others.
    pub fn is_upstream_encoding(blob: &str) -> bool {
        blob.starts_with(ENCODING_AES_GCM)
    }

    /// The key label a blob was sealed with; `None` for an unencrypted blob.
    pub fn label_of(blob: &str) -> BbsResult<Option<String>> {
        let (prefix, raw) = Self::split(blob)?;
        match prefix {
            ENCODING_AES_GCM | ENCODING_XCHACHA => Ok(Some(KeyRing::label_of(&raw)?.to_owned())),
            _ => Ok(None),
        }
    }

    /// Whether the blob is sealed under the active key in the configured format (without keys:
    /// whether it is unencrypted), so rewriting it would change nothing.
    pub fn is_current(&self, blob: &str) -> bool {
        match &self.keys {
            None => blob.starts_with(ENCODING_BASE64),
            Some(keys) => {
                let wanted = match keys.format() {
                    WriteFormat::XChaCha20Poly1305 => ENCODING_XCHACHA,
                    WriteFormat::UpstreamAesGcm => ENCODING_AES_GCM,
                };
                blob.starts_with(wanted)
                    && Self::label_of(blob).ok().flatten().as_deref() == Some(keys.active_label())
            }
        }
    }

    /// The blob sealed under the active key in the configured format, or `None` when it
    /// already is. Only the outer layer changes; the envelope inside is untouched.
    pub fn reencode(&self, blob: &str) -> BbsResult<Option<String>> {
        if self.keys.is_none() || self.is_current(blob) {
            return Ok(None);
        }
        let payload = self.decode_bytes(blob)?;
        Ok(Some(self.encode_bytes(&payload)))
    }

    /// A protobuf model in upstream's envelope.
    pub fn encode_model<M: Message>(&self, model: &M) -> String {
        self.encode_proto_body(&model.encode_to_vec())
    }

    /// An already encoded protobuf message in upstream's envelope.
    pub fn encode_proto_body(&self, body: &[u8]) -> String {
        let mut payload = Vec::with_capacity(body.len() + 2);
        payload.push(ENVELOPE_PROTO);
        payload.push(ENVELOPE_VERSION);
        payload.extend_from_slice(body);
        self.encode_bytes(&payload)
    }

    pub fn decode_model<M: Message + Default>(&self, blob: &str) -> BbsResult<M> {
        let payload = self.decode_bytes(blob)?;
        match payload.as_slice() {
            [ENVELOPE_PROTO, _version, body @ ..] => {
                M::decode(body).map_err(|e| BbsError::Deserialize(format!("bad protobuf: {e}")))
            }
            _ => Err(BbsError::Deserialize("unknown envelope format".into())),
        }
    }

    /// A JSON value, no envelope.
    pub fn encode_json<T: Serialize>(&self, value: &T) -> String {
        let json = serde_json::to_vec(value).expect("serializing plain data cannot fail");
        self.encode_bytes(&json)
    }

    pub fn decode_json<T: DeserializeOwned>(&self, blob: &str) -> BbsResult<T> {
        let payload = self.decode_bytes(blob)?;
        serde_json::from_slice(&payload)
            .map_err(|e| BbsError::Deserialize(format!("bad JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bbs_models::TaskDefinition;

    #[test]
    fn models_round_trip_in_the_envelope() {
        let codec = Codec::new();
        let definition = TaskDefinition {
            root_fs: "docker:///busybox".into(),
            memory_mb: 256,
            ..Default::default()
        };
        let blob = codec.encode_model(&definition);
        assert!(blob.starts_with("01"));
        let raw = STANDARD.decode(&blob[2..]).unwrap();
        assert_eq!(&raw[..2], &[2, 0]);
        assert_eq!(
            codec.decode_model::<TaskDefinition>(&blob).unwrap(),
            definition
        );
    }

    #[test]
    fn json_round_trips_without_an_envelope() {
        let codec = Codec::new();
        let blob = codec.encode_json(&serde_json::json!({"cf-router": [1, 2]}));
        assert_eq!(
            codec.decode_json::<serde_json::Value>(&blob).unwrap(),
            serde_json::json!({"cf-router": [1, 2]})
        );
    }

    fn keyed(active: &str, format: WriteFormat) -> Codec {
        let mut keys = std::collections::BTreeMap::new();
        keys.insert("old".to_owned(), "old passphrase".to_owned());
        keys.insert("new".to_owned(), "new passphrase".to_owned());
        Codec::with_keys(Arc::new(KeyRing::new(&keys, active, format).unwrap()))
    }

    #[test]
    fn encrypted_blobs_hide_the_plaintext_and_name_their_key() {
        let codec = keyed("old", WriteFormat::XChaCha20Poly1305);
        let definition = TaskDefinition {
            image_password: "hunter2-very-secret".into(),
            ..Default::default()
        };
        let blob = codec.encode_model(&definition);
        assert!(blob.starts_with("03"));
        let raw = STANDARD.decode(&blob[2..]).unwrap();
        assert!(!raw.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(Codec::label_of(&blob).unwrap().as_deref(), Some("old"));
        assert_eq!(
            codec.decode_model::<TaskDefinition>(&blob).unwrap(),
            definition
        );
    }

    #[test]
    fn reencode_moves_blobs_to_the_active_key_and_format() {
        let old = keyed("old", WriteFormat::UpstreamAesGcm);
        let blob = old.encode_json(&serde_json::json!({"k": "v"}));
        assert!(blob.starts_with("02"));
        assert_eq!(old.reencode(&blob).unwrap(), None, "already current");
        let new = keyed("new", WriteFormat::XChaCha20Poly1305);
        let moved = new.reencode(&blob).unwrap().unwrap();
        assert_eq!(Codec::label_of(&moved).unwrap().as_deref(), Some("new"));
        assert!(moved.starts_with("03"));
        assert_eq!(
            new.decode_json::<serde_json::Value>(&moved).unwrap(),
            serde_json::json!({"k": "v"})
        );
        // Unencrypted blobs are sealed too.
        let plain = Codec::new().encode_json(&1);
        assert!(new.reencode(&plain).unwrap().unwrap().starts_with("03"));
    }

    #[test]
    fn a_missing_key_is_named_and_tampering_is_caught() {
        let old = keyed("old", WriteFormat::XChaCha20Poly1305);
        let blob = old.encode_json(&1);
        let mut only_other = std::collections::BTreeMap::new();
        only_other.insert("other".to_owned(), "x".to_owned());
        let stranger = Codec::with_keys(Arc::new(
            KeyRing::new(&only_other, "other", WriteFormat::XChaCha20Poly1305).unwrap(),
        ));
        assert_eq!(
            stranger.decode_json::<i32>(&blob),
            Err(BbsError::UnknownKeyLabel("old".into()))
        );
        let mut raw = STANDARD.decode(&blob[2..]).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 0x40;
        let tampered = format!("03{}", STANDARD.encode(raw));
        assert!(
            matches!(old.decode_json::<i32>(&tampered), Err(BbsError::Deserialize(m)) if m.contains("tampered"))
        );
        assert!(matches!(
            Codec::new().decode_json::<i32>(&blob),
            Err(BbsError::Deserialize(_))
        ));
    }

    #[test]
    fn bad_blobs_are_deserialize_errors() {
        let codec = Codec::new();
        for blob in ["", "0", "99abc", "01!!!", "01AAAA", "é1", "0é"] {
            assert!(
                matches!(
                    codec.decode_model::<TaskDefinition>(blob),
                    Err(BbsError::Deserialize(_))
                ),
                "{blob:?}"
            );
        }
    }
}
