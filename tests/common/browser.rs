//! Headless Debian chromium for the browser tests, driven through `chromedriver` over the W3C
//! WebDriver protocol. A small client on the `reqwest` the project already builds, rather than a
//! WebDriver crate: the ones on crates.io bring a second TLS stack (aws-lc-rs) into test builds
//! for a driver that only ever talks plain HTTP on loopback.
//!
//! [`Browser::start`] returns `None` (the test then says it skipped) when chromium or chromedriver
//! is not installed, except under CI (`CI` set), where a missing browser fails the test.
//! Screenshots go to `target/screenshots/<suite>/<name>.png` and are kept as test artifacts.

use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key for an element reference in WebDriver answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// What the browser looks like to the page.
#[derive(Clone, Debug)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    /// Mobile emulation (touch, device pixel ratio 3, a phone user agent).
    pub mobile: bool,
    /// `Accept-Language` and `navigator.language`, e.g. `en-US` or `zh-CN`.
    pub language: &'static str,
}

impl Viewport {
    pub const LAPTOP: Viewport = Viewport {
        width: 1366,
        height: 900,
        mobile: false,
        language: "en-US",
    };
    /// An iPhone 13-sized screen, the size of Lark's mobile web view.
    pub const PHONE: Viewport = Viewport {
        width: 390,
        height: 844,
        mobile: true,
        language: "en-US",
    };

    pub fn with_language(mut self, language: &'static str) -> Viewport {
        self.language = language;
        self
    }
}

/// One chromium session; the driver (and the browser it started) is killed when dropped.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session_url: String,
    shots: PathBuf,
    _profile: tempfile::TempDir,
}

/// A reference to an element of the current page.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Starts chromedriver on a free port and a headless chromium session. `suite` names the
    /// screenshot folder.
    pub async fn start(suite: &str, viewport: Viewport) -> Option<Browser> {
        let installed =
            std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "browser tests need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: {CHROMIUM} or {CHROMEDRIVER} is not installed");
            return None;
        }
        let port = free_port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so Drop can end chromium together with the driver.
                .process_group(0)
                .spawn()
                .expect("spawn chromedriver")
        };
        super::install_crypto_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(answer) = http.get(format!("{base}/status")).send().await
                && answer.status().is_success()
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not start on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            "--ignore-certificate-errors".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--lang={}", viewport.language),
        ];
        let mut options = json!({
            "binary": CHROMIUM,
            "prefs": { "intl.accept_languages": viewport.language },
        });
        if viewport.mobile {
            options["mobileEmulation"] = json!({
                "deviceMetrics": { "width": viewport.width, "height": viewport.height, "pixelRatio": 3.0, "touch": true, "mobile": true },
                "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Lark/7.30.0 LarkLocale/en_US",
            });
        } else {
            args.push(format!("--window-size={},{}", viewport.width, viewport.height));
        }
        options["args"] = json!(args);
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": options,
            }}
        });
        let answer: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session answer");
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver refused the session: {answer}"))
            .to_string();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/screenshots")
            .join(suite);
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Some(Browser {
            driver,
            http,
            session_url: format!("{base}/session/{session}"),
            shots,
            _profile: profile,
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.session_url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match answer["value"].get("error") {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body))
            .await
            .unwrap_or_else(|e| panic!("webdriver {path}: {e}"))
    }

    /// Opens `url` and waits for the document to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await;
    }

    /// Reloads the current page.
    pub async fn refresh(&self) {
        self.post("/refresh", json!({})).await;
    }

    pub async fn current_url(&self) -> String {
        let value = self
            .command(reqwest::Method::GET, "/url", None)
            .await
            .expect("current url");
        value.as_str().unwrap_or_default().to_string()
    }

    /// The first element matching the CSS selector, if there is one now.
    pub async fn find(&self, css: &str) -> Option<Element> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .ok()?;
        found[ELEMENT_KEY].as_str().map(|id| Element(id.to_string()))
    }

    /// Waits up to 10 s for an element matching `css` that is displayed.
    pub async fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(element) = self.find(css).await
                && self.displayed(&element).await
            {
                return element;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("timeout").await;
                panic!(
                    "no visible `{css}` within 10 s on {} (screenshot {})",
                    self.current_url().await,
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to 10 s until the text of `css` contains `needle`, and returns the whole text.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        loop {
            if let Some(element) = self.find(css).await {
                last = self.element_text(&element).await;
                if last.contains(needle) {
                    return last;
                }
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("timeout").await;
                panic!(
                    "`{css}` never contained {needle:?} (last text {last:?}; screenshot {})",
                    shot.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn displayed(&self, element: &Element) -> bool {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/displayed", element.0),
            None,
        )
        .await
        .map(|v| v.as_bool().unwrap_or(false))
        .unwrap_or(false)
    }

    pub async fn element_text(&self, element: &Element) -> String {
        self.command(
            reqwest::Method::GET,
            &format!("/element/{}/text", element.0),
            None,
        )
        .await
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
    }

    /// The visible text of the first element matching `css` (waits for it).
    pub async fn text(&self, css: &str) -> String {
        let element = self.wait_for(css).await;
        self.element_text(&element).await
    }

    /// Clicks the first visible element matching `css`.
    pub async fn click(&self, css: &str) {
        let element = self.wait_for(css).await;
        self.post(&format!("/element/{}/click", element.0), json!({}))
            .await;
    }

    /// Clears the field matching `css` and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.wait_for(css).await;
        self.post(&format!("/element/{}/clear", element.0), json!({}))
            .await;
        self.post(&format!("/element/{}/value", element.0), json!({ "text": text }))
            .await;
    }

    /// Presses keys on the focused element (WebDriver key codes, e.g. "\u{E004}" for Tab).
    pub async fn keys(&self, keys: &str) {
        let actions: Vec<Value> = keys
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.post(
            "/actions",
            json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": actions }] }),
        )
        .await;
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Runs an async script: its last argument is the callback to call with the result.
    pub async fn execute_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver (e.g. `Network.clearBrowserCache`,
    /// `Emulation.setCPUThrottlingRate`).
    pub async fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
            .await
    }

    /// Saves a PNG of the viewport as `<suite>/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let value = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await
            .expect("screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().unwrap_or_default())
            .expect("screenshot base64");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }

    /// Ends the session cleanly (Drop would kill the processes anyway).
    pub async fn close(self) {
        let _ = self.command(reqwest::Method::DELETE, "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(-(self.driver.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
