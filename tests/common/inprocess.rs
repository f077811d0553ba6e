//! In-process harness: the appliance itself (`Services::open_with_clock` + `app::start`) in the test's
//! runtime, on a clock the test moves, beside the Lark simulator on the same clock — a throwaway
//! state directory, an API token, and an integration pointed at the simulator, driven over
//! real HTTP. Test files add their own domain helpers in `impl Harness` blocks of their own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lark_oncall::app::{self, Running};
use lark_oncall::clock::ShiftedClock;
use lark_oncall::config::{Config, Settings};
use lark_oncall::services::Services;
use lark_oncall::sim::{CardCallbackVersion, SimApp, SimConfig, SimMessage, Simulator};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The Verification Token of the simulated app and of the integration created for it.
pub const VERIFICATION_TOKEN: &str = "verification";

pub struct Harness {
    pub sim: Simulator,
    pub clock: Arc<ShiftedClock>,
    running: Option<Running>,
    pub http: reqwest::Client,
    /// Base URL of the admin listener.
    pub admin: String,
    /// An API token for the admin API.
    pub token: String,
    /// The id of the integration pointed at the simulator.
    pub integration: String,
    /// What `restart` starts again with: the same state file.
    settings: Settings,
    _dir: tempfile::TempDir,
}

/// What varies between test files; [`Harness::builder`] starts from the plain case.
pub struct HarnessBuilder {
    app_id: String,
    app_secret: String,
    callbacks: Option<CardCallbackVersion>,
    sim_config: Box<dyn FnOnce(&mut SimConfig)>,
    tune: Box<dyn FnOnce(&mut Settings)>,
    integration_fields: serde_json::Map<String, Value>,
}

impl HarnessBuilder {
    /// The simulator pushes events and card callbacks (in this version) to the appliance's
    /// Request URL. The appliance then starts first, since that URL names the integration.
    pub fn callbacks(mut self, version: CardCallbackVersion) -> HarnessBuilder {
        self.callbacks = Some(version);
        self
    }

    /// Adjusts the simulator's configuration (world, quota, limits, and in `apps[0]` the
    /// simulated app's own settings) before it starts; the clock is already the harness's.
    pub fn sim_config(mut self, adjust: impl FnOnce(&mut SimConfig) + 'static) -> HarnessBuilder {
        self.sim_config = Box::new(adjust);
        self
    }

    /// Adjusts the appliance's validated settings before it opens its state.
    pub fn tune(mut self, adjust: impl FnOnce(&mut Settings) + 'static) -> HarnessBuilder {
        self.tune = Box::new(adjust);
        self
    }

    /// Fields added to (or replacing those of) the body that creates the integration; later
    /// calls add to earlier ones.
    pub fn integration_fields(mut self, fields: Value) -> HarnessBuilder {
        let added = fields.as_object().expect("integration fields are a JSON object");
        self.integration_fields.extend(added.clone());
        self
    }

