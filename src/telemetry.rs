//! Logging set-up and the Prometheus registry every module registers its metrics in.

use std::io::IsTerminal;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

use serde::{Deserialize, Serialize};

/// `[log]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: `info`, `debug`, or per-module like `info,lark_oncall::web=debug`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Starts the global tracing subscriber. Under journald, timestamps and colours are left to it.
pub fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{},tokio_cron_scheduler=warn", log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let result = match (log.format, under_journald) {
        (LogFormat::Json, _) => builder.json().flatten_event(true).try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    // A second init (tests, demo re-entry) keeps the first subscriber.
    let _ = result;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub listener: &'static str,
    /// One of a fixed set of words (`web::method_label`): a label from a request must not grow
    /// the series.
    pub method: &'static str,
    pub status: u16,
}

/// Process-wide metrics; domains register theirs through [`Metrics::register`].
pub struct Metrics {
    registry: Mutex<Registry>,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_latency: Histogram,
    pub login_failures: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lark_oncall");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_latency = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 3.0,
        ]);
        let login_failures = Counter::default();
        registry.register("http_requests", "HTTP requests served", http_requests.clone());
        registry.register(
            "http_request_seconds",
            "HTTP request latency",
            http_latency.clone(),
        );
        registry.register(
            "admin_login_failures",
            "Failed or throttled admin logins",
            login_failures.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            http_requests,
            http_latency,
            login_failures,
        }
    }

    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .expect("metrics lock")
            .register(name, help, metric);
    }

    /// The registry in the OpenMetrics text format, which Prometheus scrapes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.lock().expect("metrics lock"))
            .expect("encoding to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
