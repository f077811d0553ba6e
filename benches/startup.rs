//! Start-up benchmark: time from process start to `/readyz` = 200 (first start, which creates the
//! state file and hashes the admin password, and restart on an existing file), idle RSS after
//! each, and the binary's size. Run with `cargo bench --bench startup`; targets: ready < 200 ms,
//! idle RSS ≤ 20 MB, binary < 30 MB.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_lark-oncall");
const RUNS: usize = 10;

fn ready(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && &buf[9..12] == b"200"
}

/// Starts `serve` and returns it with the time until `/readyz` answered 200.
#[expect(
    clippy::zombie_processes,
    reason = "the child is returned; the caller stops and reaps it"
)]
fn start(config: &Path, state_dir: &Path) -> (Child, Duration) {
    let addresses = state_dir.join("listen-addresses.json");
    let _ = std::fs::remove_file(&addresses);
    let t0 = Instant::now();
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    loop {
        if let Ok(text) = std::fs::read_to_string(&addresses) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let addr = v["public"].as_str().unwrap().to_string();
            while !ready(&addr) {
                std::thread::sleep(Duration::from_micros(200));
            }
            return (child, t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("not ready in 10 s");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut first = Vec::new();
    let mut restart = Vec::new();
    let mut rss_first = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..RUNS {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\npublic_url = \"https://oncall.example.com\"\nlisten = \"127.0.0.1:0\"\n[storage]\npath = \"{}\"\n",
                dir.path().join("state.redb").display()
            ),
        )
        .unwrap();
        let (child, t) = start(&config, dir.path());
        first.push(t);
        std::thread::sleep(Duration::from_secs(1));
        rss_first.push(rss_kib(child.id()));
        stop(child);
        let (child, t) = start(&config, dir.path());
        restart.push(t);
        std::thread::sleep(Duration::from_secs(1));
        rss.push(rss_kib(child.id()));
        stop(child);
    }
    first.sort();
    restart.sort();
    rss_first.sort();
    rss.sort();
    let size = std::fs::metadata(BIN).unwrap().len();
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!("startup benchmark ({RUNS} runs each, release build)");
    for (label, runs) in [("first start", &first), ("restart    ", &restart)] {
        let worst = *runs.last().unwrap();
        println!(
            "  {label} to /readyz: p50 {:.1} ms, max {:.1} ms   target < 200 ms: {}",
            ms(percentile(runs, 0.5)),
            ms(worst),
            verdict(worst < Duration::from_millis(200))
        );
    }
    for (label, runs) in [("first start", &rss_first), ("restart    ", &rss)] {
        let worst = *runs.last().unwrap();
        println!(
            "  idle RSS 1 s after {label}: median {:.1} MB, max {:.1} MB   target ≤ 20 MB: {}",
            runs[runs.len() / 2] as f64 / 1024.0,
            worst as f64 / 1024.0,
            verdict(worst <= 20 * 1024)
        );
    }
    println!(
        "  binary size:            {:.1} MB   target < 30 MB: {}",
        size as f64 / 1e6,
        verdict(size < 30_000_000)
    );
}
