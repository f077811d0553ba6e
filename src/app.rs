//! Start-up and shutdown of the service: opens the store, creates the admin account on first
//! start, binds the listeners, signals systemd, reloads TLS on SIGHUP and drains on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::delivery::lark_executor::{LarkClients, LarkExecutor};
use crate::delivery::metrics::DeliveryMetrics;
use crate::delivery::quota::Plan;
use crate::delivery::{CallClass, Delivery};
use crate::incident::Incidents;
use crate::integration::Integrations;
use crate::integration::Live;
use crate::integration::inbound::InboundPipeline;
use crate::integration::secrets::write_private;
use crate::lark::{ClientConfig, LarkClient, LarkError, Secret};
use crate::scheduler::{Scheduler, Task};
use crate::store::Store;
use crate::telemetry::Metrics;
use crate::web::tls::ReloadableCert;

/// Name of the file (in the state directory, mode 0600) holding the running service's CLI token.
pub const CLI_TOKEN_FILE: &str = "cli-token";
/// Name of the file (in the state directory) recording where the running service listens.
pub const ADDRESS_FILE: &str = "listen-addresses.json";

/// Everything request handlers share.
pub struct App {
    pub settings: Settings,
    pub store: Store,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub integrations: Arc<Integrations>,
    pub inbound: Arc<InboundPipeline>,
    pub scheduler: Arc<Scheduler>,
    pub delivery: Arc<Delivery>,
    /// The Open API client of each integration.
    pub lark: Arc<LarkClients>,
    pub webhooks: Arc<crate::webhook::Webhooks>,
    /// Incidents, members, alert sources, escalation rules and their cards.
    pub incidents: Arc<Incidents>,
    /// The app homepage inside Lark: logins, sessions, member linking.
    pub homepage: Arc<crate::homepage::Homepage>,
    /// False once shutdown starts, so `/readyz` tells load balancers to stop sending.
    pub ready: AtomicBool,
}

