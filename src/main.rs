//! `bbs`: a wire-compatible, actor-based Diego BBS.

use bbs::{config, locket_server, logging, migrate, server};

use std::path::PathBuf;

use clap::Parser;

/// A drop-in Diego BBS: upstream's protobuf-over-HTTP API on SQLite, MySQL, PostgreSQL or etcd.
#[derive(Parser, Debug)]
#[command(name = "bbs", version)]
struct Cli {
    /// Configuration file (upstream's bbs.json keys; JSON, or TOML by extension). Without
    /// one, the server listens on 127.0.0.1:8889 with SQLite under ./bbs-data.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Runs a locket-compatible gRPC server (upstream locket's config keys; docs/locket.md)
    /// instead of the BBS.
    Locket,
    /// Copies every record from one store to another, re-sealed under the target's key, and
    /// verifies the copy (docs/migration.md).
    Migrate(migrate::MigrateArgs),
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
    match cli.command {
        Some(Command::Locket) => std::process::exit(run_locket(cli.config)),
        Some(Command::Migrate(args)) => std::process::exit(migrate::run(args)),
        None => {}
    }
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

fn run_locket(config: Option<PathBuf>) -> i32 {
    let Some(path) = config else {
        eprintln!("bbs locket: --config FILE is required (upstream locket's JSON keys)");
        return 2;
    };
    let settings = match locket_server::LocketSettings::load(&path) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("bbs locket: {e}");
            return 2;
        }
    };
    let log = logging::logger("locket", logging::parse_level(&settings.log_level));
    let metrics = match server::install_metrics() {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("bbs locket: cannot install the metrics recorder: {e}");
            return 1;
        }
    };
    let code =
        actix_web::rt::System::new().block_on(locket_server::run(settings, log.clone(), metrics));
    drop(log);
    std::thread::sleep(std::time::Duration::from_millis(50));
    code
}
