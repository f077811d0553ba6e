//! Card-callback benchmark: encrypted, signed `card.action.trigger` requests end to end (verify,
//! decrypt, durable dedup write, respond) against the release binary, with load from `wrk` in a
//! separate process, and the same requests against the official Node SDK (`benches/peers/`) in
//! the same run when `node` is installed. Each server is pinned to core 0 and wrk to core 1
//! (`taskset`). Every request carries its own event id, so each one pays for a dedup write.
//! Afterwards lark-oncall is killed with SIGKILL and restarted, and a sample of the acknowledged
//! requests is replayed: each must be recognised as a duplicate (dedup durable across a crash).
//!
//! `cargo bench --bench callback` (needs `wrk` and `taskset`: `apt-get install wrk util-linux`;
//! for the peer, `node` and `npm`: the bench runs `npm ci` in benches/peers).
//! Environment: `BENCH_SECONDS` (default 15), `BENCH_CONNECTIONS` (default 64).
//! Targets (issue 18.6): ≥ 5× the Node SDK's throughput, p99 ≤ 5 ms, RSS under load ≤ 60 MB.

use std::io::Write;
use std::path::{Path, PathBuf};
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

/// What wrk measured against one server, and the server's own cost meanwhile.
struct Load {
    report: String,
    rps: f64,
    p50: String,
    p99: String,
    /// Resident memory at the end of the run, and the peak.
    rss_mb: f64,
    peak_rss_mb: f64,
    /// Server CPU time over the run as a share of one core.
    cpu_share: f64,
    /// Non-2xx answers and socket errors wrk counted.
    errors: String,
}

fn proc_field_kb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// User plus system CPU seconds a process (all its threads) has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / 100.0
}

/// Runs wrk against `url` for `seconds` with the request file, measuring server `pid`.
fn drive(url: &str, pid: u32, script: &Path, requests: &Path, seconds: u64, connections: u64) -> Load {
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let wrk = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .args(["--latency", "-s"])
        .arg(script)
        .arg(url)
        .arg("--")
        .arg(requests)
        .output()
        .expect("run wrk (apt-get install wrk)");
    let cpu_share = (cpu_seconds(pid) - cpu_before) / started.elapsed().as_secs_f64();
    let report = String::from_utf8_lossy(&wrk.stdout).to_string();
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
    let errors = report
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    Load {
        rps,
        p50: pct("50%"),
        p99: pct("99%"),
        rss_mb: proc_field_kb(pid, "VmRSS:") / 1024.0,
        peak_rss_mb: proc_field_kb(pid, "VmHWM:") / 1024.0,
        cpu_share,
        errors: if errors.is_empty() { "none".into() } else { errors },
        report,
    }
}

/// The Node SDK peer, installed with `npm ci` and started on core 0; `None` (with the reason
/// printed) when node or npm is missing or the install fails.
fn node_peer() -> Option<(Child, String)> {
    let peers = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/peers");
    if Command::new("node").arg("--version").output().is_err() {
        println!("node is not installed: measuring lark-oncall only (no ratio to the Node SDK)");
        return None;
    }
    let installed = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&peers)
        .status();
    if !matches!(installed, Ok(s) if s.success()) {
        println!("`npm ci` in benches/peers failed: measuring lark-oncall only");
        return None;
    }
    let mut child = Command::new("taskset")
        .args(["-c", "0", "node", "card_callback.js", KEY, TOKEN])
        .current_dir(&peers)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the Node peer under taskset");
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("peer stdout")),
        &mut port,
    )
    .expect("read the Node peer's port");
    Some((child, format!("http://127.0.0.1:{}/webhook/card", port.trim())))
}

/// One request from the file, sent once: the status and body of the answer.
fn probe(url: &str, line: &str) -> (u16, String) {
    let parts: Vec<&str> = line.trim_end().splitn(4, '\t').collect();
    runtime().block_on(async {
        let res = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("x-lark-request-timestamp", parts[0])
            .header("x-lark-request-nonce", parts[1])
            .header("x-lark-signature", parts[2])
            .body(parts[3].to_string())
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seconds = env_or("BENCH_SECONDS", 15);
    let connections = env_or("BENCH_CONNECTIONS", 64);
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
        .args(["admin", "create-token", "bench", "--scope", "admin", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();

    // Enough distinct requests that none repeats at up to 80,000 req/s.
    let count = 80_000 * seconds;
    let ts = chrono::Utc::now().timestamp().to_string();
    let cipher = Cipher::new(KEY);
    let requests = dir.path().join("requests.tsv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&requests).unwrap());
    for i in 0..count {
        file.write_all(request_line(&cipher, i, &ts).as_bytes()).unwrap();
    }
    // On disk before anything is measured: its writeback (a gigabyte) would otherwise land in a
    // measured run and queue every server's fsyncs behind it.
    file.into_inner().unwrap().sync_all().unwrap();
    let script = dir.path().join("callbacks.lua");
    std::fs::write(&script, LUA).unwrap();

    // The Node SDK first, so its run cannot leave lark-oncall's state file warmer or colder.
    let node = node_peer().map(|(mut peer, url)| {
        // It must really verify: the right request gets the handler's toast, a wrong signature
        // does not reach the handler.
        let (status, body) = probe(&url, &request_line(&cipher, count + 1, &ts));
        assert!(
            status == 200 && body.contains("toast"),
            "Node peer answered {status} {body}"
        );
        let forged = request_line(&cipher, count + 2, &ts).replacen('\t', "\tx", 2);
        let (_, body) = probe(&url, &forged);
        assert!(
            !body.contains("toast"),
            "Node peer accepted a forged signature: {body}"
        );
        let load = drive(&url, peer.id(), &script, &requests, seconds, connections);
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(peer.id().to_string())
            .status();
        let _ = peer.wait();
        load
    });

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
    let url = format!("{base}/lark/{id}/callback");
    let ours = drive(&url, server.id(), &script, &requests, seconds, connections);
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
    for &i in &sample {
        let (status, _) = probe(
            &format!("{base}/lark/{id}/callback"),
            &request_line(&cipher, i, &ts),
        );
        assert!((200..300).contains(&status));
    }
    let after =
        api(&base, &token, "GET", &format!("/api/v1/integrations/{id}"), None)["callback_stats"].clone();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();

    println!("{}", ours.report);
    if let Some(node) = &node {
        println!("Node SDK peer:\n{}", node.report);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "card-callback benchmark: {seconds} s, {connections} connections, each server on core 0, wrk on core 1; load average before the report: {}",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let row = |name: &str, l: &Load| {
        println!(
            "  {name:<12} {:>8.0} req/s   p50 {:>8}  p99 {:>8}   RSS {:>6.1} MB (peak {:.1})   CPU {:>3.0} % of a core   errors: {}",
            l.rps,
            l.p50,
            l.p99,
            l.rss_mb,
            l.peak_rss_mb,
            l.cpu_share * 100.0,
            l.errors
        )
    };
    row("lark-oncall", &ours);
    match &node {
        Some(n) => {
            row("Node SDK", n);
            println!(
                "  ratio: {:.2}× the Node SDK's throughput   (target ≥ 5×; p99 ≤ 5 ms; RSS ≤ 60 MB)",
                ours.rps / n.rps.max(1.0)
            );
        }
        None => println!("  ratio: not measured (no Node peer)"),
    }
    println!(
        "  accepted {} / duplicates {} / rejected {} during the run",
        stats["accepted"], stats["duplicates"], stats["rejected"]
    );
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
