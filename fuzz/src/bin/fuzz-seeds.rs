//! Writes the seed inputs into `fuzz/corpus/<target>/seed-<name>` (run from the repository
//! root: `cargo run -p bbs-fuzz --bin fuzz-seeds`). Seeds change only when a format does.

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let seeds = bbs_fuzz::seeds::all();
    for seed in &seeds {
        let dir = root.join(seed.target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("seed-{}", seed.name)), &seed.bytes)?;
    }
    println!("{} seeds under {}", seeds.len(), root.display());
    Ok(())
}
