//! Card-callback benchmark: encrypted, signed `card.action.trigger` requests end to end (verify,
//! decrypt, durable dedup write, respond) against the release binary, with load from `wrk` in a
//! separate process. The server is pinned to core 0 and wrk to core 1 (`taskset`), as the
//! competitors were measured. Every request carries its own event id, so each one pays for a
//! dedup write. Afterwards the server is killed with SIGKILL and restarted, and a sample of the
//! acknowledged requests is replayed: each must be recognised as a duplicate (dedup durable
//! across a crash).
//!
//! `cargo bench --bench callback` (needs `wrk` and `taskset`: `apt-get install wrk util-linux`).
//! Environment: `BENCH_SECONDS` (default 15), `BENCH_CONNECTIONS` (default 50).
//! Targets: ≥ 10,000 req/s with p99 < 10 ms (issue); 5× the Node SDK (40,845 req/s) at p99 ≤ 5 ms.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lark_oncall::lark::crypto::{Cipher, event_signature};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_lark-oncall");
const TOKEN: &str = "bench-verification-token";
const KEY: &str = "bench-encrypt-key";

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[expect(clippy::zombie_processes, reason = "the caller kills and reaps the child")]
fn serve(config: &Path, dir: &Path) -> (Child, String) {
    let addresses = dir.join("listen-addresses.json");
    let _ = std::fs::remove_file(&addresses);
    let child = Command::new("taskset")
        .args(["-c", "0", BIN, "serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve under taskset");
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&addresses) {
            let v: Value = serde_json::from_str(&text).unwrap();
            return (child, format!("http://{}", v["public"].as_str().unwrap()));
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "serve did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rss_mb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn card_action(event_id: &str) -> Value {
    json!({"schema": "2.0",
           "header": {"event_id": event_id, "event_type": "card.action.trigger", "create_time": "1700000000000000",
                      "token": TOKEN, "app_id": "cli_bench1", "tenant_key": "tenant-bench"},
           "event": {"operator": {"tenant_key": "tenant-bench", "open_id": "ou_7dab8a3d3cdcc9da365777c7ad535d62",
                                  "union_id": "on_576833b917gda3d939b9a3c2d53e72c8"},
                     "token": "c-295ee57216a5dc9de90fefd0aadb4b1d7d337a8d",
                     "action": {"tag": "button", "value": {"action": "ack", "incident": "42"}},
                     "host": "im_message",
                     "context": {"open_message_id": "om_dc13264520392913993dd051dba21dcf", "open_chat_id": "oc_84983ff6516d731e5b5f68d4ea2e1da5"}}})
}

/// One request line for the Lua script: timestamp, nonce, signature and body, tab-separated.
fn request_line(cipher: &Cipher, i: u64, ts: &str) -> String {
    let body =
        json!({"encrypt": cipher.encrypt(card_action(&format!("bench-{i:08}")).to_string().as_bytes())})
            .to_string();
    let nonce = format!("n{i}");
    let sig = event_signature(ts, &nonce, KEY, body.as_bytes());
    format!("{ts}\t{nonce}\t{sig}\t{body}\n")
}

// wrk reads the requests from the file as it goes: holding them all in a Lua table (a million
// strings) made each of its garbage-collection cycles stall every connection, which showed up
// as server latency.
const LUA: &str = r#"
local file
function init(args)
  file = assert(io.open(args[1], "rb"))
end
function request()
  local line = file:read("*l")
  if not line then
    file:seek("set", 0)
    line = file:read("*l")
  end
  local ts, nonce, sig, body = line:match("([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)")
  return wrk.format("POST", wrk.path, {
    ["Content-Type"] = "application/json",
    ["X-Lark-Request-Timestamp"] = ts,
    ["X-Lark-Request-Nonce"] = nonce,
    ["X-Lark-Signature"] = sig,
  }, body)
end
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn api(admin: &str, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    runtime().block_on(async {
        let mut req = reqwest::Client::new()
            .request(method.parse().unwrap(), format!("{admin}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap().json().await.unwrap()
    })
}

/// The server's own view: its request-latency and store-commit histograms, as
/// `≤bound:count` pairs of the non-cumulative counts, so a stall can be placed on the server or
/// outside it.
fn metrics(admin: &str, token: &str) -> Vec<(String, String)> {
    let text = runtime().block_on(async {
        reqwest::Client::new()
            .get(format!("{admin}/metrics"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    [
        "lark_oncall_http_request_seconds",
        "lark_oncall_store_commit_seconds",
        "lark_oncall_store_commit_writes",
    ]
    .iter()
    .map(|name| {
        let mut previous = 0u64;
        let buckets: Vec<String> = text
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{name}_bucket{{le=\"")))
            .filter_map(|rest| {
                let (bound, count) = rest.split_once("\"} ")?;
                let cumulative: u64 = count.trim().parse().ok()?;
                let here = cumulative - previous;
                previous = cumulative;
                (here > 0).then(|| format!("≤{bound}:{here}"))
            })
            .collect();
        (name.to_string(), buckets.join(" "))
    })
    .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds = env_or("BENCH_SECONDS", 15);
    let connections = env_or("BENCH_CONNECTIONS", 50);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublic_url = \"https://oncall.example.com\"\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n[log]\nlevel = \"warn\"\n",
            dir.path().join("state.redb").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["admin", "create-token", "bench", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (mut server, base) = serve(&config, dir.path());
    let integration = api(
        &base,
        &token,
        "POST",
        "/api/v1/integrations",
        Some(
            json!({"name": "bench", "app_id": "cli_bench1", "app_secret": "bench-app-secret",
                    "verification_token": TOKEN, "encrypt_key": KEY}),
        ),
    );
    let id = integration["id"]
        .as_str()
        .expect("integration created")
        .to_string();

    // Enough distinct requests that none repeats at up to 80,000 req/s.
    let count = 80_000 * seconds;
    let ts = chrono::Utc::now().timestamp().to_string();
    let cipher = Cipher::new(KEY);
    let requests = dir.path().join("requests.tsv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&requests).unwrap());
    for i in 0..count {
        file.write_all(request_line(&cipher, i, &ts).as_bytes()).unwrap();
    }
    file.flush().unwrap();
    drop(file);
    let script = dir.path().join("callbacks.lua");
    std::fs::write(&script, LUA).unwrap();

    let url = format!("{base}/lark/{id}/callback");
    let wrk = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "-s"])
        .arg(&script)
        .arg(&url)
        .arg("--")
        .arg(&requests)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let report = String::from_utf8_lossy(&wrk.stdout).to_string();
    let rss = rss_mb(server.id());
    let stats =
        api(&base, &token, "GET", &format!("/api/v1/integrations/{id}"), None)["callback_stats"].clone();
    let server_side = metrics(&base, &token);

    // Crash, restart, replay a sample of what was acknowledged: all must be duplicates.
    server.kill().unwrap();
    server.wait().unwrap();
    let (mut server, base) = serve(&config, dir.path());
    let accepted = stats["accepted"].as_u64().unwrap_or(0);
    // From the middle of what was sent: wrk builds one request at start-up that it never sends,
    // and the last ones may still have been in flight when it stopped.
    let span = accepted.saturating_sub(200).max(1);
    let sample: Vec<u64> = (0..1000).map(|k| 1 + k * span / 1000).collect();
    runtime().block_on(async {
        let client = reqwest::Client::new();
        for &i in &sample {
            let line = request_line(&cipher, i, &ts);
            let parts: Vec<&str> = line.trim_end().splitn(4, '\t').collect();
            let res = client
                .post(format!("{base}/lark/{id}/callback"))
                .header("x-lark-request-timestamp", parts[0])
                .header("x-lark-request-nonce", parts[1])
                .header("x-lark-signature", parts[2])
                .body(parts[3].to_string())
                .send()
                .await
                .unwrap();
            assert!(res.status().is_success());
        }
    });
    let after =
        api(&base, &token, "GET", &format!("/api/v1/integrations/{id}"), None)["callback_stats"].clone();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();

    let rps: f64 = report
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    let pct = |label: &str| -> String {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    println!("{report}");
    println!(
        "card-callback benchmark: {seconds} s, {connections} connections, server on core 0, wrk on core 1"
    );
    println!("  throughput:      {rps:.0} req/s   (target ≥ 10,000; 5× Node = 40,845)");
    println!(
        "  latency p50 {}  p90 {}  p99 {}   (target p99 < 10 ms; ≤ 5 ms for 5× Node)",
        pct("50%"),
        pct("90%"),
        pct("99%")
    );
    println!(
        "  accepted {} / duplicates {} / rejected {} during the run",
        stats["accepted"], stats["duplicates"], stats["rejected"]
    );
    println!("  server RSS at the end of the run: {rss:.1} MB");
    println!("  server-side histograms (from /metrics):");
    for (name, buckets) in &server_side {
        println!("    {name}: {buckets}");
    }
    println!(
        "  after kill -9 and restart: {} of {} replayed requests recognised as duplicates, {} accepted again",
        after["duplicates"],
        sample.len(),
        after["accepted"]
    );
}
