//! JSON-lines logging in lager's shape, so Diego operators' log tooling reads it unchanged:
//! `{"timestamp":…,"level":…,"source":…,"message":"<source>.<event>","data":{…}}`.

use std::io::Write;
use std::sync::Mutex;
use std::time::SystemTime;

use slog::{Drain, Key, Level, OwnedKVList, Record, KV};

/// Collects a record's key-values into the `data` object.
struct DataObject(serde_json::Map<String, serde_json::Value>);

impl slog::Serializer for DataObject {
    fn emit_arguments(&mut self, key: Key, value: &std::fmt::Arguments) -> slog::Result {
        self.0.insert(
            key.to_string(),
            serde_json::Value::String(value.to_string()),
        );
        Ok(())
    }

    fn emit_u64(&mut self, key: Key, value: u64) -> slog::Result {
        self.0.insert(key.to_string(), value.into());
        Ok(())
    }

    fn emit_i64(&mut self, key: Key, value: i64) -> slog::Result {
        self.0.insert(key.to_string(), value.into());
        Ok(())
    }

    fn emit_i32(&mut self, key: Key, value: i32) -> slog::Result {
        self.0.insert(key.to_string(), value.into());
        Ok(())
    }

    fn emit_u32(&mut self, key: Key, value: u32) -> slog::Result {
        self.0.insert(key.to_string(), value.into());
        Ok(())
    }

    fn emit_bool(&mut self, key: Key, value: bool) -> slog::Result {
        self.0.insert(key.to_string(), value.into());
        Ok(())
    }
}

/// Writes one JSON object per line.
pub struct JsonLines<W: Write + Send> {
    out: Mutex<W>,
    source: String,
}

impl<W: Write + Send> JsonLines<W> {
    pub fn new(out: W, source: impl Into<String>) -> Self {
        JsonLines {
            out: Mutex::new(out),
            source: source.into(),
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Critical => "fatal",
        Level::Error => "error",
        Level::Warning => "warn",
        Level::Info => "info",
        Level::Debug | Level::Trace => "debug",
    }
}

impl<W: Write + Send> Drain for JsonLines<W> {
    type Ok = ();
    type Err = std::io::Error;

    fn log(&self, record: &Record, values: &OwnedKVList) -> std::io::Result<()> {
        let mut data = DataObject(serde_json::Map::new());
        values
            .serialize(record, &mut data)
            .and_then(|_| record.kv().serialize(record, &mut data))
            .map_err(std::io::Error::other)?;
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_nanos(SystemTime::now()).to_string(),
            "level": level_name(record.level()),
            "source": self.source,
            "message": format!("{}.{}", self.source, record.msg()),
            "data": data.0,
        });
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        out.flush()
    }
}

/// Parses a configured level name (validated by the config).
pub fn parse_level(name: &str) -> Level {
    match name {
        "debug" => Level::Debug,
        "warn" => Level::Warning,
        "error" => Level::Error,
        "fatal" => Level::Critical,
        _ => Level::Info,
    }
}

/// The process logger: JSON lines on stdout, written off the request path.
pub fn logger(source: &str, level: Level) -> slog::Logger {
    // A failed write to stdout must never panic a request path: drop the line instead.
    let drain = JsonLines::new(std::io::stdout(), source).ignore_res();
    let drain = slog::LevelFilter::new(drain, level).ignore_res();
    let drain = slog_async::Async::new(drain)
        .chan_size(4096)
        .overflow_strategy(slog_async::OverflowStrategy::DropAndReport)
        .build()
        .ignore_res();
    slog::Logger::root(drain, slog::o!())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writes_lager_shaped_json_lines() {
        let buffer = Buffer::default();
        let log = slog::Logger::root(
            JsonLines::new(buffer.clone(), "bbs").fuse(),
            slog::o!("session" => "1"),
        );
        slog::error!(log, "store-failed"; "backend" => "mysql", "attempt" => 2u64);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "error");
        assert_eq!(line["source"], "bbs");
        assert_eq!(line["message"], "bbs.store-failed");
        assert_eq!(line["data"]["backend"], "mysql");
        assert_eq!(line["data"]["attempt"], 2);
        assert_eq!(line["data"]["session"], "1");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }
}
