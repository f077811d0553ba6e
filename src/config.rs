//! The configuration: one TOML file plus `LARK_ONCALL_<SECTION>__<KEY>` environment overrides,
//! validated as a whole at start-up. Every error names the key it is about.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

use crate::telemetry::LogConfig;

pub const DEFAULT_PATH: &str = "/etc/lark-oncall/config.toml";
const ENV_PREFIX: &str = "LARK_ONCALL_";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub log: LogConfig,
    pub lark: LarkConfig,
    pub delivery: DeliverySection,
    pub webhooks: WebhooksSection,
    pub homepage: HomepageSection,
}

/// The app homepage inside Lark.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HomepageSection {
    /// Cards that could not reach a person (`app_not_linked`) this many hours back are re-sent
    /// once they log in to the homepage.
    pub resend_window_hours: u64,
}

impl Default for HomepageSection {
    fn default() -> Self {
        HomepageSection {
            resend_window_hours: 24,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct WebhooksSection {
    /// Whether outbound webhooks may target loopback, private, link-local and other internal
    /// addresses. On by default (on-prem receivers are usually internal); turn it off where an
    /// admin-API user must not be able to reach the internal network through the service.
    pub allow_private_targets: bool,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        WebhooksSection {
            allow_private_targets: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliverySection {
    /// Time zone of the quota's calendar month (Lark resets it on the 1st).
    pub quota_timezone: String,
    /// Count every API in one shared 50/s bucket instead of 50/s per API (for cautious sites).
    pub shared_api_bucket: bool,
    /// Lark's per-app limit of calls per second on each API (50). Lower it to leave room for
    /// other tools using the same app; raise it only where Lark grants more (or in tests against a
    /// simulator without limits).
    pub per_api_per_second: usize,
    /// Lark's per-app limit of sends per minute (1,000); same advice as `per_api_per_second`.
    pub sends_per_minute: usize,
    /// A job still failing this many hours after its first attempt is marked failed.
    pub give_up_after_hours: u64,
    /// Operation-log entries older than this are pruned.
    pub oplog_retention_days: u64,
    /// Degradation policy: cosmetic card refreshes wait below this share of the quota left (%).
    pub degrade_cosmetic_below_pct: u8,
    /// Info-level sends and updates wait below this share left (%).
    pub degrade_info_below_pct: u8,
    /// Warning-level sends to chats wait below this share left (%); pages to people never wait.
    pub degrade_warning_chat_below_pct: u8,
}

impl Default for DeliverySection {
    fn default() -> Self {
        DeliverySection {
            quota_timezone: "Asia/Shanghai".into(),
            shared_api_bucket: false,
            per_api_per_second: 50,
            sends_per_minute: 1000,
            give_up_after_hours: 24,
            oplog_retention_days: 30,
            degrade_cosmetic_below_pct: 20,
            degrade_info_below_pct: 10,
            degrade_warning_chat_below_pct: 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LarkConfig {
    /// How long a Lark delivery is remembered for dedup, and the age past which a signed request
    /// is refused as a replay. Lark redelivers for about 7 hours, so at least 8.
    pub dedup_ttl_hours: u64,
    /// Whether an integration may send its Open API calls (and its App Secret) to a base URL
    /// other than Feishu's or Lark's: for the simulator in the demo and tests, or a vetted
    /// egress proxy. Off by default.
    pub allow_api_base_url_override: bool,
}

impl Default for LarkConfig {
    fn default() -> Self {
        LarkConfig {
            dedup_ttl_hours: 24,
            allow_api_base_url_override: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Base of the URLs Lark reaches us at, e.g. `https://oncall.example.com`.
    pub public_url: Option<String>,
    /// Address of the public listener (Lark callbacks, homepage, health).
    pub listen: String,
    /// Optional second listener for the admin UI and API; unset = served on `listen`.
    pub admin_listen: Option<String>,
    /// PEM certificate chain; HTTPS on every listener when set with `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// Open connections each listener serves at once; new ones beyond are closed at once, so
    /// the open ones (and `/healthz`) keep working. Lowered to fit the open-file limit.
    pub max_connections: usize,
    /// Reverse proxies (addresses or CIDR blocks) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<String>,
    /// Whom people in Lark are told to ask when they may not act or are not a member yet,
    /// e.g. "the SRE team (sre@example.com)".
    pub admin_contact: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// The redb state file; its directory also holds the secret-encryption key file.
    pub path: PathBuf,
    /// Memory for caching the state file's pages, in MiB. The cache fills up to this as the file
    /// is used (the dedup set alone grows with the callback rate times `lark.dedup_ttl_hours`),
    /// so it bounds the service's memory.
    pub cache_mb: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            public_url: None,
            listen: "0.0.0.0:8443".into(),
            admin_listen: None,
            tls_cert: None,
            tls_key: None,
            max_body_bytes: 1024 * 1024,
            max_connections: 4096,
            trusted_proxies: Vec::new(),
            admin_contact: None,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            path: PathBuf::from("/var/lib/lark-oncall/state.redb"),
            cache_mb: 16,
        }
    }
}

/// A configuration problem, tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

impl ConfigError {
    fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The validated settings the server runs with, derived from [`Config`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub public_url: Url,
    pub listen: SocketAddr,
    pub admin_listen: Option<SocketAddr>,
    pub tls: Option<TlsFiles>,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub storage_path: PathBuf,
    pub storage_cache_bytes: usize,
    pub log: LogConfig,
    pub dedup_ttl: std::time::Duration,
    pub delivery: crate::delivery::DeliveryConfig,
    pub oplog_retention: chrono::Duration,
    /// Peers whose `X-Forwarded-For` is believed (`server.trusted_proxies`).
    pub trusted_proxies: Vec<crate::auth::client_ip::Cidr>,
    /// `server.admin_contact`, trimmed; `None` when unset or empty.
    pub admin_contact: Option<String>,
    /// `lark.allow_api_base_url_override`.
    pub allow_api_base_url_override: bool,
    /// `webhooks.allow_private_targets`.
    pub allow_private_webhook_targets: bool,
    pub homepage: crate::homepage::HomepageConfig,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Settings {
    /// Base of the Lark-facing URLs, without a trailing slash.
    pub fn public_base(&self) -> &str {
        self.public_url.as_str().trim_end_matches('/')
    }

    /// The directory holding the state file and its companions (key file, CLI token).
    pub fn state_dir(&self) -> &Path {
        self.storage_path.parent().unwrap_or(Path::new("."))
    }

    /// The journal of card deliveries already seen: `<storage.path>.seen/`, beside the state file.
    pub fn card_seen_dir(&self) -> PathBuf {
        let mut dir = self.storage_path.clone().into_os_string();
        dir.push(".seen");
        PathBuf::from(dir)
    }
}

impl Config {
    /// Reads `path` (a missing file is an error) and applies the environment overrides.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("config", format!("cannot read {}: {e}", path.display())))?;
        Config::from_sources(&text, std::env::vars())
    }

    /// Parses TOML text, then applies `LARK_ONCALL_*` overrides from `env`.
    pub fn from_sources(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new("config", format!("invalid TOML: {}", e.message()))
        })?;
        apply_env(&mut table, env)?;
        let mut unknown = Vec::new();
        let mut note_unknown = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let tracked = serde_ignored::Deserializer::new(toml::Value::Table(table), &mut note_unknown);
        let config: Config = serde_path_to_error::deserialize(tracked)
            .map_err(|e| ConfigError::new(e.path().to_string(), e.inner().to_string()))?;
        if let Some(key) = unknown.into_iter().next() {
            return Err(ConfigError::new(key, "unknown key"));
        }
        Ok(config)
    }

    /// Checks everything that can be checked without binding sockets.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let s = &self.server;
        let public_url = match &s.public_url {
            None => {
                return Err(ConfigError::new(
                    "server.public_url",
                    "is required: set it to the https:// address Lark reaches this server at",
                ));
            }
            Some(raw) => parse_public_url(raw)?,
        };
        let listen = parse_addr("server.listen", &s.listen)?;
        let admin_listen = s
            .admin_listen
            .as_deref()
            .map(|a| parse_addr("server.admin_listen", a))
            .transpose()?;
        let tls = match (&s.tls_cert, &s.tls_key) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "server.tls_key",
                    "must be set together with server.tls_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "server.tls_cert",
                    "must be set together with server.tls_key",
                ));
            }
            (Some(cert), Some(key)) => {
                check_readable("server.tls_cert", cert)?;
                check_readable("server.tls_key", key)?;
                crate::listener::tls::load_certified_key(cert, key)
                    .map_err(|e| ConfigError::new(e.key(), e.to_string()))?;
                Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })
            }
        };
        if s.max_body_bytes < 1024 {
            return Err(ConfigError::new("server.max_body_bytes", "must be at least 1024"));
        }
        if !(1..=1_000_000).contains(&s.max_connections) {
            return Err(ConfigError::new("server.max_connections", "must be 1 to 1000000"));
        }
        check_storage_dir(&self.storage.path)?;
        if !(4..=65_536).contains(&self.storage.cache_mb) {
            return Err(ConfigError::new("storage.cache_mb", "must be 4 to 65536 (MiB)"));
        }
        if !(1..=24 * 30).contains(&self.homepage.resend_window_hours) {
            return Err(ConfigError::new(
                "homepage.resend_window_hours",
                "must be 1 to 720 (hours)",
            ));
        }
        if !(8..=24 * 30).contains(&self.lark.dedup_ttl_hours) {
            return Err(ConfigError::new(
                "lark.dedup_ttl_hours",
                "must be 8 to 720: Lark redelivers events for about 7 hours",
            ));
        }
        let delivery = self.delivery_config()?;
        let trusted_proxies = s
            .trusted_proxies
            .iter()
            .map(|raw| {
                raw.parse().map_err(|e: crate::auth::client_ip::CidrError| {
                    ConfigError::new("server.trusted_proxies", e.to_string())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let admin_contact = match s.admin_contact.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(contact) if contact.chars().count() > 200 || contact.chars().any(char::is_control) => {
                return Err(ConfigError::new(
                    "server.admin_contact",
                    "at most 200 characters on one line",
                ));
            }
            Some(contact) => Some(contact.to_string()),
        };
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            ConfigError::new("log.level", format!("invalid filter {:?}: {e}", self.log.level))
        })?;
        Ok(Settings {
            public_url,
            listen,
            admin_listen,
            tls,
            max_body_bytes: s.max_body_bytes,
            max_connections: s.max_connections,
            storage_path: self.storage.path.clone(),
            storage_cache_bytes: (self.storage.cache_mb * 1024 * 1024) as usize,
            log: self.log.clone(),
            dedup_ttl: std::time::Duration::from_secs(self.lark.dedup_ttl_hours * 3600),
            delivery,
            oplog_retention: chrono::Duration::days(self.delivery.oplog_retention_days as i64),
            trusted_proxies,
            admin_contact: admin_contact.clone(),
            allow_api_base_url_override: self.lark.allow_api_base_url_override,
            allow_private_webhook_targets: self.webhooks.allow_private_targets,
            homepage: crate::homepage::HomepageConfig {
                admin_contact: admin_contact.clone(),
                resend_window: chrono::Duration::hours(self.homepage.resend_window_hours as i64),
            },
        })
    }

    fn delivery_config(&self) -> Result<crate::delivery::DeliveryConfig, ConfigError> {
        let d = &self.delivery;
        let quota_timezone: chrono_tz::Tz = d.quota_timezone.parse().map_err(|_| {
            ConfigError::new(
                "delivery.quota_timezone",
                format!(
                    "{:?} is not an IANA time zone like Asia/Shanghai",
                    d.quota_timezone
                ),
            )
        })?;
        if !(1..=24 * 30).contains(&d.give_up_after_hours) {
            return Err(ConfigError::new(
                "delivery.give_up_after_hours",
                "must be 1 to 720",
            ));
        }
        if d.per_api_per_second == 0 {
            return Err(ConfigError::new(
                "delivery.per_api_per_second",
                "must be at least 1",
            ));
        }
        if d.sends_per_minute == 0 {
            return Err(ConfigError::new(
                "delivery.sends_per_minute",
                "must be at least 1",
            ));
        }
        if !(1..=3650).contains(&d.oplog_retention_days) {
            return Err(ConfigError::new(
                "delivery.oplog_retention_days",
                "must be 1 to 3650",
            ));
        }
        for (key, pct) in [
            (
                "delivery.degrade_cosmetic_below_pct",
                d.degrade_cosmetic_below_pct,
            ),
            ("delivery.degrade_info_below_pct", d.degrade_info_below_pct),
            (
                "delivery.degrade_warning_chat_below_pct",
                d.degrade_warning_chat_below_pct,
            ),
        ] {
            if pct > 100 {
                return Err(ConfigError::new(key, "must be a percentage, 0 to 100"));
            }
        }
        let defaults = crate::delivery::DeliveryConfig::default();
        Ok(crate::delivery::DeliveryConfig {
            limits: crate::delivery::limits::LimitConfig {
                shared_api_bucket: d.shared_api_bucket,
                per_api_per_second: d.per_api_per_second,
                sends_per_minute: d.sends_per_minute,
                ..defaults.limits.clone()
            },
            degradation: crate::delivery::quota::DegradationPolicy {
                cosmetic_below_pct: d.degrade_cosmetic_below_pct,
                info_below_pct: d.degrade_info_below_pct,
                warning_chat_below_pct: d.degrade_warning_chat_below_pct,
            },
            quota_timezone,
            give_up_after: std::time::Duration::from_secs(d.give_up_after_hours * 3600),
            ..defaults
        })
    }

    /// The effective configuration as TOML. Holds no secrets today; any added later are redacted here.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

fn parse_public_url(raw: &str) -> Result<Url, ConfigError> {
    let key = "server.public_url";
    let url = Url::parse(raw).map_err(|e| ConfigError::new(key, format!("{raw:?} is not a URL: {e}")))?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(ConfigError::new(key, format!("{raw:?} must be an http(s) URL")));
    }
    if url.host_str().is_none() {
        return Err(ConfigError::new(key, format!("{raw:?} has no host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            key,
            format!("{raw:?} must not have a query or fragment"),
        ));
    }
    Ok(url)
}

fn parse_addr(key: &str, raw: &str) -> Result<SocketAddr, ConfigError> {
    raw.parse().map_err(|_| {
        ConfigError::new(
            key,
            format!("{raw:?} is not an address like 0.0.0.0:8443 or [::1]:8080"),
        )
    })
}

fn check_readable(key: &str, path: &Path) -> Result<(), ConfigError> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

fn check_storage_dir(path: &Path) -> Result<(), ConfigError> {
    let key = "storage.path";
    if path.is_dir() {
        return Err(ConfigError::new(
            key,
            format!("{} is a directory; name the state file", path.display()),
        ));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir)
        .map_err(|e| ConfigError::new(key, format!("directory {} is not usable: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(ConfigError::new(
            key,
            format!("{} is not a directory", dir.display()),
        ));
    }
    // Probe for write access the way the server will use it.
    let probe = dir.join(format!(".lark-oncall-probe-{}", std::process::id()));
    std::fs::write(&probe, b"")
        .and_then(|_| std::fs::remove_file(&probe))
        .map_err(|e| ConfigError::new(key, format!("directory {} is not writable: {e}", dir.display())))
}

fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default()).expect("defaults serialize");
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
        .collect();
    vars.sort();
    for (name, raw) in vars {
        let rest = &name[ENV_PREFIX.len()..];
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        let path = format!("{section}.{key}");
        let default = defaults.get(&section).and_then(|s| s.get(&key));
        let value = match default {
            Some(toml::Value::Integer(_)) => raw
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| ConfigError::new(&path, format!("{name}={raw:?} is not a whole number")))?,
            Some(toml::Value::Boolean(_)) => raw
                .parse::<bool>()
                .map(toml::Value::Boolean)
                .map_err(|_| ConfigError::new(&path, format!("{name}={raw:?} is not true or false")))?,
            // Lists (`server.trusted_proxies`) are comma-separated.
            Some(toml::Value::Array(_)) => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_string()))
                    .collect(),
            ),
            _ => toml::Value::String(raw),
        };
        let entry = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key, value);
            }
            _ => return Err(ConfigError::new(section, "is not a table")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
