//! Compiles `proto/*.proto` with protox, so building needs no system `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from("proto");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&proto_dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptors = protox::compile(&files, [&proto_dir])?;
    let mut config = prost_build::Config::new();
    // Proto3 `optional`-style oneofs are single-field oneofs upstream; prost maps them to
    // enums. Keep map fields deterministic so encodings are stable across runs.
    config.btree_map(["."]);
    config.compile_fds(descriptors)?;
    Ok(())
}
