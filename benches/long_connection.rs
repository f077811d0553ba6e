//! Long-connection benchmark: events pushed by the simulator over one WebSocket to the
//! appliance, each acknowledged only once durable (dedup mark and inbox entry committed).
//! Measures events per second through one connection and the ack latency as Lark sees it
//! (frame sent → ack received), with `BENCH_CONCURRENCY` events in flight.
//!
//! `cargo bench --bench long_connection`. Environment: `BENCH_EVENTS` (default 5,000),
//! `BENCH_CONCURRENCY` (default 64). The simulator and the appliance share this process and
//! its two cores, so the figures are a floor for the appliance alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lark_oncall::app;
use lark_oncall::clock::SystemClock;
use lark_oncall::config::Config;
use lark_oncall::integration::{IntegrationInput, ReceiveMode};
use lark_oncall::lark::long_connection::ServerClientConfig;
use lark_oncall::services::Services;
use lark_oncall::sim::{SimApp, SimConfig, Simulator};

const APP_ID: &str = "cli_benchlongconn";
const APP_SECRET: &str = "bench-secret";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let events = env_or("BENCH_EVENTS", 5000);
    let concurrency = env_or("BENCH_CONCURRENCY", 64);

    let mut sim_app = SimApp::new(APP_ID, APP_SECRET, "bench-token");
    sim_app.group_messages = true;
    let mut sim_config = SimConfig::new(vec![sim_app]);
    sim_config.enforce_limits = false;
    sim_config.long_connection.client_config = ServerClientConfig {
        reconnect_nonce: 0,
        ..ServerClientConfig::default()
    };
    let sim = Simulator::start(sim_config).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".into();
    config.server.public_url = Some("https://bench.example.com".into());
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
            receive_modes: Some(vec![ReceiveMode::LongConnection]),
            ..IntegrationInput::default()
        })
        .await
        .unwrap();
    let id = live.id().to_string();
    let running = app::start(app.clone()).await.unwrap();
    while sim.long_connections().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let user = sim.world().users[0].open_id.clone();
    let chat = sim.world().chats[0].chat_id.clone();

    let run = |n: usize| {
        let (sim, user, chat) = (sim.clone(), user.clone(), chat.clone());
        async move {
            futures_util::stream::iter(0..n)
                .map(|i| {
                    let (sim, user, chat) = (sim.clone(), user.clone(), chat.clone());
                    async move {
                        let t = Instant::now();
                        sim.send_text(&user, Some(&chat), &format!("bench {i}"), false)
                            .await
                            .unwrap();
                        t.elapsed()
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<Duration>>()
                .await
        }
    };
    run(500).await;
    let started = Instant::now();
    let mut latencies = run(events).await;
    let elapsed = started.elapsed();
    latencies.sort();
    let failed = sim.pushes().iter().filter(|p| !p.ok).count();
    let accepted = app.integrations.get(&id).unwrap().stats.lock().unwrap().accepted;
    println!(
        "long connection: {events} events, {concurrency} in flight: {:.0} events/s; ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {failed} unacked attempts; {accepted} accepted in all",
        events as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
    );
    running.shutdown().await;
    sim.shutdown().await;
}
