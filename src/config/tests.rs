//! The configuration's unit tests: the file, the environment and the checks each name the key
//! at fault, and every key is documented in the shipped config and the README.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_sources("[server]\nlisen = \"x\"\n", env(&[])).unwrap_err();
    assert_eq!(err.key, "server.lisen");
    let err = Config::from_sources("[nope]\na = 1\n", env(&[])).unwrap_err();
    assert_eq!(err.key, "nope");
}

#[test]
fn env_overrides_file_and_keeps_types() {
    let cfg = Config::from_sources(
        "[server]\nlisten = \"127.0.0.1:1\"\n",
        env(&[
            ("LARK_ONCALL_SERVER__LISTEN", "127.0.0.1:2"),
            ("LARK_ONCALL_SERVER__MAX_BODY_BYTES", "4096"),
            ("LARK_ONCALL_SERVER__PUBLIC_URL", "https://x.example"),
            ("OTHER", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.server.listen, "127.0.0.1:2");
    assert_eq!(cfg.server.max_body_bytes, 4096);
    assert_eq!(cfg.server.public_url.as_deref(), Some("https://x.example"));
}

#[test]
fn type_errors_name_the_key() {
    let err = Config::from_sources("[server]\nmax_body_bytes = \"big\"\n", env(&[])).unwrap_err();
    assert_eq!(err.key, "server.max_body_bytes");
    let err = Config::from_sources("[log]\nformat = \"xml\"\n", env(&[])).unwrap_err();
    assert_eq!(err.key, "log.format");
}

#[test]
fn env_errors_name_the_key() {
    let err = Config::from_sources("", env(&[("LARK_ONCALL_SERVER__MAX_BODY_BYTES", "big")])).unwrap_err();
    assert_eq!(err.key, "server.max_body_bytes");
    let err = Config::from_sources("", env(&[("LARK_ONCALL_SERVER__BOGUS", "1")])).unwrap_err();
    assert_eq!(err.key, "server.bogus");
}

#[test]
fn validation_names_keys() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.storage.path = dir.path().join("state.redb");
    assert_eq!(cfg.validate().unwrap_err().key, "server.public_url");
    cfg.server.public_url = Some("ftp://x".into());
    assert_eq!(cfg.validate().unwrap_err().key, "server.public_url");
    cfg.server.public_url = Some("https://oncall.example.com/".into());
    cfg.server.listen = "nonsense".into();
    assert_eq!(cfg.validate().unwrap_err().key, "server.listen");
    cfg.server.listen = "127.0.0.1:0".into();
    cfg.server.tls_cert = Some(dir.path().join("missing.pem"));
    assert_eq!(cfg.validate().unwrap_err().key, "server.tls_key");
    cfg.server.tls_key = Some(dir.path().join("missing.key"));
    assert_eq!(cfg.validate().unwrap_err().key, "server.tls_cert");
    cfg.server.tls_cert = None;
    cfg.server.tls_key = None;
    cfg.storage.path = dir.path().join("no/such/dir/state.redb");
    assert_eq!(cfg.validate().unwrap_err().key, "storage.path");
    cfg.storage.path = dir.path().join("state.redb");
    cfg.storage.cache_mb = 0;
    assert_eq!(cfg.validate().unwrap_err().key, "storage.cache_mb");
    cfg.storage.cache_mb = 128;
    cfg.log.level = "info,=[".into();
    assert_eq!(cfg.validate().unwrap_err().key, "log.level");
    cfg.log.level = "info".into();
    let settings = cfg.validate().unwrap();
    assert_eq!(settings.public_base(), "https://oncall.example.com");
    assert_eq!(settings.storage_cache_bytes, 128 << 20);
}

/// Every key a user can set is in the shipped, commented config (with its default value) and
/// in the README's table.
#[test]
fn every_key_is_documented_in_the_shipped_config_and_the_readme() {
    let shipped = include_str!("../../packaging/config.toml");
    let readme = include_str!("../../README.md");
    let defaults = toml::Value::try_from(Config::default()).unwrap();
    let mut missing = Vec::new();
    for (section, keys) in defaults.as_table().unwrap() {
        let header = format!("[{section}]");
        let body = shipped
            .split_once(&header)
            .map(|(_, rest)| rest.split("\n[").next().unwrap_or(""))
            .unwrap_or("");
        for (key, default) in keys.as_table().unwrap() {
            let shown = body.lines().find_map(|l| {
                let l = l.trim_start_matches('#').trim_start();
                l.strip_prefix(key.as_str())?.trim_start().strip_prefix('=')
            });
            match shown {
                None => missing.push(format!("packaging/config.toml: {section}.{key}")),
                Some(value) => {
                    let parsed: toml::Table = toml::from_str(&format!("v = {value}")).unwrap();
                    assert_eq!(
                        &parsed["v"], default,
                        "packaging/config.toml shows {section}.{key} = {value}"
                    );
                }
            }
            if !readme.contains(&format!("`{section}.{key}`")) {
                missing.push(format!("README.md: {section}.{key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "undocumented config keys:\n{}",
        missing.join("\n")
    );
}
