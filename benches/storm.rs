//! Storm benchmark: 3,000 interactive cards to 300 users and 10 group chats through the outbox of
//! the **release binary** (`serve`, a child process), against the Lark simulator (in this
//! process) enforcing Lark's limits. Run with `cargo bench --bench storm`; with
//! `cargo bench --bench storm -- --kill-at-third` the service is killed with SIGKILL once a third
//! of the storm has arrived and started again at once on the same state (the simulator's windows
//! carry on, as Lark's do).
//!
//! Reports the makespan (first enqueue to the last card's arrival at the simulator), the lower
//! bound Lark's limits allow for this workload, their ratio (target ≤ 1.05), the rate-limited
//! answers (429/99991400 and 230020; target 0), p50/p99 from enqueue to the card's arrival when
//! not saturated (target < 50 ms), and the peak RSS (`VmHWM`) of the delivering process.
//!
//! **Lower bound.** Lark allows one app at most 1,000 sends in any 60 s and 50 calls of one API in
//! any 1 s (5/s per receiver does not bind: 3,000 cards over 310 receivers are ~10 each). Number
//! the sends t₀ ≤ t₁ ≤ … ≤ t₂₉₉₉ by start. The minute limit gives t₍ₖ₊₁₀₀₀₎ ≥ tₖ + 60 s, so
//! t₂₀₀₀ ≥ t₀ + 120 s; the per-second limit gives t₍ₖ₊₅₀₎ ≥ tₖ + 1 s, so the last block of 1,000
//! needs t₂₉₅₀ ≥ t₂₀₀₀ + 19 s. Hence t₂₉₉₉ − t₀ ≥ 139 s, and a schedule that meets it exists
//! (bursts of 50 at 0, 1, …, 19 s, repeated at 60 s and 120 s). The bench computes the same bound
//! by greedy earliest-start scheduling of the exact workload, receivers included.
//!
//! The light phase (latency when not saturated) uses a second app, whose limits are its own: 100
//! single cards, one every 50 ms, each timed from just before its POST to its arrival.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use lark_oncall::sim::{SimApp, SimConfig, Simulator, World};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_lark-oncall");
const STORM_APP: &str = "cli_storm01";
const LIGHT_APP: &str = "cli_light01";
const SECRET: &str = "storm-secret";
const CARDS: usize = 3000;
const USERS: usize = 300;
const CHATS: usize = 10;
const LIGHT: usize = 100;

fn card(title: &str) -> Value {
    json!({"config": {"update_multi": true},
           "header": {"title": {"tag": "plain_text", "content": title}, "template": "red"},
           "elements": [{"tag": "markdown", "content": "**disk full** on db-1"}]})
}

/// The title of a card message in the simulator.
fn title_of(content: &str) -> Option<String> {
    let v: Value = serde_json::from_str(content).ok()?;
    v["header"]["title"]["content"].as_str().map(str::to_string)
}

/// Earliest start of each send under Lark's limits, greedily (optimal for sliding-window limits
/// on identical calls): returns the last start, in seconds after the first.
fn lower_bound(receivers: &[usize]) -> f64 {
    let mut starts: Vec<f64> = Vec::with_capacity(receivers.len());
    let mut by_receiver: HashMap<usize, VecDeque<f64>> = HashMap::new();
    for (k, r) in receivers.iter().enumerate() {
        let mut t = starts.last().copied().unwrap_or(0.0);
        if k >= 50 {
            t = t.max(starts[k - 50] + 1.0);
        }
        if k >= 1000 {
            t = t.max(starts[k - 1000] + 60.0);
        }
        let mine = by_receiver.entry(*r).or_default();
        if mine.len() >= 5 {
            t = t.max(mine[mine.len() - 5] + 1.0);
        }
        mine.push_back(t);
        starts.push(t);
    }
    *starts.last().unwrap()
}

fn peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

struct Service {
    child: Child,
    base: String,
    token: String,
    http: reqwest::Client,
    config: PathBuf,
    dir: tempfile::TempDir,
}

