//! The services of a running appliance, built in one place: the store, auth, integrations and
//! their inbound pipeline, the outbox, the Lark clients, webhooks and incidents, with the
//! callbacks through which domains observe each other (an integration's change reaches the
//! outbox's plan and the Lark clients without any handler remembering to tell them) and the
//! housekeeping jobs. Imports no web: `web` is handed these services, `app` runs the process.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::auth::Auth;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::delivery::lark_executor::LarkClients;
use crate::delivery::metrics::DeliveryMetrics;
use crate::delivery::quota::Plan;
use crate::delivery::{CallClass, Delivery};
use crate::incident::Incidents;
use crate::integration::inbound::InboundPipeline;
use crate::integration::{IntegrationChange, Integrations, Live};
use crate::lark::{ClientConfig, LarkClient, LarkError, Secret};
use crate::schedule::notices::ScheduleNotices;
use crate::schedule::{LarkContact, Roster, Schedules};
use crate::scheduler::{Scheduler, Task};
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// Everything request handlers share.
pub struct Services {
    pub settings: Settings,
    pub store: Store,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub integrations: Arc<Integrations>,
    pub inbound: Arc<InboundPipeline>,
    /// The long-connection receiver of each integration in that receive mode.
    pub receivers: Arc<crate::integration::receiver::Receivers>,
    pub scheduler: Arc<Scheduler>,
    pub delivery: Arc<Delivery>,
    /// The Open API client of each integration.
    pub lark: Arc<LarkClients>,
    pub webhooks: Arc<crate::webhook::Webhooks>,
    /// Custom group-bot webhooks (notification targets) and the sender of their posts.
    pub bot_webhooks: Arc<crate::bot_webhook::BotWebhooks>,
    /// Incidents, members, alert sources, escalation rules and their cards.
    pub incidents: Arc<Incidents>,
    /// The app homepage inside Lark: logins, sessions, member linking.
    pub homepage: Arc<crate::homepage::Homepage>,
    /// On-call schedules and who is on call in them.
    pub schedules: Arc<Schedules>,
    /// Handoff notices and daily "who is on call" cards, sent through the outbox.
    pub schedule_notices: Arc<ScheduleNotices>,
    /// False once shutdown starts, so `/readyz` tells load balancers to stop sending.
    pub ready: AtomicBool,
}

