//! The configuration loader, as `bbs --config` reads a file, then everything start-up derives
//! from the settings (keys, store, locket, lock).

use bbs::config::Settings;

/// The first byte picks JSON or TOML; the rest is the file's text, and after a NUL byte,
/// `NAME=value` lines taken as the environment's `BBS_*` overrides.
pub fn config(data: &[u8]) {
    let Some((format, rest)) = super::pick(data, 2) else {
        return;
    };
    let (text, env) = match rest.iter().position(|&b| b == 0) {
        Some(nul) => (&rest[..nul], &rest[nul + 1..]),
        None => (rest, &[][..]),
    };
    let (Ok(text), Ok(env)) = (std::str::from_utf8(text), std::str::from_utf8(env)) else {
        return;
    };
    let env = env.lines().filter_map(|line| {
        let (name, value) = line.split_once('=')?;
        Some((name.to_owned(), value.to_owned()))
    });
    let Ok(settings) = Settings::from_text(text, format == 1, env) else {
        return;
    };
    let _ = settings.write_format();
    let _ = settings.key_ring();
    let _ = settings.etcd_v2();
    let _ = settings.backend();
    let _ = settings.store_config();
    let _ = settings.locket_client();
    let _ = settings.lock_settings("fuzz".into());
    let _ = settings.ignored_keys();
    assert!(settings.pool_size() > 0);
    assert!(settings.storage_actors() > 0);
}