impl App {
    pub async fn open(settings: Settings) -> anyhow::Result<Arc<App>> {
        App::open_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// [`App::open`] on a given clock: tests move time (escalations, quota months, token
    /// expiry) instead of waiting for it.
    pub async fn open_with_clock(settings: Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Arc<App>> {
        let store = Store::open_with_cache(&settings.storage_path, settings.storage_cache_bytes)?;
        let integrations = Arc::new(Integrations::open(
            store.clone(),
            settings.state_dir(),
            settings.public_base(),
            settings.allow_api_base_url_override,
        )?);
        let inbound = Arc::new(InboundPipeline::new(
            integrations.clone(),
            store.clone(),
            clock.clone(),
            settings.dedup_ttl,
        ));
        let scheduler = Scheduler::new().await?;
        let metrics = Arc::new(Metrics::new());
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
        let incidents = Incidents::new(
            store.clone(),
            clock.clone(),
            delivery.clone(),
            lark.clone(),
            webhooks.clone(),
            settings.public_base(),
        );
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
        let app = Arc::new(App {
            settings,
            store,
            auth,
            metrics,
            clock,
            integrations,
            inbound,
            scheduler,
            delivery,
            lark,
            webhooks,
            incidents,
            homepage,
            ready: AtomicBool::new(false),
        });
        for live in app.integrations.all() {
            app.integration_changed(&live);
        }
        app.inbound.on_event(
            "im.chat.disbanded_v1",
            Arc::new(crate::incident::war_room::DisbandedEvents {
                chats: crate::integration::chats::DisbandedHandler {
                    store: app.store.clone(),
                    clock: app.clock.clone(),
                },
                incidents: app.incidents.clone(),
            }),
        );
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
    async fn start_scheduler(self: &Arc<Self>) -> anyhow::Result<()> {
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
        self.scheduler.start().await?;
        Ok(())
    }

    /// Tells the other domains that an integration was created or changed: its plan to the
    /// outbox, a new Open API client for its (possibly new) credentials.
    pub fn integration_changed(&self, live: &Live) {
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

    pub fn integration_removed(&self, id: &str) {
        self.lark.remove(id);
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

/// Where the service ended up listening (ports resolved when configured as 0).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BoundAddresses {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub tls: bool,
}

impl BoundAddresses {
    pub fn admin_url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.admin)
    }
}

/// A running service: its addresses and the handle that stops it.
pub struct Running {
    pub addresses: BoundAddresses,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops accepting, drains in-flight requests, closes the store.
    pub async fn shutdown(self) {
        self.app.ready.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        let _ = self.done.await;
        remove_runtime_files(self.app.settings.state_dir());
        self.app.scheduler.shutdown().await;
        // Other domains may still hold clones; closing commits what is pending and stops writes.
        self.app.store.clone().close();
    }
}

fn remove_runtime_files(dir: &Path) {
    for name in [CLI_TOKEN_FILE, ADDRESS_FILE] {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

pub fn runtime_file(settings: &Settings, name: &str) -> PathBuf {
    settings.state_dir().join(name)
}

/// Binds the listeners and starts serving; returns once the service is ready.
pub async fn start(app: Arc<App>) -> anyhow::Result<Running> {
    let settings = &app.settings;
    let cert = match &settings.tls {
        Some(files) => Some(ReloadableCert::load(&files.cert, &files.key)?),
        None => None,
    };
    let tls_config = cert.as_ref().map(|c| c.server_config());
    let public = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("server.listen: cannot bind {}", settings.listen))?;
    let admin = match settings.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("server.admin_listen: cannot bind {addr}"))?,
        ),
        None => None,
    };
    let public_addr = public.local_addr()?;
    let addresses = BoundAddresses {
        public: public_addr,
        admin: admin
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?
            .unwrap_or(public_addr),
        tls: tls_config.is_some(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    let cap = crate::web::server::connection_cap(settings.max_connections, 1 + usize::from(admin.is_some()));
    match admin {
        Some(admin) => {
            servers.push(tokio::spawn(crate::web::server::run(
                public,
                tls_config.clone(),
                crate::web::public_routes(app.clone(), "public"),
                cap,
                stop_rx.clone(),
            )));
            servers.push(tokio::spawn(crate::web::server::run(
                admin,
                tls_config.clone(),
                crate::web::admin_routes(app.clone(), "admin"),
                cap,
                stop_rx.clone(),
            )));
        }
        None => servers.push(tokio::spawn(crate::web::server::run(
            public,
            tls_config.clone(),
            crate::web::all_routes(app.clone()),
            cap,
            stop_rx.clone(),
        ))),
    }
    if let Some(cert) = cert {
        tokio::spawn(reload_on_sighup(cert, stop_rx.clone()));
    }
    app.start_scheduler().await?;
    app.inbound.resume().await?;
    tokio::spawn(
        app.delivery
            .clone()
            .run(Arc::new(LarkExecutor::new(app.lark.clone())), stop_rx.clone()),
    );
    tokio::spawn(app.webhooks.clone().run(stop_rx.clone()));
    tokio::spawn(app.incidents.clone().run(stop_rx.clone()));
    let dir = settings.state_dir();
    write_private(&dir.join(CLI_TOKEN_FILE), app.auth.cli_token())
        .with_context(|| format!("cannot write {}", dir.join(CLI_TOKEN_FILE).display()))?;
    write_private(&dir.join(ADDRESS_FILE), &serde_json::to_string(&addresses)?)?;
    app.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        public = %addresses.public,
        admin = %addresses.admin,
        tls = addresses.tls,
        public_url = %settings.public_url,
        "listening"
    );
    let done = tokio::spawn(async move {
        for server in servers {
            let _ = server.await;
        }
    });
    Ok(Running {
        addresses,
        app,
        stop,
        done,
    })
}

async fn reload_on_sighup(cert: Arc<ReloadableCert>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => match cert.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: certificate reload failed; keeping the old one"),
            },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// `serve`: runs until SIGTERM or SIGINT.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = App::open(settings).await?;
    app.create_first_admin()?;
    let running = start(app).await?;
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    wait_for_termination().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

pub async fn wait_for_termination() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
