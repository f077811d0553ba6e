//! Prometheus metrics of the delivery engine.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::telemetry::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub kind: &'static str,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabels {
    pub code: i64,
}

#[derive(Clone)]
pub struct DeliveryMetrics {
    pub queued: Family<KindLabels, Gauge>,
    pub in_flight: Gauge,
    pub outcomes: Family<OutcomeLabels, Counter>,
    pub calls: Family<ApiLabels, Counter>,
    pub lark_errors: Family<CodeLabels, Counter>,
    pub retries: Counter,
    pub coalesced: Counter,
    pub quota_warnings: Counter,
    /// Seconds from when a job could first go (created, or its retry time) to when it started.
    pub limiter_wait: Histogram,
}

impl DeliveryMetrics {
    pub fn new(registry: &Metrics) -> DeliveryMetrics {
        let m = DeliveryMetrics {
            queued: Family::default(),
            in_flight: Gauge::default(),
            outcomes: Family::default(),
            calls: Family::default(),
            lark_errors: Family::default(),
            retries: Counter::default(),
            coalesced: Counter::default(),
            quota_warnings: Counter::default(),
            limiter_wait: Histogram::new([0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0]),
        };
        registry.register(
            "delivery_jobs_queued",
            "Outbox jobs waiting, by kind",
            m.queued.clone(),
        );
        registry.register(
            "delivery_jobs_in_flight",
            "Lark calls in flight",
            m.in_flight.clone(),
        );
        registry.register(
            "delivery_job_outcomes",
            "Job outcomes by kind",
            m.outcomes.clone(),
        );
        registry.register(
            "delivery_lark_calls",
            "Lark calls made by the outbox, by API",
            m.calls.clone(),
        );
        registry.register(
            "delivery_lark_errors",
            "Lark error codes seen",
            m.lark_errors.clone(),
        );
        registry.register(
            "delivery_retries",
            "Job attempts scheduled for retry",
            m.retries.clone(),
        );
        registry.register(
            "delivery_coalesced_updates",
            "Card updates merged into a pending one",
            m.coalesced.clone(),
        );
        registry.register(
            "delivery_quota_warnings",
            "Quota thresholds crossed",
            m.quota_warnings.clone(),
        );
        registry.register(
            "delivery_limiter_wait_seconds",
            "Wait imposed by Lark's limits",
            m.limiter_wait.clone(),
        );
        m
    }

    pub fn queued(&self, kind: &'static str, delta: i64) {
        self.queued.get_or_create(&KindLabels { kind }).inc_by(delta);
    }

    pub fn outcome(&self, kind: &'static str, outcome: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                kind,
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn call(&self, api: &'static str) {
        self.calls.get_or_create(&ApiLabels { api }).inc();
    }

    pub fn lark_error(&self, code: i64) {
        self.lark_errors.get_or_create(&CodeLabels { code }).inc();
    }
}
