//! Homepage benchmark: the server time to render *My incidents* for a logged-in person with
//! `BENCH_OPEN` open incidents assigned to them (default 1,000) among `BENCH_RESOLVED` resolved
//! ones (default 5,000, the history a few months of alerts leave), measured over real HTTP on
//! loopback as the time from request sent to the last byte of the page. Also prints the bytes of
//! a first visit (page + stylesheets, gzip as served) and of a repeat visit (page + 304s).
//!
//! `cargo bench --bench homepage`. Environment: `BENCH_OPEN`, `BENCH_RESOLVED`,
//! `BENCH_REQUESTS` (default 500). Requests are sent one at a time, so each time is one render.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lark_oncall::app;
use lark_oncall::clock::SystemClock;
use lark_oncall::config::Config;
use lark_oncall::incident::members::MemberInput;
use lark_oncall::incident::model::{Actor, Severity};
use lark_oncall::incident::{Action, AlertOutcome, NewIncident};
use lark_oncall::integration::IntegrationInput;
use lark_oncall::services::Services;
use lark_oncall::sim::{EMAIL_SCOPE, SimApp, SimConfig, Simulator};

const APP_ID: &str = "cli_benchhomepage1";
const APP_SECRET: &str = "bench-secret";
const PUBLIC_URL: &str = "https://bench.example.com";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let open = env_or("BENCH_OPEN", 1000);
    let resolved = env_or("BENCH_RESOLVED", 5000);
    let requests = env_or("BENCH_REQUESTS", 500);

    let mut sim_app = SimApp::new(APP_ID, APP_SECRET, "bench-token");
    sim_app.user_scopes = vec![EMAIL_SCOPE.into()];
    let mut sim_config = SimConfig::new(vec![sim_app]);
    sim_config.enforce_limits = false;
    let sim = Simulator::start(sim_config).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.public_url = Some(PUBLIC_URL.into());
    config.storage.path = dir.path().join("state.redb");
    config.lark.allow_api_base_url_override = true;
    let app = Services::open_with_clock(config.validate().unwrap(), Arc::new(SystemClock))
        .await
        .unwrap();
    let live = app
        .integrations
        .create(IntegrationInput {
            name: Some("bench".into()),
            app_id: Some(APP_ID.into()),
            app_secret: Some(APP_SECRET.into()),
            verification_token: Some("bench-token".into()),
            api_base_url: Some(sim.base_url()),
            ..IntegrationInput::default()
        })
        .await
        .unwrap();
    let integration = live.id().to_string();
    let person = sim.world().users[0].clone();
    let member = app
        .incidents
        .members
        .create(MemberInput {
            name: Some(person.name.clone()),
            email: Some(person.email.clone()),
            ..MemberInput::default()
        })
        .await
        .unwrap();

    // History first, so the open incidents are the newest (as they are in life), then the
    // open ones; no rule matches, so no card is sent and the setup measures nothing else.
    let started = Instant::now();
    let raise = |i: usize, title: String| NewIncident {
        title,
        description: "disk usage above 90 % on /var".into(),
        severity: [Severity::Critical, Severity::Warning, Severity::Info][i % 3],
        labels: [("service".to_string(), format!("svc-{}", i % 17))].into(),
        dedup_key: None,
        assignees: vec![member.id.clone()],
    };
    for i in 0..resolved {
        let AlertOutcome::Opened { incident_id, .. } = app
            .incidents
            .open(raise(i, format!("old alert {i}")), Actor::system())
            .await
            .unwrap()
        else {
            panic!("an incident opens")
        };
        app.incidents
            .act(&incident_id, Action::Resolve, Actor::system())
            .await
            .unwrap();
    }
    for i in 0..open {
        app.incidents
            .open(
                raise(i, format!("open alert {i} on host-{i:04}")),
                Actor::system(),
            )
            .await
            .unwrap();
    }
    eprintln!(
        "setup: {resolved} resolved + {open} open incidents in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let running = app::start(app.clone()).await.unwrap();
    let base = format!("http://{}", running.addresses.public);
    let local = |url: &str| url.replace(PUBLIC_URL, &base);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Log in as Lark would: the homepage's 302 to authorize, the simulated grant, the callback.
    let home = format!("{base}/lark/{integration}/app");
    let authorize = location(&http.get(&home).send().await.unwrap());
    let grant = authorize.replace("/authorize?", "/authorize/grant?") + "&open_id=" + &person.open_id;
    let callback = location(&http.get(&grant).send().await.unwrap());
    let res = http.get(local(&callback)).send().await.unwrap();
    assert_eq!(res.status(), 302, "the callback logs the person in");
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();

    let visit = || {
        http.get(&home)
            .header("cookie", &cookie)
            .header("accept-language", "en-US,en")
            .header("accept-encoding", "gzip")
            .send()
    };
    let first = visit().await.unwrap();
    assert_eq!(first.status(), 200);
    let page_bytes = first.bytes().await.unwrap();
    let page = String::from_utf8_lossy(&page_bytes).to_string();
    let listed = page.matches("class=\"incident").count();
    let stylesheets: Vec<String> = page
        .split("<link rel=\"stylesheet\" href=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string())
        .collect();
    let mut first_bytes = page_bytes.len();
    let mut repeat_bytes = page_bytes.len();
    for href in &stylesheets {
        let url = if href.starts_with('/') {
            format!("{base}{href}")
        } else {
            href.clone()
        };
        let res = http
            .get(&url)
            .header("accept-encoding", "gzip")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{url}");
        let etag = res.headers()["etag"].to_str().unwrap().to_string();
        first_bytes += res.bytes().await.unwrap().len();
        let again = http
            .get(&url)
            .header("accept-encoding", "gzip")
            .header("if-none-match", etag)
            .send()
            .await
            .unwrap();
        assert_eq!(again.status(), 304, "{url}");
        repeat_bytes += again.bytes().await.unwrap().len();
    }

    for _ in 0..50 {
        visit().await.unwrap().bytes().await.unwrap();
    }
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        let t = Instant::now();
        let res = visit().await.unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "homepage My incidents: {open} open + {resolved} resolved incidents, {listed} listed, page {} B (first visit {first_bytes} B with {} stylesheets, repeat {repeat_bytes} B)",
        page_bytes.len(),
        stylesheets.len()
    );
    println!(
        "render over loopback, {requests} sequential requests: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&times, 0.50)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap()),
    );
    running.shutdown().await;
    sim.shutdown().await;
}
