//! The `bbs` server: configuration, logging, the HTTP front doors and start-up. The binary in
//! `main.rs` only parses the command line and calls [`server::run`].

pub mod config;
pub mod http;
pub mod listener;
pub mod lock;
pub mod locket_cells;
pub mod locket_server;
pub mod logging;
pub mod migrate;
pub mod server;
pub mod tls_config;
