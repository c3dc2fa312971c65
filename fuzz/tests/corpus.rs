//! Every committed fuzz input (the seeds, the campaign's corpus and every case a campaign
//! found, under `fuzz/regressions/`) replayed through its harness: a finding, once fixed,
//! stays fixed.

use std::path::Path;

fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut replayed = 0;
    for dir in [
        root.join("corpus").join(target),
        root.join("regressions").join(target),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a readable corpus directory").path();
            let input = std::fs::read(&path).expect("a readable corpus file");
            let outcome = std::panic::catch_unwind(|| harness(&input));
            assert!(outcome.is_ok(), "{} fails its harness", path.display());
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn every_committed_input_passes_its_harness() {
    for (target, harness) in bbs_fuzz::TARGETS {
        let replayed = replay(target, *harness);
        assert!(replayed > 0, "no committed inputs for {target}");
        println!("{target}: {replayed} inputs");
    }
}
