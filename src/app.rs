//! The process lifecycle: builds the [`Services`], creates the admin account on first start,
//! binds the listeners, signals systemd, reloads TLS on SIGHUP and drains on SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Settings;
use crate::delivery::lark_executor::LarkExecutor;
use crate::integration::secrets::write_private;
use crate::listener::tls::ReloadableCert;
use crate::services::Services;

/// Name of the file (in the state directory, mode 0600) holding the running service's CLI token.
pub const CLI_TOKEN_FILE: &str = "cli-token";
/// Name of the file (in the state directory) recording where the running service listens.
pub const ADDRESS_FILE: &str = "listen-addresses.json";

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
    pub app: Arc<Services>,
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
pub async fn start(app: Arc<Services>) -> anyhow::Result<Running> {
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
    let cap =
        crate::listener::server::connection_cap(settings.max_connections, 1 + usize::from(admin.is_some()));
    match admin {
        Some(admin) => {
            servers.push(tokio::spawn(crate::listener::server::run(
                public,
                tls_config.clone(),
                crate::web::public_routes(app.clone(), "public"),
                cap,
                stop_rx.clone(),
            )));
            servers.push(tokio::spawn(crate::listener::server::run(
                admin,
                tls_config.clone(),
                crate::web::admin_routes(app.clone(), "admin"),
                cap,
                stop_rx.clone(),
            )));
        }
        None => servers.push(tokio::spawn(crate::listener::server::run(
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
    app.receivers.start(stop_rx.clone());
    tokio::spawn(app.delivery.clone().run(
        Arc::new(crate::bot_webhook::WithBotWebhooks {
            inner: LarkExecutor::new(app.lark.clone()),
            hooks: app.bot_webhooks.clone(),
        }),
        stop_rx.clone(),
    ));
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
    let app = Services::open(settings).await?;
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
