//! How record blobs are encoded for the store (bbs-reference §6.2).
//!
//! A serialized model is the envelope `[0x02 (protobuf), version 0][protobuf bytes]`; JSON
//! values (routes, metric tags, internal routes) have no envelope. The outer encoding is a
//! two-character prefix plus standard padded base64. Without encryption keys this is
//! upstream's `01` (base64, unencrypted); encryption (`02`) plugs in here, so the actors and
//! the store never change when it does.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use prost::Message;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{BbsError, BbsResult};

const ENVELOPE_PROTO: u8 = 2;
const ENVELOPE_VERSION: u8 = 0;
const ENCODING_BASE64: &str = "01";

#[derive(Clone, Debug, Default)]
pub struct Codec;

impl Codec {
    pub fn new() -> Self {
        Codec
    }

    fn encode_bytes(&self, payload: &[u8]) -> String {
        let mut out = String::with_capacity(2 + payload.len() * 4 / 3 + 4);
        out.push_str(ENCODING_BASE64);
        STANDARD.encode_string(payload, &mut out);
        out
    }

    fn decode_bytes(&self, blob: &str) -> BbsResult<Vec<u8>> {
        let (Some(prefix), Some(body)) = (blob.get(..2), blob.get(2..)) else {
            return Err(BbsError::Deserialize("blob too short".into()));
        };
        match prefix {
            ENCODING_BASE64 => STANDARD
                .decode(body)
                .map_err(|e| BbsError::Deserialize(format!("bad base64: {e}"))),
            other => Err(BbsError::Deserialize(format!("unknown encoding {other:?}"))),
        }
    }

    /// A protobuf model in upstream's envelope.
    pub fn encode_model<M: Message>(&self, model: &M) -> String {
        let mut payload = Vec::with_capacity(model.encoded_len() + 2);
        payload.push(ENVELOPE_PROTO);
        payload.push(ENVELOPE_VERSION);
        model
            .encode(&mut payload)
            .expect("a Vec grows to fit any message");
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