    pub async fn start(self) -> Harness {
        super::install_crypto_provider();
        let clock = Arc::new(ShiftedClock::default());
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".into();
        config.server.public_url = Some("https://oncall.example.com".into());
        config.storage.path = dir.path().join("state.redb");
        config.lark.allow_api_base_url_override = true;
        let mut settings = config.validate().unwrap();
        (self.tune)(&mut settings);
        let sim_app = SimApp::new(&self.app_id, &self.app_secret, VERIFICATION_TOKEN);
        let mut integration_body = json!({"name": "Ops", "app_id": self.app_id, "app_secret": self.app_secret,
                                          "verification_token": VERIFICATION_TOKEN});
        let fields = integration_body.as_object_mut().unwrap();
        fields.extend(self.integration_fields);

        let http = reqwest::Client::new();
        let (sim, running, token, integration) = match self.callbacks {
            None => {
                let sim = start_simulator(sim_app, &clock, self.sim_config).await;
                let (running, token) = launch(&settings, &clock).await;
                integration_body["api_base_url"] = sim.base_url().into();
                let id = create_integration(&http, &running, &token, &integration_body).await;
                (sim, running, token, id)
            }
            Some(version) => {
                let (running, token) = launch(&settings, &clock).await;
                let id = create_integration(&http, &running, &token, &integration_body).await;
                let public = running.addresses.public;
                let sim_app = SimApp {
                    request_url: Some(format!("http://{public}/lark/{id}/callback")),
                    card_callback: version,
                    ..sim_app
                };
                let sim = start_simulator(sim_app, &clock, self.sim_config).await;
                let (status, body) = call(
                    &http,
                    Method::PATCH,
                    format!("{}/api/v1/integrations/{id}", running.addresses.admin_url()),
                    &token,
                    // Moving the integration to another API host needs its App Secret again.
                    json!({"api_base_url": sim.base_url(), "app_secret": self.app_secret}),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                (sim, running, token, id)
            }
        };
        Harness {
            sim,
            clock,
            admin: running.addresses.admin_url(),
            running: Some(running),
            http,
            token,
            integration,
            settings,
            _dir: dir,
        }
    }
}

async fn start_simulator(
    app: SimApp,
    clock: &Arc<ShiftedClock>,
    adjust: Box<dyn FnOnce(&mut SimConfig)>,
) -> Simulator {
    let mut config = SimConfig::new(vec![app]);
    config.clock = clock.clone();
    adjust(&mut config);
    Simulator::start(config).await.unwrap()
}

/// Opens the state with `settings` on `clock` and serves.
async fn serve(settings: &Settings, clock: &Arc<ShiftedClock>) -> Running {
    let app = Services::open_with_clock(settings.clone(), clock.clone())
        .await
        .unwrap();
    app::start(app).await.unwrap()
}

/// The first start: serves and creates an API token.
async fn launch(settings: &Settings, clock: &Arc<ShiftedClock>) -> (Running, String) {
    let running = serve(settings, clock).await;
    let (_, token) = running
        .app
        .auth
        .create_token("tests", lark_oncall::auth::Scope::Admin, None)
        .await
        .unwrap();
    (running, token)
}

async fn create_integration(http: &reqwest::Client, running: &Running, token: &str, body: &Value) -> String {
    let url = format!("{}/api/v1/integrations", running.addresses.admin_url());
    let (status, created) = call(http, Method::POST, url, token, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["id"].as_str().unwrap().to_string()
}

/// An authenticated admin API call; a null `body` sends none.
pub async fn call(
    http: &reqwest::Client,
    method: Method,
    url: String,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let mut req = http.request(method, url).bearer_auth(token);
    if !body.is_null() {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

impl Harness {
    /// The simulator with one app (`app_id`, `app_secret`) and the built-in world; the appliance
    /// with an integration for that app pointed at the simulator's Open API.
    pub fn builder(app_id: &str, app_secret: &str) -> HarnessBuilder {
        HarnessBuilder {
            app_id: app_id.to_string(),
            app_secret: app_secret.to_string(),
            callbacks: None,
            sim_config: Box::new(|_| {}),
            tune: Box::new(|_| {}),
            integration_fields: serde_json::Map::new(),
        }
    }

    pub fn app(&self) -> &Arc<Services> {
        &self.running.as_ref().unwrap().app
    }

    /// An admin API call with the harness's token; a null `body` sends none.
    pub async fn api(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        call(
            &self.http,
            method,
            format!("{}{path}", self.admin),
            &self.token,
            body,
        )
        .await
    }

    /// POSTs `body` to `path`, asserts 201 Created and returns what was created.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (status, created) = self.api(Method::POST, path, body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    /// Creates an on-call member; returns its id.
    pub async fn member(&self, name: &str, email: &str) -> String {
        let member = self
            .create("/api/v1/members", json!({"name": name, "email": email}))
            .await;
        member["id"].as_str().unwrap().to_string()
    }

    /// Creates the rule "critical" for critical incidents on the integration; returns its id.
    pub async fn rule(&self, levels: Value) -> String {
        let rule = self
            .create(
                "/api/v1/rules",
                json!({"name": "critical", "integration_id": self.integration,
                       "match": {"severities": ["critical"]}, "levels": levels}),
            )
            .await;
        rule["id"].as_str().unwrap().to_string()
    }

    /// The open_id of the simulated user with this email.
    pub fn open_id(&self, email: &str) -> String {
        self.sim
            .world()
            .users
            .into_iter()
            .find(|u| u.email == email)
            .unwrap()
            .open_id
    }

    /// The first chat of the simulated world (the bot is in it).
    pub fn chat(&self) -> String {
        self.sim.world().chats[0].chat_id.clone()
    }

    /// Cards the bot sent to `receiver` (an open_id or chat id).
    pub fn cards_to(&self, receiver: &str) -> Vec<SimMessage> {
        self.sim
            .messages()
            .into_iter()
            .filter(|m| m.msg_type == "interactive")
            .filter(|m| m.user_open_id.as_deref() == Some(receiver) || m.chat_id == receiver)
            .collect()
    }

    /// Polls `done` until it holds; fails the test after 15 s.
    pub async fn wait_for(&self, what: &str, mut done: impl FnMut(&Harness) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !done(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Lets the outbox drain, so "nothing was sent" is not just "not sent yet".
    pub async fn settle(&self) {
        self.wait_for("the outbox to drain", |h| h.app().delivery.pending_count() == 0)
            .await;
    }

    /// Stops the appliance and starts it again on the same state file and clock. A Lark call
    /// of the stopped instance still under way keeps the state file open until its answer
    /// (whose outcome it can no longer record, as after a kill); the new one waits for that.
    pub async fn restart(&mut self) {
        self.running.take().unwrap().shutdown().await;
        let deadline = Instant::now() + Duration::from_secs(10);
        let app = loop {
            match Services::open_with_clock(self.settings.clone(), self.clock.clone()).await {
                Ok(app) => break app,
                Err(e) if e.to_string().contains("in use") && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot start again: {e:#}"),
            }
        };
        let running = app::start(app).await.unwrap();
        self.admin = running.addresses.admin_url();
        self.running = Some(running);
    }

    pub async fn stop(mut self) {
        self.running.take().unwrap().shutdown().await;
        self.sim.clone().shutdown().await;
    }
}
