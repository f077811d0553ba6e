//! The command line: `serve`, `demo`, `check-config`, `version`, `admin …`, `backup`, `restore`.
//! Admin commands work on the state file directly when the service is stopped, and through the
//! running service's admin API (authenticated by its local CLI token file) when it holds the file.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::app::{self, ADDRESS_FILE, BoundAddresses, CLI_TOKEN_FILE};
use crate::config::{self, Config, Settings};
use crate::store::{self, Store, StoreError};

#[derive(Parser, Debug)]
#[command(
    name = "lark-oncall",
    version,
    about = "On-call incident response for Feishu/Lark, in one self-hosted binary",
    long_about = "On-call incident response for Feishu/Lark, in one self-hosted binary.\n\n\
        Start with `lark-oncall demo` to try it on this machine without a Lark account.\n\
        Configuration: a TOML file (default /etc/lark-oncall/config.toml) plus environment\n\
        overrides named LARK_ONCALL_<SECTION>__<KEY>, e.g. LARK_ONCALL_SERVER__PUBLIC_URL."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct ConfigArg {
    /// Path of the configuration file.
    #[arg(long, short = 'c', global = true, env = "LARK_ONCALL_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service (until SIGTERM; SIGHUP reloads the TLS certificate).
    Serve(ConfigArg),
    /// Run a throwaway instance on loopback with generated settings, to try the product.
    Demo {
        /// Address for the demo's listener.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Validate the configuration and print it as it takes effect.
    CheckConfig(ConfigArg),
    /// Print the version.
    Version,
    /// Manage the admin account and API tokens.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Write a consistent copy of the state to FILE (works while the service runs).
    Backup {
        /// Where to write the backup; must not exist yet.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Replace the state with a backup (the service must be stopped; the old file is kept).
    Restore {
        /// The backup file written by `backup`.
        #[arg(long)]
        from: PathBuf,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Set the admin password (read from standard input, at least 12 characters, not only
    /// whitespace nor a common password); every open session ends.
    SetPassword,
    /// Create an API token; it is printed once.
    CreateToken {
        /// What the token is for, e.g. "prometheus".
        name: String,
        /// What it may do: `read` (GET requests on the admin API and /metrics), `metrics`
        /// (/metrics only) or `admin` (everything).
        #[arg(long, default_value = "read", value_parser = parse_scope)]
        scope: crate::auth::Scope,
        /// Make the token stop working this many days from now (1 to 3650).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
}

/// Exit status for a configuration error (sysexits' EX_CONFIG). The systemd unit lists it in
/// `RestartPreventExitStatus=`: restarting cannot fix a configuration, so the unit fails once.
pub const EXIT_CONFIG: u8 = 78;

pub fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.is::<config::ConfigError>() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn parse_scope(word: &str) -> Result<crate::auth::Scope, String> {
    word.parse().map_err(|e: crate::auth::AuthError| e.to_string())
}

fn settings(arg: &ConfigArg) -> anyhow::Result<Settings> {
    Ok(Config::load(&arg.config)?.validate()?)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Version => {
            println!("lark-oncall {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::CheckConfig(arg) => {
            let cfg = Config::load(&arg.config)?;
            cfg.validate()?;
            print!("{}", cfg.to_redacted_toml());
            eprintln!("configuration OK: {}", arg.config.display());
            Ok(())
        }
        Command::Serve(arg) => {
            let settings = settings(&arg)?;
            crate::telemetry::init_logging(&settings.log);
            runtime().block_on(app::serve(settings))
        }
        Command::Demo { listen } => runtime().block_on(demo(listen)),
        Command::Admin { command, config } => {
            let settings = settings(&config)?;
            match command {
                AdminCommand::SetPassword => set_password(&settings),
                AdminCommand::CreateToken {
                    name,
                    scope,
                    expires_in_days,
                } => create_token(&settings, &name, scope, expires_in_days),
            }
        }
        Command::Backup { out, config } => backup(&settings(&config)?, &out),
        Command::Restore { from, config } => {
            let settings = settings(&config)?;
            let previous = store::restore(&settings.storage_path, &from).map_err(offline_hint)?;
            println!(
                "restored {} from {}; the replaced state is kept at {}",
                settings.storage_path.display(),
                from.display(),
                previous.display()
            );
            Ok(())
        }
    }
}

fn offline_hint(e: StoreError) -> anyhow::Error {
    match e {
        StoreError::Locked { .. } => {
            anyhow::anyhow!("{e}; stop the service first (systemctl stop lark-oncall)")
        }
        other => other.into(),
    }
}

/// Opens the state file unless the running service holds it.
fn open_offline(settings: &Settings) -> anyhow::Result<Option<Store>> {
    match Store::open(&settings.storage_path) {
        Ok(store) => Ok(Some(store)),
        Err(StoreError::Locked { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A client for the running service's admin API, authenticated by its CLI token file.
struct Online {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Online {
    fn connect(settings: &Settings) -> anyhow::Result<Online> {
        let dir = settings.state_dir();
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).with_context(|| {
                format!(
                    "the state file is locked by a running service, but {} is unreadable (run as the service's user or root)",
                    dir.join(name).display()
                )
            })
        };
        let token = read(CLI_TOKEN_FILE)?.trim().to_string();
        let addresses: BoundAddresses = serde_json::from_str(&read(ADDRESS_FILE)?)?;
        let mut admin = addresses.admin;
        if admin.ip().is_unspecified() {
            admin.set_ip(if admin.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let scheme = if addresses.tls { "https" } else { "http" };
        // Loopback to our own service, authenticated by a local secret; its certificate is for the
        // public name, not 127.0.0.1, so it cannot be verified by name here.
        let http = reqwest::Client::builder()
            .tls_danger_accept_invalid_certs(addresses.tls)
            .timeout(std::time::Duration::from_secs(300))
            .build()?;
        Ok(Online {
            base: format!("{scheme}://{admin}"),
            token,
            http,
        })
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<reqwest::Response> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the running service at {}", self.base))?;
        if !res.status().is_success() {
            let status = res.status();
            let text = res.text().await.unwrap_or_default();
            bail!("the running service answered {status}: {text}");
        }
        Ok(res)
    }
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        eprint!("New admin password (at least 12 characters; input is shown): ");
        std::io::stderr().flush()?;
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    crate::auth::check_new_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(password)
}

fn set_password(settings: &Settings) -> anyhow::Result<()> {
    let password = read_password()?;
    match open_offline(settings)? {
        Some(store) => {
            let reset = crate::auth::offline::reset_admin_password(&store, &password);
            store.close();
            reset?;
        }
        None => {
            let online = Online::connect(settings)?;
            runtime().block_on(online.send(
                reqwest::Method::PUT,
                "/api/v1/account/password",
                Some(serde_json::json!({ "password": password })),
            ))?;
        }
    }
    println!("admin password changed");
    Ok(())
}

fn create_token(
    settings: &Settings,
    name: &str,
    scope: crate::auth::Scope,
    expires_in_days: Option<u32>,
) -> anyhow::Result<()> {
    let plain = match open_offline(settings)? {
        Some(store) => {
            let created = crate::auth::offline::create_token(&store, name, scope, expires_in_days);
            store.close();
            created?
        }
        None => {
            let online = Online::connect(settings)?;
            let res = runtime().block_on(async {
                online
                    .send(
                        reqwest::Method::POST,
                        "/api/v1/tokens",
                        Some(serde_json::json!({
                            "name": name,
                            "scope": scope.as_str(),
                            "expires_in_days": expires_in_days,
                        })),
                    )
                    .await?
                    .json::<serde_json::Value>()
                    .await
                    .map_err(anyhow::Error::from)
            })?;
            res["token"]
                .as_str()
                .context("the service's answer had no token")?
                .to_string()
        }
    };
    println!("{plain}");
    eprintln!("store this token now; it is not shown again");
    Ok(())
}

fn backup(settings: &Settings, out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        bail!("--out: {} already exists; choose a new file", out.display());
    }
    let rows = match open_offline(settings)? {
        Some(store) => {
            let rows = store.backup_to(out)?;
            store.close();
            rows.to_string()
        }
        None => {
            let online = Online::connect(settings)?;
            runtime().block_on(async {
                let res = online.send(reqwest::Method::POST, "/api/v1/backup", None).await?;
                let rows = res
                    .headers()
                    .get("x-backup-rows")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_string();
                let bytes = res.bytes().await?;
                let tmp = out.with_extension("partial");
                crate::store::create_private(&tmp)?;
                tokio::fs::write(&tmp, &bytes).await?;
                tokio::fs::File::open(&tmp).await?.sync_all().await?;
                tokio::fs::rename(&tmp, out).await?;
                anyhow::Ok(rows)
            })?
        }
    };
    println!("backup written to {} ({rows} rows)", out.display());
    Ok(())
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}

/// The demo's address with a concrete port, checked free before anything starts: a taken port is
/// reported against `--listen` (not as the config key the demo sets for itself), and port 0
/// becomes the real port, so `public_url` and the cards' links point where the demo listens.
fn demo_listen_address(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind(listen).with_context(|| {
        format!("--listen: cannot listen on {listen}; choose another address, e.g. --listen 127.0.0.1:0")
    })?;
    Ok(probe.local_addr()?)
}

/// `demo`: the appliance and the Lark simulator in one process, with an integration already
/// pointed at the simulator (encrypted, signed callbacks both ways).
async fn demo(listen: SocketAddr) -> anyhow::Result<()> {
    use crate::integration::IntegrationInput;
    use crate::sim::{DEFAULT_APP_ID, SimApp, SimConfig, Simulator};

    let listen = demo_listen_address(listen)?;
    let dir = tempfile::Builder::new().prefix("lark-oncall-demo-").tempdir()?;
    let mut cfg = Config::default();
    cfg.server.listen = listen.to_string();
    cfg.server.public_url = Some(format!("http://{listen}"));
    cfg.storage.path = dir.path().join("state.redb");
    // The demo's integration talks to the built-in simulator.
    cfg.lark.allow_api_base_url_override = true;
    let settings = cfg.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    crate::telemetry::init_logging(&settings.log);
    let app = crate::services::Services::open(settings).await?;
    let password = crate::ids::random_hex(8);
    app.auth
        .set_password(crate::auth::ADMIN_USER, &password, None)
        .await?;
    let (_, api_token) = app
        .auth
        .create_token("demo", crate::auth::Scope::Admin, None)
        .await?;

    let sim_addr = free_loopback_port()?;
    let (app_secret, verification_token, encrypt_key) = (
        crate::ids::random_hex(16),
        crate::ids::random_hex(16),
        crate::ids::random_hex(16),
    );
    let live = app
        .integrations
        .create(IntegrationInput {
            name: Some("Demo (simulated Lark)".into()),
            app_id: Some(DEFAULT_APP_ID.into()),
            app_secret: Some(app_secret.clone()),
            verification_token: Some(verification_token.clone()),
            encrypt_key: Some(encrypt_key.clone()),
            api_base_url: Some(format!("http://{sim_addr}")),
            // The simulator has the chat APIs: the demo's cards offer a war room.
            war_room: Some(true),
            ..IntegrationInput::default()
        })
        .await?;
    let integration_id = live.id().to_string();
    let running = app::start(app.clone()).await?;
    let sim = Simulator::start(SimConfig::demo(
        sim_addr,
        SimApp {
            encrypt_key: Some(encrypt_key),
            request_url: Some(format!(
                "http://{}/lark/{integration_id}/callback",
                running.addresses.public
            )),
            ..SimApp::new(DEFAULT_APP_ID, &app_secret, &verification_token)
        },
    ))
    .await?;
    // Lark is reachable: a tenant token and the bot's chats, through the simulator.
    let client = app
        .lark
        .get(&integration_id)
        .context("the demo integration has no Lark client")?;
    let chats = crate::integration::chats::refresh(&app.store, &client, &integration_id, app.clock.now())
        .await
        .context("listing the simulated bot's chats")?;
    // The simulated tenant's people as on-call members, a rule for every incident, an alert source.
    let people: Vec<crate::incident::demo::DemoPerson> = sim
        .world()
        .users
        .into_iter()
        .filter(|u| u.app_visible)
        .map(|u| crate::incident::demo::DemoPerson {
            name: u.name,
            email: u.email,
            mobile: u.mobile,
        })
        .collect();
    let chat_ids: Vec<String> = chats.iter().map(|c| c.chat_id.clone()).collect();
    let seed = app
        .incidents
        .seed_demo(&integration_id, &people, &chat_ids)
        .await?;

    let url = running.addresses.admin_url();
    println!();
    println!(
        "lark-oncall demo is running (state in {}, removed on exit)",
        dir.path().display()
    );
    println!("  admin UI:      {url}/");
    println!("  login:         admin / {password}");
    println!("  API token:     {api_token}");
    println!("  virtual Lark:  {}", sim.page_url());
    println!(
        "  integration:   {integration_id} (simulated Lark at {}; bot in {} chats)",
        sim.base_url(),
        chats.len()
    );
    println!("  health:        {url}/healthz");
    println!(
        "  members:       {} on-call people from the simulated tenant; rule {} pages them and the chats",
        seed.member_ids.len(),
        seed.rule_id
    );
    println!("Raise a test incident, then watch its card arrive in the virtual Lark:");
    println!(
        "  curl -sS -X POST '{url}/api/v1/alerts/standard?integration_key={}' -H 'content-type: application/json' -d '{{\"title_rule\":\"Disk almost full on db-1\",\"event_status\":\"Critical\",\"alert_key\":\"demo-disk-db-1\",\"description\":\"/var/lib/postgresql is 97% full\"}}'",
        seed.integration_key
    );
    println!("Press Ctrl-C to stop.");
    app::wait_for_termination().await;
    running.shutdown().await;
    sim.shutdown().await;
    Ok(())
}
