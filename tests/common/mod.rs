//! Test harness: runs the real `lark-oncall` binary on loopback port 0 with a throwaway state
//! directory, waits until it is ready, and kills it when dropped. [`inprocess`] runs the
//! appliance inside the test instead, on a clock the test moves.
#![allow(dead_code)] // Each test binary uses a different part of the harness.

pub mod accessibility;
pub mod browser;
pub mod inprocess;
pub mod oplog;
pub mod worlds;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_lark-oncall");

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A state directory with a config file in it.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Instance {
    /// A config listening on 127.0.0.1:0 with JSON logs, integrations allowed to point at a
    /// simulator (`lark.allow_api_base_url_override`); `extra` is appended to `[server]`.
    pub fn new(server_extra: &str) -> Instance {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("config.toml");
        let state = dir.path().join("state.redb");
        std::fs::write(
            &config,
            format!(
                "[server]\npublic_url = \"https://oncall.example.com\"\nlisten = \"127.0.0.1:0\"\n{server_extra}\n\
                 [storage]\npath = \"{}\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n\
                 [lark]\nallow_api_base_url_override = true\n",
                state.display()
            ),
        )
        .expect("write config");
        Instance { dir, config }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.redb")
    }

    /// Runs a CLI command against this instance's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_stdin(args, "")
    }

    pub fn cli_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cli");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().expect("cli output")
    }

    /// Creates an API token offline (the service must not be running).
    pub fn offline_token(&self) -> String {
        let out = self.cli(&["admin", "create-token", "tests", "--scope", "admin"]);
        assert!(
            out.status.success(),
            "create-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Starts `serve` and waits until `/readyz` answers 200.
    pub fn serve(&self) -> Server {
        let addresses = self.dir.path().join("listen-addresses.json");
        let _ = std::fs::remove_file(&addresses);
        let log = self
            .dir
            .path()
            .join(format!("serve-{}.log", Instant::now().elapsed().as_nanos()));
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn serve");
        let mut server = Server {
            child,
            log,
            base: String::new(),
            admin: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = std::fs::read_to_string(&addresses) {
                let v: serde_json::Value = serde_json::from_str(&text).expect("addresses json");
                let scheme = if v["tls"].as_bool().unwrap() {
                    "https"
                } else {
                    "http"
                };
                server.base = format!("{scheme}://{}", v["public"].as_str().unwrap());
                server.admin = format!("{scheme}://{}", v["admin"].as_str().unwrap());
                return server;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("serve exited early ({status}): {}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "serve did not become ready: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

pub struct Server {
    pub child: Child,
    pub log: PathBuf,
    /// Base URL of the public listener.
    pub base: String,
    /// Base URL of the admin listener (the same as `base` without `admin_listen`).
    pub admin: String,
}

impl Server {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal");
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        wait_exit(&mut self.child, Duration::from_secs(30))
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// The first-start admin password from the log.
    pub fn initial_password(&self) -> String {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|v| v["password"].as_str().map(str::to_string))
            .expect("initial password in the log")
    }
}

pub fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed when the test ends, also when it ends by a failed assertion (a leaked
/// `demo` keeps its ports and its throwaway state).
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn client() -> reqwest::Client {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let hay = std::fs::read(path).unwrap();
    hay.windows(needle.len()).any(|w| w == needle)
}
