//! Long-connection receivers: one [`LongConnection`] per integration whose `receive_modes` has
//! `long_connection`, started once the service serves, restarted when the integration is saved
//! (so saving is how an admin retries after a refusal), stopped when it is deleted. What arrives
//! goes through the same [`InboundPipeline`] as the Request URL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::inbound::{InboundError, InboundPipeline};
use super::{Integrations, Live, ReceiveMode};
use crate::clock::Clock;
use crate::lark::Secret;
use crate::lark::long_connection::{
    ConnectionState, ConnectionStatus, HandlerResult, LongConnection, PayloadHandler,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IntegrationLabel {
    pub integration: String,
}

/// The receivers' series in `/metrics`, one per integration in long-connection mode.
#[derive(Clone, Default)]
pub struct ReceiverMetrics {
    /// 1 while connected.
    pub connected: Family<IntegrationLabel, Gauge>,
    pub reconnects: Family<IntegrationLabel, Gauge>,
    pub events: Family<IntegrationLabel, Gauge>,
    /// 1 once the client has stopped retrying (see the integration's `last_error`).
    pub stopped: Family<IntegrationLabel, Gauge>,
}

impl ReceiverMetrics {
    fn observe(&self, integration: &str, s: &ConnectionStatus) {
        let label = IntegrationLabel {
            integration: integration.to_string(),
        };
        self.connected
            .get_or_create(&label)
            .set(i64::from(s.state == ConnectionState::Connected));
        self.stopped.get_or_create(&label).set(i64::from(
            s.state == ConnectionState::Stopped && s.last_error.is_some(),
        ));
        self.reconnects.get_or_create(&label).set(s.reconnects as i64);
        self.events.get_or_create(&label).set(s.events_received as i64);
    }

    fn forget(&self, integration: &str) {
        let label = IntegrationLabel {
            integration: integration.to_string(),
        };
        for family in [&self.connected, &self.reconnects, &self.events, &self.stopped] {
            family.remove(&label);
        }
    }
}

/// Hands a connection's payloads to the pipeline under one integration's id.
struct ToPipeline {
    pipeline: Arc<InboundPipeline>,
    integration_id: String,
}

impl PayloadHandler for ToPipeline {
    fn handle<'a>(&'a self, payload: &'a [u8]) -> BoxFuture<'a, HandlerResult> {
        Box::pin(async move {
            match self
                .pipeline
                .handle_long_connection(&self.integration_id, payload)
                .await
            {
                Ok(answer) => Ok(answer),
                // A payload that is not an event will not become one when redelivered: ack it,
                // the refusal is on the integration's callback_stats.
                Err(InboundError::Rejected(_)) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

struct Running {
    stop: watch::Sender<bool>,
}

/// Every integration's receiver.
pub struct Receivers {
    integrations: Arc<Integrations>,
    pipeline: Arc<InboundPipeline>,
    clock: Arc<dyn Clock>,
    allow_base_url_override: bool,
    metrics: ReceiverMetrics,
    serving: AtomicBool,
    running: Mutex<HashMap<String, Running>>,
}

impl Receivers {
    pub fn new(
        integrations: Arc<Integrations>,
        pipeline: Arc<InboundPipeline>,
        clock: Arc<dyn Clock>,
        allow_base_url_override: bool,
        metrics: ReceiverMetrics,
    ) -> Receivers {
        Receivers {
            integrations,
            pipeline,
            clock,
            allow_base_url_override,
            metrics,
            serving: AtomicBool::new(false),
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Starts the receivers of every integration; until then [`Receivers::apply`] only records.
    /// They stop when `stop` turns true.
    pub fn start(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        self.serving.store(true, Ordering::SeqCst);
        for live in self.integrations.all() {
            self.apply(&live);
        }
        let me = self.clone();
        tokio::spawn(async move {
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
            me.serving.store(false, Ordering::SeqCst);
            for (_, r) in me.running.lock().expect("receivers lock").drain() {
                let _ = r.stop.send(true);
            }
        });
    }

    /// (Re)starts or stops the receiver of `live` after it was created or saved.
    pub fn apply(&self, live: &Live) {
        self.remove(live.id());
        if !self.serving.load(Ordering::SeqCst) || !live.record.receives_by(ReceiveMode::LongConnection) {
            return;
        }
        let base = match live.record.api_base_url.as_deref() {
            Some(url) if self.allow_base_url_override => url::Url::parse(url).ok(),
            _ => None,
        }
        .unwrap_or_else(|| live.record.domain.api_base_url());
        let handler = Arc::new(ToPipeline {
            pipeline: self.pipeline.clone(),
            integration_id: live.id().to_string(),
        });
        let metrics = self.metrics.clone();
        let id = live.id().to_string();
        let connection = LongConnection::new(
            base,
            live.record.app_id.clone(),
            Secret::new(live.app_secret.clone()),
            handler,
            self.clock.clone(),
        )
        .map(|c| c.on_change(Arc::new(move |s: &ConnectionStatus| metrics.observe(&id, s))));
        let connection = match connection {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(integration = %live.id(), error = %e, "cannot build a long-connection client");
                return;
            }
        };
        self.integrations
            .set_connection_status(live.id(), Some(connection.status()));
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(connection.run(stopped));
        self.running
            .lock()
            .expect("receivers lock")
            .insert(live.id().to_string(), Running { stop });
    }

    /// Stops the receiver of integration `id`, if it has one.
    pub fn remove(&self, id: &str) {
        if let Some(r) = self.running.lock().expect("receivers lock").remove(id) {
            let _ = r.stop.send(true);
        }
        self.integrations.set_connection_status(id, None);
        self.metrics.forget(id);
    }
}