impl Services {
    pub async fn open(settings: Settings) -> anyhow::Result<Arc<Services>> {
        Services::open_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`Services::open`] on a given clock: tests move time (escalations, quota months, token
    /// expiry) instead of waiting for it.
    pub async fn open_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<Services>> {
        let store = Store::open_with_cache(&settings.storage_path, settings.storage_cache_bytes)?;
        let integrations = Arc::new(Integrations::open(
            store.clone(),
            settings.state_dir(),
            settings.public_base(),
            settings.allow_api_base_url_override,
            crate::webhook::any_subscription(&store)? || crate::bot_webhook::any(&store)?,
        )?);
        let cards_seen = crate::store::seen::SeenSet::open(
            &settings.card_seen_dir(),
            clock.now().timestamp_millis() - settings.dedup_ttl.as_millis() as i64,
        )?;
        let inbound = Arc::new(InboundPipeline::new(
            integrations.clone(),
            store.clone(),
            clock.clone(),
            settings.dedup_ttl,
            cards_seen,
        ));
        let scheduler = Scheduler::new().await?;
        let metrics = Arc::new(Metrics::new());
        let receivers = Arc::new(crate::integration::receiver::Receivers::new(
            integrations.clone(),
            inbound.clone(),
            clock.clone(),
            settings.allow_api_base_url_override,
            receiver_metrics(&metrics),
        ));
        let commits = store.commit_metrics();
        metrics.register(
            "store_commit_seconds",
            "Time to commit one group of writes to the state file",
            commits.seconds.clone(),
        );
        metrics.register(
            "store_commit_writes",
            "Writes carried by one commit",
            commits.batch_size.clone(),
        );
        let delivery = Delivery::open(
            store.clone(),
            clock.clone(),
            settings.delivery.clone(),
            DeliveryMetrics::new(&metrics),
        )?;
        let lark = Arc::new(LarkClients::new());
        let webhooks = crate::webhook::Webhooks::new(
            store.clone(),
            integrations.secret_box(),
            clock.clone(),
            crate::webhook::RetryPolicy::default(),
            settings.allow_private_webhook_targets,
        );
        let bot_webhooks = crate::bot_webhook::BotWebhooks::open(
            store.clone(),
            integrations.secret_box(),
            clock.clone(),
            settings.allow_api_base_url_override,
        )?;
        let schedules = Schedules::new(
            store.clone(),
            clock.clone(),
            Arc::new(MemberRoster(store.clone())),
        );
        let schedule_notices = ScheduleNotices::new(schedules.clone(), delivery.clone());
        let incidents = Incidents::new(
            store.clone(),
            clock.clone(),
            crate::incident::Collaborators {
                delivery: delivery.clone(),
                lark: lark.clone(),
                webhooks: webhooks.clone(),
                bot_webhooks: bot_webhooks.clone(),
                schedules: schedules.clone(),
            },
            settings.public_base(),
        )?;
        let auth = Auth::new(store.clone(), metrics.login_failures.clone());
        let homepage = crate::homepage::Homepage::open(
            store.clone(),
            clock.clone(),
            incidents.clone(),
            lark.clone(),
            delivery.clone(),
            settings.public_base(),
            settings.homepage.clone(),
        )?;
        let app = Arc::new(Services {
            settings,
            store,
            auth,
            metrics,
            clock,
            integrations,
            inbound,
            receivers,
            scheduler,
            delivery,
            lark,
            webhooks,
            bot_webhooks,
            incidents,
            homepage,
            schedules,
            schedule_notices,
            ready: AtomicBool::new(false),
        });
        let services = Arc::downgrade(&app);
        app.integrations.on_change(Arc::new(move |change| {
            let Some(services) = services.upgrade() else {
                return;
            };
            match change {
                IntegrationChange::Saved(live) => {
                    services.integration_saved(live);
                    services.receivers.apply(live);
                }
                IntegrationChange::Removed(id) => {
                    services.lark.remove(id);
                    services.receivers.remove(id);
                }
            }
        }));
        app.inbound.on_event(
            "im.chat.disbanded_v1",
            Arc::new(crate::incident::war_room::DisbandedEvents {
                chats: crate::integration::chats::DisbandedHandler {
                    store: app.store.clone(),
                    clock: app.clock.clone(),
                    delivery: app.delivery.clone(),
                },
                incidents: app.incidents.clone(),
            }),
        );
        let membership = Arc::new(crate::integration::chats::MembershipHandler {
            store: app.store.clone(),
            clock: app.clock.clone(),
            delivery: app.delivery.clone(),
        });
        for event_type in crate::integration::chats::MEMBERSHIP_EVENTS {
            app.inbound.on_event(event_type, membership.clone());
        }
        let actions = Arc::new(crate::incident::actions::LarkActions::new(
            app.incidents.clone(),
            app.delivery.clone(),
            app.settings.public_base(),
            app.settings.admin_contact.clone(),
        ));
        app.inbound.on_card_action(actions.clone());
        app.inbound.on_event("im.message.receive_v1", actions);
        Ok(app)
    }

    /// Creates the admin account on the first start and logs its password, once. `serve` does;
    /// `demo` sets its own password instead, so the one it prints is the only one there is.
    pub fn create_first_admin(&self) -> anyhow::Result<()> {
        if let Some(password) = self.auth.ensure_admin()? {
            tracing::warn!(
                user = crate::auth::ADMIN_USER,
                password = %password,
                "created the admin account; this password is shown once: change it with `lark-oncall admin set-password`"
            );
            // The hash's 19 MiB buffer is freed; an idle appliance would keep it for minutes.
            crate::memory::release_freed();
        }
        Ok(())
    }

    /// Registers the housekeeping jobs and starts the scheduler.
    pub(crate) async fn start_scheduler(self: &Arc<Self>) -> anyhow::Result<()> {
        let inbound = self.inbound.clone();
        let prune_seen: Task = Arc::new(move || {
            let inbound = inbound.clone();
            Box::pin(async move {
                inbound
                    .prune_seen()
                    .await
                    .map(|n| format!("{n} expired dedup entries removed"))
                    .map_err(|e| e.to_string())
            })
        });
        self.scheduler
            .add("dedup_prune", "0 7 * * * *", prune_seen)
            .await?;
        let (store, clock, retention) = (
            self.store.clone(),
            self.clock.clone(),
            self.settings.oplog_retention,
        );
        let prune_oplog: Task = Arc::new(move || {
            let (store, cutoff) = (store.clone(), clock.now() - retention);
            Box::pin(async move {
                crate::delivery::oplog::prune(&store, cutoff)
                    .await
                    .map(|n| format!("{n} operation-log entries older than {cutoff} removed"))
                    .map_err(|e| e.to_string())
            })
        });
        self.scheduler
            .add("oplog_prune", "0 17 3 * * *", prune_oplog)
            .await?;
        let delivery = self.delivery.clone();
        let quota_month: Task = Arc::new(move || {
            let delivery = delivery.clone();
            Box::pin(async move {
                delivery.tick();
                Ok("quota months checked; held jobs released where a month rolled over".into())
            })
        });
        // Hourly, so a reset on the 1st is seen promptly in any configured time zone.
        self.scheduler
            .add("quota_month", "0 0 * * * *", quota_month)
            .await?;
        let app = Arc::downgrade(self);
        let refresh: Task = Arc::new(move || {
            let app = app.clone();
            Box::pin(async move {
                match app.upgrade() {
                    Some(app) => app.refresh_tokens().await,
                    None => Ok("shutting down".into()),
                }
            })
        });
        self.scheduler
            .add("token_refresh", "30 * * * * *", refresh)
            .await?;
        let delivery = self.delivery.clone();
        let sweep: Task = Arc::new(move || {
            let delivery = delivery.clone();
            Box::pin(async move {
                delivery
                    .sweep()
                    .map(|n| format!("{n} unscheduled outbox jobs put back"))
                    .map_err(|e| e.to_string())
            })
        });
        self.scheduler.add("retry_sweep", "15 */5 * * * *", sweep).await?;
        let auth = self.auth.clone();
        let prune_sessions: Task = Arc::new(move || {
            let auth = auth.clone();
            Box::pin(async move {
                auth.prune()
                    .await
                    .map(|n| {
                        format!(
                            "{n} expired sessions removed; {} login-limiter entries kept",
                            auth.throttle_entries()
                        )
                    })
                    .map_err(|e| e.to_string())
            })
        });
        self.scheduler
            .add("session_prune", "0 */10 * * * *", prune_sessions)
            .await?;
        let notices = self.schedule_notices.clone();
        let schedule_notices: Task = Arc::new(move || {
            let notices = notices.clone();
            Box::pin(async move { notices.send_due().await.map_err(|e| e.to_string()) })
        });
        // Every minute, so a notice goes out within a minute of its time.
        self.scheduler
            .add("schedule_notices", "0 * * * * *", schedule_notices)
            .await?;
        self.scheduler.start().await?;
        Ok(())
    }

    /// An integration was created or changed: its plan to the outbox, a new Open API client for
    /// its (possibly new) credentials.
    fn integration_saved(&self, live: &Live) {
        self.delivery.set_plan(live.id(), live.record.plan);
        let base = match live.record.api_base_url.as_deref() {
            Some(_) if !self.settings.allow_api_base_url_override => {
                // Set while the switch was on; with it off, the App Secret goes to Lark only.
                tracing::warn!(
                    integration = %live.id(),
                    "ignoring the integration's api_base_url: lark.allow_api_base_url_override is off"
                );
                None
            }
            other => other.and_then(|u| url::Url::parse(u).ok()),
        };
        let config = ClientConfig::for_domain(
            live.record.domain,
            base,
            live.record.app_id.clone(),
            Secret::new(live.app_secret.clone()),
        );
        match LarkClient::new(config, self.clock.clone()) {
            Ok(client) => {
                let client = client.with_call_observer(self.quota_observer(live.id()));
                self.lark.insert(live.id(), Arc::new(client));
            }
            Err(e) => tracing::error!(integration = %live.id(), error = %e, "cannot build a Lark client"),
        }
    }

    /// Counts in the quota ledger the calls made outside the outbox (token fetches, look-ups,
    /// chat lists, OAuth, delayed card updates); the outbox counts its own.
    fn quota_observer(&self, integration: &str) -> crate::lark::CallObserver {
        let delivery = Arc::downgrade(&self.delivery);
        let integration = integration.to_string();
        Arc::new(move |api: &'static str, result: Result<(), &LarkError>| {
            let class = match api {
                "auth.tenant_access_token" => CallClass::Token,
                "contact.user.batch_get_id" => CallClass::UserLookup,
                "authen.oauth.token" | "authen.user_info" => CallClass::Oauth,
                "interactive.card.update" => CallClass::CardUpdate,
                "im.chat.list" => CallClass::Other,
                _ => return,
            };
            // Calls that never reached Lark, or that it refused before counting, cost nothing.
            if matches!(
                result,
                Err(LarkError::Transient { .. } | LarkError::RateLimited { .. })
            ) {
                return;
            }
            let (Some(delivery), integration) = (delivery.upgrade(), integration.clone()) else {
                return;
            };
            tokio::spawn(async move {
                if let Err(e) = delivery.count_calls(&integration, class, 1).await {
                    tracing::error!(error = %e, "cannot count a Lark call in the quota ledger");
                }
            });
        })
    }