/// Starts `serve` on `config` and waits for its admin address.
#[expect(
    clippy::zombie_processes,
    reason = "the child is returned; Service kills and reaps it"
)]
fn serve(config: &Path, dir: &Path) -> (Child, String) {
    let addresses = dir.join("listen-addresses.json");
    let _ = std::fs::remove_file(&addresses);
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&addresses)
            && let Ok(v) = serde_json::from_str::<Value>(&text)
        {
            return (child, format!("http://{}", v["admin"].as_str().unwrap()));
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "serve did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Service {
    fn start() -> Service {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\npublic_url = \"https://oncall.example.com\"\nlisten = \"127.0.0.1:0\"\n\
                 [storage]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n[lark]\nallow_api_base_url_override = true\n",
                dir.path().join("state.redb").display()
            ),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args(["admin", "create-token", "bench", "--scope", "admin", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let (child, base) = serve(&config, dir.path());
        Service {
            child,
            base,
            token,
            http: reqwest::Client::new(),
            config,
            dir,
        }
    }

    /// SIGKILL, then `serve` again on the same state; returns how long until it listened.
    fn kill_and_restart(&mut self) -> Duration {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let killed = Instant::now();
        let (child, base) = serve(&self.config, self.dir.path());
        (self.child, self.base) = (child, base);
        killed.elapsed()
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let answer: Value = res.json().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {answer}");
        answer
    }

    async fn integration(&self, sim: &Simulator, app_id: &str) -> String {
        let body = json!({"name": app_id, "app_id": app_id, "app_secret": SECRET,
                          "verification_token": "verification", "domain": "feishu",
                          "api_base_url": sim.base_url(), "plan": "paid"});
        self.post("/api/v1/integrations", &body).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Arrival time at the simulator of each card with a title starting with `prefix`.
fn arrivals(sim: &Simulator, prefix: &str) -> HashMap<String, DateTime<Utc>> {
    sim.messages()
        .into_iter()
        .filter_map(|m| title_of(&m.content).map(|t| (t, m.created_at)))
        .filter(|(t, _)| t.starts_with(prefix))
        .collect()
}

#[tokio::main]
async fn main() {
    let kill_at_third = std::env::args().any(|a| a == "--kill-at-third");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut config = SimConfig::new(vec![
        SimApp::new(STORM_APP, SECRET, "verification"),
        SimApp::new(LIGHT_APP, SECRET, "verification"),
    ]);
    config.world = World::generated_for(USERS, CHATS, STORM_APP);
    config.monthly_quota = None;
    let sim = Simulator::start(config).await.unwrap();
    let mut service = Service::start();
    let storm = service.integration(&sim, STORM_APP).await;
    let light = service.integration(&sim, LIGHT_APP).await;
    let world = sim.world();
    let users: Vec<String> = world.users.iter().map(|u| u.open_id.clone()).collect();
    let chats: Vec<String> = world.chats.iter().map(|c| c.chat_id.clone()).collect();

    // Light phase: one card every 50 ms from the second app (after one to fetch its token).
    let send_one =
        |to: &str, title: &str| json!({"receive_id_type": "open_id", "receive_id": to, "card": card(title)});
    let path = format!("/api/v1/integrations/{light}/messages");
    service.post(&path, &send_one(&users[0], "warm-up")).await;
    let mut enqueued = HashMap::new();
    for i in 0..LIGHT {
        let title = format!("light-{i}");
        enqueued.insert(title.clone(), Utc::now());
        service.post(&path, &send_one(&users[i % USERS], &title)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let light_arrivals = loop {
        let got = arrivals(&sim, "light-");
        if got.len() == LIGHT {
            break got;
        }
        assert!(Instant::now() < deadline, "light phase: {} of {LIGHT}", got.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut latencies: Vec<f64> = light_arrivals
        .iter()
        .map(|(t, at)| (*at - enqueued[t]).num_microseconds().unwrap() as f64 / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);

    // Storm: 3,000 cards round-robin over 300 users and 10 chats, in 3 batches of 1,000.
    let receivers: Vec<(usize, &str, &str)> = (0..CARDS)
        .map(|i| {
            let r = i % (USERS + CHATS);
            if r < USERS {
                (r, "open_id", users[r].as_str())
            } else {
                (r, "chat_id", chats[r - USERS].as_str())
            }
        })
        .collect();
    let bound = lower_bound(&receivers.iter().map(|(r, _, _)| *r).collect::<Vec<_>>());
    let batch_path = format!("/api/v1/integrations/{storm}/messages/batch");
    let t0 = Utc::now();
    let started = Instant::now();
    for (b, chunk) in receivers.chunks(1000).enumerate() {
        let offset = b * 1000;
        let messages: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, (_, kind, to))| {
                json!({"receive_id_type": kind, "receive_id": to, "card": card(&format!("storm-{}", offset + i))})
            })
            .collect();
        service.post(&batch_path, &json!({ "messages": messages })).await;
    }
    let enqueue_took = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut restart = None;
    if kill_at_third {
        while arrivals(&sim, "storm-").len() < CARDS / 3 {
            assert!(Instant::now() < deadline, "storm: a third did not arrive");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let at = arrivals(&sim, "storm-").len();
        restart = Some((at, service.kill_and_restart()));
    }
    let storm_arrivals = loop {
        let got = arrivals(&sim, "storm-");
        if got.len() >= CARDS {
            break got;
        }
        assert!(Instant::now() < deadline, "storm: {} of {CARDS}", got.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let last = storm_arrivals.values().max().unwrap();
    let makespan = (*last - t0).num_milliseconds() as f64 / 1000.0;
    let rss_kb = peak_rss_kb(service.child.id());
    let calls = sim.calls();
    let limited = calls
        .iter()
        .filter(|c| c.status == 429 || matches!(c.code, Some(99991400 | 230020)))
        .count();
    let sends = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path == "/open-apis/im/v1/messages")
        .count();

    println!(
        "storm: {CARDS} cards to {USERS} users and {CHATS} chats, release binary, Lark's limits enforced"
    );
    println!(
        "  enqueue (3 batch requests of 1,000): {:.0} ms",
        enqueue_took.as_secs_f64() * 1000.0
    );
    if let Some((at, took)) = restart {
        println!(
            "  kill -9 after {at} of {CARDS} cards had arrived; listening again {:.0} ms later",
            took.as_secs_f64() * 1000.0
        );
    }
    println!("  makespan, first enqueue to last arrival: {makespan:.2} s");
    println!(
        "  lower bound: sends k and k+1000 ≥ 60 s apart → t2000 ≥ 120 s; sends k and k+50 ≥ 1 s apart → t2999 ≥ t2000 + 19 s; greedy schedule of this workload: {bound:.2} s"
    );
    println!("  ratio: {:.4} (target ≤ 1.05)", makespan / bound);
    println!("  rate-limited answers (429/99991400, 230020): {limited} of {sends} send calls (target 0)");
    println!(
        "  not saturated, enqueue to arrival over {LIGHT} cards: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target < 50 ms)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    println!(
        "  peak RSS of the service (VmHWM): {:.1} MB",
        rss_kb as f64 / 1024.0
    );
    drop(service);
    sim.shutdown().await;
}
