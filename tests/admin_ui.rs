//! The admin UI in headless chromium against the appliance (`app::start`, real HTTP) and the
//! Lark simulator: log in, set up an integration with its live checks, page someone, follow the
//! deliveries and act on the incident, at laptop and phone sizes. Screenshots of every page
//! under `target/screenshots/admin_ui/`.

mod common;

use common::browser::{Browser, Viewport};
use common::inprocess::{Harness, VERIFICATION_TOKEN};
use lark_oncall::sim::{CardCallbackVersion, SimApp};
use serde_json::{Value, json};

const APP_ID: &str = "cli_adminui0001";
const APP_SECRET: &str = "admin-ui-test-secret";
/// A second app in the simulator, which the test connects through the UI.
const NEW_APP_ID: &str = "cli_adminui0002";
const NEW_APP_SECRET: &str = "admin-ui-second-secret";
const PASSWORD: &str = "correct horse battery staple";

const PAGES: &[&str] = &[
    "integrations",
    "incidents",
    "members",
    "rules",
    "oplog",
    "quota",
    "sources",
    "webhooks",
    "tokens",
    "scheduler",
    "backup",
    "account",
];

async fn start() -> Harness {
    let h = Harness::builder(APP_ID, APP_SECRET)
        .callbacks(CardCallbackVersion::V2)
        .integration_fields(json!({ "war_room": true }))
        .sim_config(|c| {
            c.apps
                .push(SimApp::new(NEW_APP_ID, NEW_APP_SECRET, VERIFICATION_TOKEN))
        })
        .start()
        .await;
    h.app()
        .auth
        .set_password(lark_oncall::auth::ADMIN_USER, PASSWORD, None)
        .await
        .unwrap();
    h
}

async fn log_in(b: &Browser, h: &Harness) {
    b.goto(&format!("{}/", h.admin)).await;
    b.wait_for("#login").await;
    b.fill("#login input[name=password]", PASSWORD).await;
    b.click("#login button[type=submit]").await;
    b.wait_for("nav.nav").await;
}

async fn open(b: &Browser, h: &Harness, hash: &str) {
    b.goto(&format!("{}/#/{hash}", h.admin)).await;
    b.wait_for("main h1").await;
}