    /// Refreshes tenant tokens ahead of expiry where they will be used: always on paid plans, on
    /// Basic Free only while jobs wait (a warm token costs a call every ~90 minutes, about 5 % of
    /// a 10,000-call month).
    async fn refresh_tokens(&self) -> Result<String, String> {
        let now = self.clock.now();
        let (mut refreshed, mut failed) = (0, Vec::new());
        for live in self.integrations.all() {
            let Some(client) = self.lark.get(live.id()) else {
                continue;
            };
            let due = client.token_refresh_at().is_some_and(|at| at <= now);
            let wanted = live.record.plan == Plan::Paid || self.delivery.pending_for(live.id()) > 0;
            if !(due && wanted) {
                continue;
            }
            match client.ensure_tenant_token().await {
                Ok(()) => refreshed += 1,
                Err(e) => {
                    tracing::warn!(integration = %live.id(), error = %e, "tenant token refresh failed");
                    failed.push(format!("{}: {}", live.id(), e.reason()));
                }
            }
        }
        if failed.is_empty() {
            Ok(format!("{refreshed} tenant tokens refreshed"))
        } else {
            Err(format!("{refreshed} refreshed; failed: {}", failed.join(", ")))
        }
    }
}

/// Schedules name members by id; their names live with the incident domain's members.
struct MemberRoster(Store);

