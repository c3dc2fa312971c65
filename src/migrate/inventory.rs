//! Opening records on one side of a migration: each record's digest over its plaintext (so
//! the two sides compare though their ciphertexts never match), and which records cannot be
//! opened.

use std::collections::BTreeMap;

use ring::digest::{digest, SHA256};

use bbs_actors::codec::Codec;
use bbs_actors::BbsError;

use super::kinds::RecordKind;

pub type Digest = [u8; 32];

/// A record the server would serve, with its digest and its blobs' plaintext payloads (in
/// [`RecordKind::blobs`] order).
pub struct Opened<R> {
    pub key: String,
    pub digest: Digest,
    pub record: R,
    pub payloads: Vec<Vec<u8>>,
}

/// A blob sealed under a label the side's configuration lacks: nothing can be decided about
/// such a store, so the migration stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingKey {
    pub label: String,
    pub kind: &'static str,
    pub key: String,
}

/// A record that cannot be opened, named by kind and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub kind: &'static str,
    pub key: String,
    pub error: String,
}

/// What one side holds of one kind.
#[derive(Default)]
pub struct Inventory {
    pub digests: BTreeMap<String, Digest>,
    pub unreadable: Vec<Unreadable>,
    /// Records whose blobs are not all sealed under the side's active key and format: a
    /// resumed copy rewrites them, since the label it records says every blob is current.
    pub stale: std::collections::BTreeSet<String>,
}

fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Opens one record; `Ok(Err(..))` is a record that cannot be opened (reported, skipped),
/// `Err` a key the configuration lacks.
pub fn open<K: RecordKind>(
    codec: &Codec,
    record: K::Record,
) -> Result<Result<Opened<K::Record>, Unreadable>, MissingKey> {
    let key = K::key(&record);
    let mut plain = record.clone();
    for blob in K::blobs(&mut plain) {
        if let Ok(Some(label)) = Codec::label_of(blob) {
            if !codec.keys().is_some_and(|keys| keys.has_label(&label)) {
                return Err(MissingKey {
                    label,
                    kind: K::NAME,
                    key,
                });
            }
        }
    }
    let unreadable = |error: BbsError| Unreadable {
        kind: K::NAME,
        key: key.clone(),
        error: error.to_string(),
    };
    if let Err(e) = K::check(codec, &record) {
        return Ok(Err(unreadable(e)));
    }
    let mut payloads = Vec::new();
    for blob in K::blobs(&mut plain) {
        match codec.open(blob) {
            Ok(payload) => {
                *blob = hex(&sha256(&payload));
                payloads.push(payload);
            }
            Err(e) => return Ok(Err(unreadable(e))),
        }
    }
    let encoded = match serde_json::to_vec(&plain) {
        Ok(encoded) => encoded,
        Err(e) => return Ok(Err(unreadable(BbsError::Deserialize(e.to_string())))),
    };
    Ok(Ok(Opened {
        digest: sha256(&encoded),
        key,
        record,
        payloads,
    }))
}

/// Digests every record of a kind.
pub fn inventory<K: RecordKind>(
    codec: &Codec,
    records: Vec<K::Record>,
) -> Result<Inventory, MissingKey> {
    let mut inventory = Inventory::default();
    for mut record in records {
        if K::blobs(&mut record)
            .iter()
            .any(|blob| !codec.is_current(blob))
        {
            inventory.stale.insert(K::key(&record));
        }
        match open::<K>(codec, record)? {
            Ok(opened) => {
                inventory.digests.insert(opened.key, opened.digest);
            }
            Err(unreadable) => inventory.unreadable.push(unreadable),
        }
    }
    Ok(inventory)
}

/// How the target's records of one kind compare with the source's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub matching: usize,
    /// In the source (readable), not in the target.
    pub missing: Vec<String>,
    /// In the target, not in the source at all.
    pub extra: Vec<String>,
    /// On both sides with different content.
    pub different: Vec<String>,
}

impl Comparison {
    pub fn of(source: &Inventory, target: &Inventory) -> Comparison {
        let mut comparison = Comparison::default();
        let source_unreadable: std::collections::BTreeSet<&str> =
            source.unreadable.iter().map(|u| u.key.as_str()).collect();
        for (key, digest) in &source.digests {
            match target.digests.get(key) {
                Some(other) if other == digest => comparison.matching += 1,
                Some(_) => comparison.different.push(key.clone()),
                None => comparison.missing.push(key.clone()),
            }
        }
        for key in target.digests.keys() {
            if !source.digests.contains_key(key) && !source_unreadable.contains(key.as_str()) {
                comparison.extra.push(key.clone());
            }
        }
        // A target record that cannot be opened differs from its source, or is extra.
        for unreadable in &target.unreadable {
            if source.digests.contains_key(&unreadable.key) {
                comparison.missing.retain(|k| *k != unreadable.key);
                comparison.different.push(unreadable.key.clone());
            } else {
                comparison.extra.push(unreadable.key.clone());
            }
        }
        comparison
    }

    pub fn is_clean(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.different.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(entries: &[(&str, u8)], unreadable: &[&str]) -> Inventory {
        Inventory {
            digests: entries
                .iter()
                .map(|(k, d)| (k.to_string(), [*d; 32]))
                .collect(),
            unreadable: unreadable
                .iter()
                .map(|k| Unreadable {
                    kind: "tasks",
                    key: k.to_string(),
                    error: "bad".into(),
                })
                .collect(),
            stale: Default::default(),
        }
    }

    #[test]
    fn compares_key_by_key() {
        let source = inventory(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)], &["u"]);
        let target = inventory(&[("a", 1), ("b", 9), ("e", 5), ("u", 6)], &["d", "z"]);
        let comparison = Comparison::of(&source, &target);
        assert_eq!(comparison.matching, 1);
        assert_eq!(comparison.missing, vec!["c".to_string()]);
        assert_eq!(comparison.different, vec!["b".to_string(), "d".to_string()]);
        // "u" could not be read in the source: its copy in the target is not counted extra.
        assert_eq!(comparison.extra, vec!["e".to_string(), "z".to_string()]);
        assert!(!comparison.is_clean());
        let same = inventory(&[("a", 1)], &[]);
        assert!(Comparison::of(&same, &same).is_clean());
    }
}
