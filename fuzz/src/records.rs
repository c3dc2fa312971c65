//! What the server reads back from its store: the etcd store's JSON values for every record
//! kind, the blobs inside them (unencrypted, upstream's AES-GCM, ours XChaCha20-Poly1305),
//! and cell presences. A record that decodes must survive being written again unchanged.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use bbs_actors::cells::{presence_from_json, presence_to_json};
use bbs_actors::codec::Codec;
use bbs_actors::keyring::{KeyRing, WriteFormat};
use bbs_actors::lrp_records::{
    actual_from_record, actual_to_record, desired_from_record, desired_to_record,
};
use bbs_actors::rules::desired_lrps;
use bbs_actors::tasks;
use bbs_models as m;
use bbs_store::{ActualLrpRecord, CellRecord, DesiredLrpRecord, DomainRecord, TaskRecord};
use prost::Message;
use serde::de::DeserializeOwned;

/// The codecs a server can run with: no keys, ours, and upstream's format, the keyed ones
/// holding an older key too, so a blob under either label opens.
pub(crate) fn codecs() -> &'static [Codec; 3] {
    static CODECS: OnceLock<[Codec; 3]> = OnceLock::new();
    CODECS.get_or_init(|| {
        let keys = BTreeMap::from([
            ("older".to_owned(), "an older passphrase".to_owned()),
            ("active".to_owned(), "the active passphrase".to_owned()),
        ]);
        let ring = |format| {
            Codec::with_keys(Arc::new(
                KeyRing::new(&keys, "active", format).expect("the fuzz keys are valid"),
            ))
        };
        [
            Codec::new(),
            ring(WriteFormat::XChaCha20Poly1305),
            ring(WriteFormat::UpstreamAesGcm),
        ]
    })
}

fn json<T: DeserializeOwned>(value: &[u8]) -> Option<T> {
    serde_json::from_slice(value).ok()
}

/// The first byte picks what the rest is: an etcd value of one record kind, a blob as a
/// column holds it, or a payload sealed by each keyed codec (so the fuzzer reaches what is
/// behind the cipher, which it could never forge).
pub fn records(data: &[u8]) {
    let Some((kind, rest)) = super::pick(data, KINDS.len()) else {
        return;
    };
    match KINDS[kind] {
        "task" => task(rest),
        "desired" => desired(rest),
        "actual" => actual(rest),
        "blob" => blob(rest),
        "sealed" => sealed(rest),
        "cell" => cell(rest),
        _ => {
            let _ = json::<DomainRecord>(rest);
        }
    }
}

/// What the first byte picks, in its order.
const KINDS: [&str; 7] = [
    "task", "desired", "actual", "blob", "sealed", "cell", "domain",
];

/// The first byte that picks `kind`, for the seeds.
pub(crate) fn choice_of(kind: &str) -> usize {
    KINDS
        .iter()
        .position(|k| *k == kind)
        .expect("a record kind the fuzzer knows")
}

fn task(value: &[u8]) {
    let Some(record) = json::<TaskRecord>(value) else {
        return;
    };
    for codec in codecs() {
        if let Ok(task) = tasks::from_record(codec, record.clone()) {
            let again = tasks::from_record(codec, tasks::to_record(codec, &task))
                .expect("a task written again reads back");
            assert_eq!(again, task);
        }
    }
}

fn desired(value: &[u8]) {
    let Some(record) = json::<DesiredLrpRecord>(value) else {
        return;
    };
    for codec in codecs() {
        if let Ok(entry) = desired_from_record(codec, &record) {
            let lrp = desired_lrps::rebuild(&entry);
            let _ = desired_lrps::routing_info(&entry).encode_to_vec();
            let again = desired_to_record(codec, &entry)
                .and_then(|r| desired_from_record(codec, &r))
                .expect("a desired LRP written again reads back");
            assert_eq!(desired_lrps::rebuild(&again), lrp);
        }
    }
}

fn actual(value: &[u8]) {
    let Some(record) = json::<ActualLrpRecord>(value) else {
        return;
    };
    for codec in codecs() {
        if let Ok(lrp) = actual_from_record(codec, &record) {
            let again = actual_from_record(codec, &actual_to_record(codec, &lrp))
                .expect("an actual LRP written again reads back");
            assert_eq!(again, lrp);
        }
    }
}

/// A blob column's text, opened as every reader opens one.
fn blob(value: &[u8]) {
    let Ok(text) = std::str::from_utf8(value) else {
        return;
    };
    let _ = Codec::label_of(text);
    let _ = Codec::is_upstream_encoding(text);
    for codec in codecs() {
        let _ = codec.is_current(text);
        if let Ok(payload) = codec.open(text) {
            assert_eq!(codec.open(&codec.seal(&payload)).ok(), Some(payload));
        }
        if let Ok(Some(rewritten)) = codec.reencode(text) {
            assert_eq!(codec.open(&rewritten).ok(), codec.open(text).ok());
        }
        payloads(codec, text);
    }
}

/// Bytes sealed by each codec, then read as every blob kind a record holds.
fn sealed(payload: &[u8]) {
    for codec in codecs() {
        let text = codec.seal(payload);
        assert_eq!(codec.open(&text).ok().as_deref(), Some(payload));
        assert!(codec.is_current(&text));
        payloads(codec, &text);
    }
}

fn payloads(codec: &Codec, text: &str) {
    let _ = codec.decode_model::<m::TaskDefinition>(text);
    let _ = codec.decode_model::<m::DesiredLrpRunInfo>(text);
    let _ = codec.decode_model::<m::ActualLrpNetInfo>(text);
    let _ = codec.decode_model::<m::VolumePlacement>(text);
    let _ = codec.decode_json::<serde_json::Value>(text);
    let _ = codec.decode_json::<Option<BTreeMap<String, String>>>(text);
}

fn cell(value: &[u8]) {
    let Some(record) = json::<CellRecord>(value) else {
        if let Ok(text) = std::str::from_utf8(value) {
            presence(text);
        }
        return;
    };
    presence(&record.presence);
}

/// A presence as a rep registered it (in a cell row, or in locket's `value`).
fn presence(text: &str) {
    if let Ok(p) = presence_from_json(text) {
        assert_eq!(presence_from_json(&presence_to_json(&p)).ok(), Some(p));
    }
}