async fn check_state(b: &Browser, id: &str) -> String {
    let css = format!("#checks li[data-check={id}]");
    b.wait_for(&css).await;
    b.execute(
        "return document.querySelector(arguments[0]).dataset.state",
        vec![Value::from(css)],
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Waits until `#checks` shows `id` in `state`, pressing "Check again" between looks.
async fn wait_check(b: &Browser, id: &str, state: &str) {
    for _ in 0..40 {
        if check_state(b, id).await == state {
            return;
        }
        b.click("#run-checks").await;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("check {id} never became {state}: {}", b.text("#checks").await);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_sets_up_pages_and_acknowledges_from_the_ui() {
    let h = start().await;
    let Some(b) = Browser::start("admin_ui", Viewport::LAPTOP).await else {
        return;
    };
    b.goto(&format!("{}/", h.admin)).await;
    b.wait_for("#login").await;
    b.screenshot("login-laptop").await;
    log_in(&b, &h).await;
    b.wait_for_text("main", "Ops").await;
    b.screenshot("integrations-laptop").await;

    // A new integration, with a wrong App Secret first: the credential check is red, in words.
    open(&b, &h, "integrations/new").await;
    b.fill("#integration-form input[name=name]", "Second app").await;
    b.fill("#integration-form input[name=app_id]", NEW_APP_ID).await;
    b.fill("#integration-form input[name=app_secret]", "not-the-secret")
        .await;
    b.fill(
        "#integration-form input[name=verification_token]",
        VERIFICATION_TOKEN,
    )
    .await;
    b.fill("#integration-form input[name=api_base_url]", &h.sim.base_url())
        .await;
    b.screenshot("integration-form-laptop").await;
    b.click("#integration-form button[type=submit]").await;
    b.wait_for("#checks li[data-check=credentials]").await;
    wait_check(&b, "credentials", "bad").await;
    let words = b.text("#checks li[data-check=credentials]").await;
    assert!(
        words.contains("Lark rejected the App ID / App Secret (code 10014): copy them again from Credentials & Basic Info"),
        "{words}"
    );
    b.screenshot("setup-wrong-secret-laptop").await;

    // A field the API refuses is named next to that field.
    let url = b.current_url().await;
    b.goto(&format!("{url}/edit")).await;
    b.wait_for("#integration-form").await;
    b.fill("#integration-form input[name=app_id]", "not-an-app-id")
        .await;
    b.click("#integration-form button[type=submit]").await;
    let error = b
        .wait_for_text(".field[data-field=app_id] .error", "App ID")
        .await;
    assert!(error.contains("cli_"), "{error}");
    b.screenshot("integration-field-error-laptop").await;
    b.fill("#integration-form input[name=app_id]", NEW_APP_ID).await;
    b.fill("#integration-form input[name=app_secret]", NEW_APP_SECRET)
        .await;
    b.click("#integration-form button[type=submit]").await;
    b.wait_for("#checks li[data-check=credentials]").await;
    wait_check(&b, "credentials", "ok").await;

    // The harness's integration: the simulator's url_verification turns the Request URL green.
    h.sim.verify_url(APP_ID).await.unwrap();
    open(&b, &h, &format!("integrations/{}", h.integration)).await;
    wait_check(&b, "credentials", "ok").await;
    wait_check(&b, "request_url", "ok").await;
    wait_check(&b, "chats", "ok").await;
    for key in ["web", "callback", "redirect"] {
        let css = format!("[data-url={key}] button");
        b.click(&css).await;
        b.wait_for(&format!("[data-url={key}] button[data-copied=true]"))
            .await;
    }
    let urls = b.text("section[aria-labelledby=urls-h]").await;
    for part in ["/app", "/callback", "/oauth/callback"] {
        assert!(urls.contains(&format!("/lark/{}{part}", h.integration)), "{urls}");
    }
    b.screenshot("setup-guide-laptop").await;

    // A member, and a rule paging them and a chat chosen from the picker.
    open(&b, &h, "members").await;
    b.fill("#member-form input[name=name]", "Li Na").await;
    b.fill("#member-form input[name=email]", "li.na@example.com")
        .await;
    b.click("#member-form button[type=submit]").await;
    b.wait_for_text("main table", "Li Na").await;
    b.screenshot("members-laptop").await;
    open(&b, &h, "rules/new").await;
    b.fill("#rule-form input[name=name]", "Everything").await;
    b.wait_for("#rule-form .chat-picker input[type=checkbox]").await;
    b.click("#rule-form [name=members-0]").await;
    b.click("#rule-form .chat-picker input[type=checkbox]").await;
    b.screenshot("rule-editor-laptop").await;
    b.click("#rule-form button[type=submit]").await;
    b.wait_for_text("#rules", "Everything").await;
    b.screenshot("rules-laptop").await;

    // The test button raises an incident; the operation log shows the deliveries.
    b.click("#test-incident").await;
    b.wait_for("#ack").await;
    h.wait_for("two cards delivered", |h| h.sim.messages().len() >= 2)
        .await;
    open(&b, &h, "oplog").await;
    b.wait_for_text("#oplog", "delivered").await;
    b.screenshot("oplog-laptop").await;

    // Acknowledge in the UI; the cards in the simulator are updated.
    open(&b, &h, "incidents").await;
    b.screenshot("incidents-laptop").await;
    b.click("main table a").await;
    b.wait_for("#ack").await;
    b.click("#ack").await;
    b.wait_for_text("#incident-status", "acknowledged").await;
    h.wait_for("a card update", |h| {
        h.sim
            .calls()
            .iter()
            .any(|c| c.method == "PATCH" && c.path.contains("/im/v1/messages/") && c.status == 200)
    })
    .await;
    // War room: opened from the incident, its link shown.
    b.click("#open-war-room").await;
    b.wait_for("#war-room-link").await;
    b.screenshot("incident-laptop").await;

    // The quota page counts the calls the test made.
    open(&b, &h, "quota").await;
    let used = b
        .wait_for_text(&format!("[data-quota={}] .quota-used", h.integration), "/")
        .await;
    let calls: u64 = used
        .split('/')
        .next()
        .unwrap()
        .trim()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(calls > 0, "{used}");
    b.screenshot("quota-laptop").await;

    for page in PAGES {
        open(&b, &h, page).await;
        b.screenshot(&format!("{page}-laptop")).await;
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_works_on_a_phone_in_both_languages() {
    let h = start().await;
    for (viewport, suffix) in [
        (Viewport::PHONE, "phone"),
        (Viewport::PHONE.with_language("zh-CN"), "phone-zh"),
    ] {
        let Some(b) = Browser::start("admin_ui", viewport).await else {
            return;
        };
        log_in(&b, &h).await;
        for page in PAGES {
            open(&b, &h, page).await;
            b.screenshot(&format!("{page}-{suffix}")).await;
        }
        open(&b, &h, &format!("integrations/{}", h.integration)).await;
        b.wait_for("#checks li[data-check=credentials]").await;
        b.screenshot(&format!("setup-guide-{suffix}")).await;
        b.close().await;
    }
}