impl Roster for MemberRoster {
    fn name(&self, member_id: &str) -> Result<Option<String>, StoreError> {
        let member = self
            .0
            .read(|r| r.get(&crate::incident::tables::MEMBERS, member_id))?;
        Ok(member.map(|m| m.name))
    }

    /// The member's first linked integration (by id), so one person gets one notice.
    fn lark_contact(&self, member_id: &str) -> Result<Option<LarkContact>, StoreError> {
        let member = self
            .0
            .read(|r| r.get(&crate::incident::tables::MEMBERS, member_id))?;
        Ok(member.and_then(|m| {
            m.lark
                .into_iter()
                .next()
                .map(|(integration_id, identity)| LarkContact {
                    integration_id,
                    open_id: identity.open_id,
                })
        }))
    }

    fn has_integration(&self, integration_id: &str) -> Result<bool, StoreError> {
        let found = self
            .0
            .read(|r| r.get(&crate::integration::tables::INTEGRATIONS, integration_id))?;
        Ok(found.is_some())
    }
}

fn receiver_metrics(metrics: &Metrics) -> crate::integration::receiver::ReceiverMetrics {
    let m = crate::integration::receiver::ReceiverMetrics::default();
    metrics.register(
        "long_connection_connected",
        "1 while the integration's long connection to Lark is open",
        m.connected.clone(),
    );
    metrics.register(
        "long_connection_reconnects",
        "Long connections opened after the first one",
        m.reconnects.clone(),
    );
    metrics.register(
        "long_connection_events",
        "Payloads received over the long connection",
        m.events.clone(),
    );
    metrics.register(
        "long_connection_stopped",
        "1 when the long connection stopped retrying (the reason is on the integration)",
        m.stopped.clone(),
    );
    m
}
