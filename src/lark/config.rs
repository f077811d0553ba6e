//! Which Lark a client talks to and as which app: the Feishu (China) or Lark (international)
//! domains, or an override such as the simulator, plus the app's credentials.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::error::LarkError;

/// A secret string (App Secret, access token) whose Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_string())
    }
}

/// Feishu (mainland China) or Lark (international): each has its own Open API and accounts host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Domain {
    Feishu,
    Lark,
}

impl Domain {
    /// The Open API base (reference §1).
    pub fn api_base_url(self) -> Url {
        let url = match self {
            Domain::Feishu => "https://open.feishu.cn",
            Domain::Lark => "https://open.larksuite.com",
        };
        Url::parse(url).expect("built-in URL")
    }

    /// The OAuth authorize host (reference §1, §5.8).
    pub fn accounts_url(self) -> Url {
        let url = match self {
            Domain::Feishu => "https://accounts.feishu.cn",
            Domain::Lark => "https://accounts.larksuite.com",
        };
        Url::parse(url).expect("built-in URL")
    }
}

/// Every call's time limit unless configured otherwise; Lark answers in well under a second.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Open API base, e.g. `https://open.feishu.cn` or the simulator's address.
    pub base_url: Url,
    /// Where users are sent to log in (`…/open-apis/authen/v1/authorize`).
    pub accounts_url: Url,
    pub app_id: String,
    pub app_secret: Secret,
    /// Limit on each HTTP exchange, connecting included.
    pub timeout: Duration,
}

impl ClientConfig {
    /// The URLs of `domain`, or `api_base_url` for both Open API and login when set (the
    /// simulator serves both on one address).
    pub fn for_domain(
        domain: Domain,
        api_base_url: Option<Url>,
        app_id: impl Into<String>,
        app_secret: Secret,
    ) -> ClientConfig {
        let (base_url, accounts_url) = match api_base_url {
            Some(url) => (url.clone(), url),
            None => (domain.api_base_url(), domain.accounts_url()),
        };
        ClientConfig {
            base_url,
            accounts_url,
            app_id: app_id.into(),
            app_secret,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), LarkError> {
        for (name, url) in [("base_url", &self.base_url), ("accounts_url", &self.accounts_url)] {
            if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                return Err(LarkError::Config(format!(
                    "{name} {url} is not an http(s) base URL"
                )));
            }
        }
        if self.app_id.trim().is_empty() {
            return Err(LarkError::Config("app_id is empty".into()));
        }
        if self.timeout.is_zero() {
            return Err(LarkError::Config("timeout is zero".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_pick_their_hosts_and_an_override_wins() {
        let feishu = ClientConfig::for_domain(Domain::Feishu, None, "cli_1", "s".into());
        assert_eq!(feishu.base_url.as_str(), "https://open.feishu.cn/");
        assert_eq!(feishu.accounts_url.as_str(), "https://accounts.feishu.cn/");
        let lark = ClientConfig::for_domain(Domain::Lark, None, "cli_1", "s".into());
        assert_eq!(lark.base_url.as_str(), "https://open.larksuite.com/");
        assert_eq!(lark.accounts_url.as_str(), "https://accounts.larksuite.com/");
        let sim = Url::parse("http://127.0.0.1:9000").unwrap();
        let over = ClientConfig::for_domain(Domain::Lark, Some(sim.clone()), "cli_1", "s".into());
        assert_eq!((over.base_url, over.accounts_url), (sim.clone(), sim));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let cfg = ClientConfig::for_domain(Domain::Feishu, None, "cli_1", "hunter2-secret".into());
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>") && shown.contains("cli_1"), "{shown}");
    }

    #[test]
    fn validation_rejects_unusable_settings() {
        let mut cfg = ClientConfig::for_domain(Domain::Feishu, None, "cli_1", "s".into());
        assert!(cfg.validate().is_ok());
        cfg.base_url = Url::parse("mailto:x@example.com").unwrap();
        assert!(matches!(cfg.validate(), Err(LarkError::Config(m)) if m.contains("base_url")));
        let mut cfg = ClientConfig::for_domain(Domain::Feishu, None, " ", "s".into());
        assert!(cfg.validate().is_err());
        cfg.app_id = "cli_1".into();
        cfg.timeout = Duration::ZERO;
        assert!(cfg.validate().is_err());
    }
}
