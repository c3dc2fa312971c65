//! The fuzz harnesses: one plain function per target, taking the fuzzer's bytes.
//!
//! Each harness feeds its input to the server's own decoder the way the server does, then
//! checks what must hold for any input that decodes (a record read back is the record
//! written, a request that passed its check can be stored and served). A panic is a
//! finding. The `fuzz_targets/` binaries wrap these for libFuzzer (`scripts/fuzz`); the
//! corpus test replays every committed input through them in every test run, so a case
//! once found stays a regression test.

mod config;
mod parsers;
mod records;
mod requests;
pub mod seeds;

pub use config::config;
pub use parsers::{event_id, mysql_dsn};
pub use records::records;
pub use requests::requests;

/// A harness: the fuzzer's bytes in, a panic out for a finding.
pub type Harness = fn(&[u8]);

/// Every target by name, as `scripts/fuzz`, the corpus directories and the corpus test name
/// them.
pub const TARGETS: &[(&str, Harness)] = &[
    ("requests", requests),
    ("records", records),
    ("config", config),
    ("event_id", event_id),
    ("mysql_dsn", mysql_dsn),
];

/// The first byte picks among `choices` (a mode, a message type); the rest is the input.
fn pick(data: &[u8], choices: usize) -> Option<(usize, &[u8])> {
    let (&first, rest) = data.split_first()?;
    Some((first as usize % choices, rest))
}
