//! `bbs`: a wire-compatible, actor-based Diego BBS.

use bbs::{config, logging, server};

use std::path::PathBuf;

use clap::Parser;

/// A drop-in Diego BBS: upstream's protobuf-over-HTTP API on SQLite, MySQL, PostgreSQL or etcd.
#[derive(Parser, Debug)]
#[command(name = "bbs", version)]
struct Cli {
    /// Configuration file (upstream's bbs.json keys; JSON, or TOML by extension). Without
    /// one, the server listens on 127.0.0.1:8889 with SQLite under ./bbs-data.
    #[arg(long)]
    config: Option<PathBuf>,
}

/// Accepts Go's single-dash `-config` too, so upstream's job scripts work unchanged.
fn normalized_args() -> Vec<String> {
    std::env::args()
        .map(|arg| match arg.strip_prefix("-config") {
            Some(rest) if rest.is_empty() || rest.starts_with('=') => format!("--config{rest}"),
            _ => arg,
        })
        .collect()
}

fn main() {
    let cli = Cli::parse_from(normalized_args());
    let settings = match config::Settings::load(cli.config.as_deref(), std::env::vars()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("bbs: {e}");
            std::process::exit(2);
        }
    };
    let log = logging::logger(
        &settings.session_name,
        logging::parse_level(&settings.log_level),
    );
    let metrics = match server::install_metrics() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("bbs: cannot install the metrics recorder: {e}");
            std::process::exit(1);
        }
    };
    let code = actix_web::rt::System::new().block_on(server::run(settings, log.clone(), metrics));
    drop(log);
    // Give the async log drain a moment to flush its last lines.
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::process::exit(code);
}
