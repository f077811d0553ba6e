//! The admin UI in headless chromium against the appliance (`app::start`, real HTTP) and the
//! Lark simulator: log in, set up an integration with its live checks, page someone, follow the
//! deliveries and act on the incident, at laptop and phone sizes; set up a group bot and an
//! on-call schedule with its overrides. Every page is checked with
//! axe-core (no serious or critical violation) and, on a phone, for fitting the screen.
//! Screenshots of every page under `target/screenshots/admin_ui/`.

mod common;

use common::accessibility::assert_accessible;
use common::browser::{Browser, Viewport};
use common::inprocess::{Harness, VERIFICATION_TOKEN};
use lark_oncall::sim::{CardCallbackVersion, SimApp, SimBotHookSetup};
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
    "schedules",
    "rules",
    "bots",
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
    b.wait_for("header.topbar").await;
}

async fn open(b: &Browser, h: &Harness, hash: &str) {
    let url = format!("{}/#/{hash}", h.admin);
    // Going to the URL already shown changes nothing (no hashchange): reload it instead.
    if b.current_url().await == url {
        b.refresh().await;
    } else {
        b.goto(&url).await;
    }
    b.wait_for("main h1").await;
}

/// The page shown passes axe-core and, on a phone, is no wider than the screen.
async fn check_page(b: &Browser, page: &str, phone: bool) {
    // The set-up guide's checks and the war room fill in after the page: let them land.
    b.execute_async(
        "const done = arguments[0]; setTimeout(() => requestAnimationFrame(() => done(true)), 300);",
        vec![],
    )
    .await;
    assert_accessible(b, page).await;
    if phone {
        let overflow = b
            .execute(
                "return document.documentElement.scrollWidth - window.innerWidth",
                vec![],
            )
            .await;
        assert!(
            overflow.as_i64().unwrap_or(0) <= 0,
            "{page} is {overflow} px wider than the phone's screen"
        );
    }
}

async fn api(h: &Harness, method: reqwest::Method, path: &str, body: Value) -> Value {
    let (status, answer) = h.api(method, path, body).await;
    assert!(status.is_success(), "{path}: {status} {answer}");
    answer
}

/// Sets a `datetime-local` input by script (typing into its segments depends on the locale).
async fn set_local_time(b: &Browser, css: &str, at: chrono::DateTime<chrono::Utc>) {
    b.execute(
        "const el = document.querySelector(arguments[0]); const d = new Date(arguments[1]); \
         el.value = new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);",
        vec![Value::from(css), Value::from(at.to_rfc3339())],
    )
    .await;
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
    check_page(&b, "login", false).await;
    log_in(&b, &h).await;
    b.wait_for_text("main", "Ops").await;
    b.screenshot("integrations-laptop").await;

    // A new integration in both receive modes, with a wrong App Secret first: the credential
    // check is red, in words, and the long connection says why Lark refused it.
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
    b.click("#integration-form input[name=receive_modes][value=long_connection]")
        .await;
    b.screenshot("integration-form-laptop").await;
    check_page(&b, "integration form", false).await;
    b.click("#integration-form button[type=submit]").await;
    b.wait_for("#checks li[data-check=credentials]").await;
    wait_check(&b, "credentials", "bad").await;
    let words = b.text("#checks li[data-check=credentials]").await;
    assert!(
        words.contains("Lark rejected the App ID / App Secret (code 10014): copy them again from Credentials & Basic Info"),
        "{words}"
    );
    b.wait_for("#long-connection-status[data-state=stopped]").await;
    let refused = b.text("#long-connection-error").await;
    assert!(
        refused.contains("endpoint_refused") && refused.contains("App Secret"),
        "{refused}"
    );
    b.screenshot("setup-wrong-secret-laptop").await;
    check_page(&b, "set-up guide, wrong secret", false).await;

    // A field the API refuses is named next to that field.
    let url = b.current_url().await;
    let new_id = url.rsplit('/').next().unwrap().to_string();
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
    check_page(&b, "integration form with an error", false).await;
    // No receive mode at all is refused next to the modes.
    for mode in ["webhook", "long_connection"] {
        b.click(&format!(
            "#integration-form input[name=receive_modes][value={mode}]"
        ))
        .await;
    }
    b.fill("#integration-form input[name=app_id]", NEW_APP_ID).await;
    b.click("#integration-form button[type=submit]").await;
    b.wait_for_text(".field[data-field=receive_modes] .error", "receive_modes")
        .await;
    b.click("#integration-form input[name=receive_modes][value=long_connection]")
        .await;
    b.fill("#integration-form input[name=app_secret]", NEW_APP_SECRET)
        .await;
    b.click("#integration-form button[type=submit]").await;
    b.wait_for("#checks li[data-check=credentials]").await;
    wait_check(&b, "credentials", "ok").await;
    // Saved with the right secret, the long connection connects (the section re-reads it).
    b.wait_for("#long-connection-status[data-state=connected]").await;
    let saved = api(
        &h,
        reqwest::Method::GET,
        &format!("/api/v1/integrations/{new_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(saved["receive_modes"], json!(["long_connection"]), "{saved}");
    // Lark never posts to the Request URL of an integration on the long connection alone.
    wait_check(&b, "request_url", "not_needed").await;
    let words = b.text("#checks li[data-check=request_url]").await;
    assert!(words.contains("long connection"), "{words}");
    b.screenshot("setup-long-connection-laptop").await;

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
    check_page(&b, "set-up guide", false).await;

    // A member, added and then edited.
    open(&b, &h, "members").await;
    b.fill("#member-form input[name=name]", "Li Na").await;
    b.fill("#member-form input[name=email]", "li.na@example.com")
        .await;
    b.click("#member-form button[type=submit]").await;
    b.wait_for_text("main table", "Li Na").await;
    b.click("a[data-member='Li Na']").await;
    b.wait_for("#member-edit-form").await;
    b.fill("#member-edit-form input[name=name]", "Li Na (SRE)").await;
    b.fill("#member-edit-form input[name=mobile]", "+8613800138000")
        .await;
    b.click("#member-edit-form select[name=role] option[value=viewer]")
        .await;
    b.screenshot("member-edit-laptop").await;
    check_page(&b, "member editor", false).await;
    b.click("#member-edit-form button[type=submit]").await;
    b.wait_for_text("main table", "Li Na (SRE)").await;
    let members = api(&h, reqwest::Method::GET, "/api/v1/members", Value::Null).await;
    let li = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "Li Na (SRE)")
        .unwrap_or_else(|| panic!("{members}"));
    assert_eq!(
        (&li["email"], &li["mobile"], &li["role"]),
        (
            &json!("li.na@example.com"),
            &json!("+8613800138000"),
            &json!("viewer")
        ),
        "{li}"
    );
    b.screenshot("members-laptop").await;

    // No rule yet: the page says what that means. Then a rule paging the member and a chat
    // chosen from the picker.
    open(&b, &h, "rules").await;
    let empty = b.text("#rules-empty").await;
    assert!(empty.contains("pages nobody"), "{empty}");
    b.screenshot("rules-empty-laptop").await;
    check_page(&b, "rules, empty", false).await;
    open(&b, &h, "rules/new").await;
    b.fill("#rule-form input[name=name]", "Everything").await;
    b.wait_for("#rule-form .chat-picker input[type=checkbox]").await;
    b.click("#rule-form [name=members-0]").await;
    b.click("#rule-form .chat-picker input[type=checkbox]").await;
    b.screenshot("rule-editor-laptop").await;
    check_page(&b, "rule editor", false).await;
    b.click("#rule-form button[type=submit]").await;
    b.wait_for_text("#rules", "Everything").await;

    // Reorder: a second rule made through the API at the same position (a tie, listed after
    // the older one) moves up, then down again; the order is the API's too.
    h.create(
        "/api/v1/rules",
        json!({"name": "Night shift", "integration_id": h.integration, "position": 0,
               "match": {"severities": ["critical"]}, "levels": [{"chats": [h.chat()]}]}),
    )
    .await;
    open(&b, &h, "rules").await;
    b.wait_for_text("#rules > li:first-child strong", "Everything")
        .await;
    b.click("[data-rule='Night shift'] [data-move=up]").await;
    b.wait_for_text("#rules > li:first-child strong", "Night shift")
        .await;
    let rules = api(&h, reqwest::Method::GET, "/api/v1/rules", Value::Null).await;
    let order: Vec<&str> = rules["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["Night shift", "Everything"], "{rules}");
    b.screenshot("rules-laptop").await;
    check_page(&b, "rules", false).await;
    b.click("[data-rule='Night shift'] [data-move=down]").await;
    b.wait_for_text("#rules > li:first-child strong", "Everything")
        .await;

    // An outbound webhook, so the test incident makes an attempt to show.
    let hook = h
        .create(
            "/api/v1/webhooks",
            json!({"name": "Audit", "url": format!("{}/no-such-receiver", h.sim.base_url())}),
        )
        .await;
    let hook_id = hook["id"].as_str().unwrap().to_string();

    // The test button raises an incident; the operation log shows the deliveries.
    b.click("#test-incident").await;
    b.wait_for("#ack").await;
    check_page(&b, "incident", false).await;
    h.wait_for("two cards delivered", |h| h.sim.messages().len() >= 2)
        .await;
    open(&b, &h, "oplog").await;
    b.wait_for_text("#oplog", "delivered").await;
    b.screenshot("oplog-laptop").await;
    check_page(&b, "operation log", false).await;

    // The time range: from a minute after the newest entry nothing shows; up to it, entries do.
    let log = api(
        &h,
        reqwest::Method::GET,
        &format!("/api/v1/oplog?integration={}", h.integration),
        Value::Null,
    )
    .await;
    let newest: chrono::DateTime<chrono::Utc> = log["items"][0]["at"].as_str().unwrap().parse().unwrap();
    set_local_time(
        &b,
        "#oplog-filters input[name=since]",
        newest + chrono::Duration::minutes(2),
    )
    .await;
    b.click("#oplog-filters button[type=submit]").await;
    b.wait_for_text("#oplog", "None yet").await;
    assert!(b.current_url().await.contains("since="));
    set_local_time(
        &b,
        "#oplog-filters input[name=since]",
        newest - chrono::Duration::minutes(2),
    )
    .await;
    set_local_time(
        &b,
        "#oplog-filters input[name=until]",
        newest + chrono::Duration::minutes(2),
    )
    .await;
    b.click("#oplog-filters button[type=submit]").await;
    b.wait_for_text("#oplog", "delivered").await;
    b.screenshot("oplog-time-range-laptop").await;

    // The webhook's attempt shows on the webhooks page.
    h.wait_for("a webhook attempt", |h| {
        lark_oncall::delivery::oplog::query(
            &h.app().store,
            &lark_oncall::delivery::oplog::OpQuery {
                integration: Some(format!("webhook:{hook_id}")),
                ..Default::default()
            },
        )
        .is_ok_and(|e| !e.is_empty())
    })
    .await;
    open(&b, &h, "webhooks").await;
    let attempts = b.text(&format!("[data-attempts='{hook_id}']")).await;
    assert!(attempts.contains("i_new"), "{attempts}");
    b.screenshot("webhooks-laptop").await;

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
    check_page(&b, "incident, acknowledged", false).await;

    // The incident filters stay on the incidents page and filter.
    open(&b, &h, "incidents").await;
    b.fill("form[role=search] input[name=text]", "no such words")
        .await;
    b.click("form[role=search] button[type=submit]").await;
    b.wait_for_text("main", "None yet").await;
    assert_eq!(b.text("main h1").await, "Incidents");
    b.click("form[role=search] select[name=status] option[value=acknowledged]")
        .await;
    b.fill("form[role=search] input[name=text]", "admin UI").await;
    b.click("form[role=search] button[type=submit]").await;
    b.wait_for_text("main table", "Test incident").await;

    // The quota page counts the calls the test made, by day, and shows the limiter.
    open(&b, &h, "quota").await;
    let section = format!("[data-quota='{}']", h.integration);
    let used = b.wait_for_text(&format!("{section} .quota-used"), "/").await;
    let calls: u64 = used
        .split('/')
        .next()
        .unwrap()
        .trim()
        .replace(',', "")
        .parse()
        .unwrap();
    assert!(calls > 0, "{used}");
    let quota = api(
        &h,
        reqwest::Method::GET,
        &format!("/api/v1/integrations/{}/quota", h.integration),
        Value::Null,
    )
    .await;
    let by_day: u64 = quota["by_day"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(by_day, quota["used"].as_u64().unwrap(), "{quota}");
    let tallest_bar = b
        .execute(
            "return Math.max(...[...document.querySelectorAll(arguments[0] + ' svg.chart rect.bar')].map((r) => Number(r.getAttribute('height'))))",
            vec![Value::from(section.clone())],
        )
        .await;
    assert!(tallest_bar.as_f64().unwrap_or(0.0) > 0.0, "{tallest_bar}");
    // The day numbers under the bars are drawn at a size people read (they were ~5 px).
    let label_px = b
        .execute_async(
            "const [css, done] = arguments; requestAnimationFrame(() => requestAnimationFrame(() => \
             done(document.querySelector(css + ' svg.chart text').getBoundingClientRect().height)));",
            vec![Value::from(section.clone())],
        )
        .await;
    assert!(
        label_px.as_f64().unwrap_or(0.0) >= 12.0,
        "chart labels {label_px} px high"
    );
    let limiter = b.text(&format!("{section} .limiter-state")).await;
    assert!(
        limiter.contains("queued") || limiter.contains("Idle"),
        "{limiter}"
    );
    b.screenshot("quota-laptop").await;

    for page in PAGES {
        open(&b, &h, page).await;
        b.screenshot(&format!("{page}-laptop")).await;
        check_page(&b, page, false).await;
    }
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_works_on_a_phone_in_both_languages() {
    let h = start().await;
    // An integration that has made no call: its quota says so instead of drawing empty axes.
    let quiet = h
        .create(
            "/api/v1/integrations",
            json!({"name": "Quiet", "app_id": "cli_adminuiquiet1", "app_secret": "quiet-secret",
                   "verification_token": VERIFICATION_TOKEN, "api_base_url": h.sim.base_url()}),
        )
        .await;
    let quiet = quiet["id"].as_str().unwrap().to_string();
    for (viewport, suffix) in [
        (Viewport::PHONE, "phone"),
        (Viewport::PHONE.with_language("zh-CN"), "phone-zh"),
    ] {
        let Some(b) = Browser::start("admin_ui", viewport).await else {
            return;
        };
        log_in(&b, &h).await;
        // The top bar is one row, and the menu opens every page's link within the screen.
        let bar = b
            .execute(
                "return document.querySelector('.topbar').getBoundingClientRect().height",
                vec![],
            )
            .await;
        assert!(bar.as_f64().unwrap() < 60.0, "top bar {bar} px high");
        assert!(b.find("nav.nav a").await.is_some());
        b.click("#menu-toggle").await;
        b.wait_for("nav.nav a[href='#/account']").await;
        let outside = b
            .execute(
                "return [...document.querySelectorAll('nav.nav a')].filter((a) => { const r = a.getBoundingClientRect(); \
                 return r.width === 0 || r.left < 0 || r.right > window.innerWidth; }).map((a) => a.textContent)",
                vec![],
            )
            .await;
        b.screenshot(&format!("menu-{suffix}")).await;
        assert_eq!(outside, json!([]), "links outside the screen");
        check_page(&b, "menu", true).await;
        b.click("nav.nav a[href='#/members']").await;
        b.wait_for("#member-form").await;
        for page in PAGES {
            open(&b, &h, page).await;
            b.screenshot(&format!("{page}-{suffix}")).await;
            check_page(&b, page, true).await;
        }
        open(&b, &h, "quota").await;
        b.wait_for(&format!("[data-quota='{quiet}'] [data-empty=per_day]"))
            .await;
        assert!(
            b.find(&format!("[data-quota='{quiet}'] svg.chart"))
                .await
                .is_none(),
            "a chart of no calls"
        );
        open(&b, &h, &format!("integrations/{}", h.integration)).await;
        b.wait_for("#checks li[data-check=credentials]").await;
        b.screenshot(&format!("setup-guide-{suffix}")).await;
        check_page(&b, "set-up guide", true).await;
        b.close().await;
    }
}

/// Sets an input's value by script (a `datetime-local` holds `YYYY-MM-DDTHH:MM`, whatever the
/// browser's locale would make of typed segments).
async fn set_value(b: &Browser, css: &str, value: &str) {
    b.wait_for(css).await;
    b.execute(
        "document.querySelector(arguments[0]).value = arguments[1];",
        vec![Value::from(css), Value::from(value)],
    )
    .await;
}

/// A group bot set up in the UI, whose URL and secret never show again, on a page that says what
/// a group bot cannot do; a schedule built layer by layer whose next shifts, gaps and overrides
/// show; a rule level naming both; every new page axe-clean at laptop and phone, en and zh.
#[tokio::test(flavor = "multi_thread")]
async fn group_bots_and_schedules_are_set_up_in_the_ui() {
    const BOT_SECRET: &str = "group-bot-signing-secret";
    let h = start().await;
    let alice = h.member("Alice Wang", "alice.wang@example.com").await;
    let bob = h.member("Bob Li", "bob.li@example.com").await;
    let hook = h
        .sim
        .add_bot_hook(SimBotHookSetup {
            name: "ops-group".into(),
            secret: Some(BOT_SECRET.into()),
            ..SimBotHookSetup::default()
        })
        .unwrap();
    let hook_url = h.sim.bot_hook_url(&hook);
    let Some(b) = Browser::start("admin_ui", Viewport::LAPTOP).await else {
        return;
    };
    log_in(&b, &h).await;

    // The group bot: what it cannot do is said before there is one.
    open(&b, &h, "bots").await;
    let notes = b.text("#bot-notes").await;
    for words in [
        "cannot call back",
        "cannot be updated",
        "at most one per incident per minute",
        "100 a minute",
        "monthly quota",
    ] {
        assert!(notes.contains(words), "{words:?} not in {notes}");
    }
    b.click("#new-bot").await;
    b.wait_for("#bot-form").await;
    b.fill("#bot-form input[name=name]", "Ops group").await;
    b.fill("#bot-form input[name=url]", &hook_url).await;
    b.fill("#bot-form input[name=secret]", BOT_SECRET).await;
    b.screenshot("bot-form-laptop").await;
    check_page(&b, "group bot form", false).await;
    b.click("#bot-form button[type=submit]").await;
    b.wait_for_text("#bots", "Ops group").await;
    assert_eq!(b.text("#bots [data-set=url]").await, "set");
    assert_eq!(b.text("#bots [data-set=secret]").await, "set");
    let bots = api(&h, reqwest::Method::GET, "/api/v1/bot-webhooks", Value::Null).await;
    let bot_id = bots["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(bots["items"][0]["secret_set"], json!(true), "{bots}");
    b.screenshot("bots-laptop").await;
    check_page(&b, "group bots", false).await;
    // Editing shows neither the URL nor the secret, only that they are set.
    b.click("a[data-bot='Ops group']").await;
    b.wait_for("#bot-form").await;
    let url_value = b
        .execute(
            "return document.querySelector('#bot-form input[name=url]').value",
            vec![],
        )
        .await;
    assert_eq!(url_value, json!(""));
    let page = b
        .execute("return document.documentElement.outerHTML", vec![])
        .await;
    let page = page.as_str().unwrap();
    assert!(
        !page.contains(&hook.token) && !page.contains(BOT_SECRET),
        "a secret shown"
    );
    assert!(
        b.text("#bot-form")
            .await
            .contains("Set. Type a new value to replace it.")
    );

    // A schedule: two people a day each, only 08:00–20:00 in Shanghai, so every night is a gap.
    open(&b, &h, "schedules").await;
    b.click("#new-schedule").await;
    b.wait_for("#schedule-form").await;
    b.fill("#schedule-form input[name=name]", "Primary").await;
    b.fill("#schedule-form input[name=time_zone]", "Asia/Shanghai")
        .await;
    b.fill("#schedule-form input[name=layer_name-0]", "Days").await;
    for member in [&alice, &bob] {
        b.click(&format!(
            "#schedule-form select[name=add_member-0] option[value='{member}']"
        ))
        .await;
        b.click("#schedule-form [data-add=turn]").await;
    }
    b.click("#schedule-form select[name=unit-0] option[value=day]")
        .await;
    let shanghai = chrono_tz::Asia::Shanghai;
    let today = chrono::Utc::now().with_timezone(&shanghai).date_naive();
    set_value(
        &b,
        "#schedule-form input[name=first_handoff-0]",
        &format!("{today}T08:00"),
    )
    .await;
    b.fill("#schedule-form textarea[name=restrictions-0]", "0-6 08:00-20:00")
        .await;
    b.screenshot("schedule-form-laptop").await;
    check_page(&b, "schedule form", false).await;
    b.click("#schedule-form button[type=submit]").await;
    let shifts = b.wait_for_text("#final", "Alice Wang").await;
    assert!(shifts.contains("Bob Li") && shifts.contains("Days"), "{shifts}");
    let gaps = b.text("#gaps").await;
    assert!(
        gaps.contains("20:00") && gaps.contains("08:00") && gaps.contains("nobody on call"),
        "{gaps}"
    );
    let schedules = api(&h, reqwest::Method::GET, "/api/v1/schedules", Value::Null).await;
    let schedule = &schedules["items"][0];
    let schedule_id = schedule["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            &schedule["time_zone"],
            &schedule["layers"][0]["participants"],
            &schedule["layers"][0]["rotation"],
            &schedule["layers"][0]["first_handoff"],
            &schedule["layers"][0]["restrictions"]
        ),
        (
            &json!("Asia/Shanghai"),
            &json!([alice, bob]),
            &json!({"unit": "day", "every": 1}),
            &json!(format!("{today}T08:00:00")),
            &json!([{"days": [0, 1, 2, 3, 4, 5, 6], "start": "08:00", "end": "20:00"}])
        ),
        "{schedule}"
    );
    b.screenshot("schedule-laptop").await;
    check_page(&b, "schedule", false).await;
    // Each layer and each person.
    b.click(".tabs [role=tab]:nth-child(2)").await;
    b.wait_for_text(".tabs [role=tabpanel]", "Days").await;
    check_page(&b, "schedule, each layer", false).await;
    b.click(".tabs [role=tab]:nth-child(3)").await;
    b.wait_for("#person-shifts").await;
    check_page(&b, "schedule, per person", false).await;

    // Notices, set in the edit form: a daily card with no chat is refused under that field.
    open(&b, &h, &format!("schedules/{schedule_id}/edit")).await;
    b.wait_for("#schedule-form").await;
    b.click("#schedule-form [data-field=handoff_on] input").await;
    b.fill("#schedule-form input[name=minutes_before]", "20").await;
    b.click("#schedule-form [data-field=notify_outgoing] input").await;
    b.click("#schedule-form [data-field=daily_on] input").await;
    set_value(&b, "#schedule-form input[name=daily_at]", "09:30").await;
    b.click("#schedule-form button[type=submit]").await;
    let refused = b
        .wait_for_text("#schedule-form [data-field=daily_chats] .error", "chat")
        .await;
    assert!(refused.contains("1 to"), "{refused}");
    b.screenshot("schedule-notices-laptop").await;
    check_page(&b, "schedule notices", false).await;
    b.fill("#schedule-form input[name=daily_chats]", "oc_ops, oc_sre")
        .await;
    b.click("#schedule-form button[type=submit]").await;
    b.wait_for("#final").await;
    let stored = api(
        &h,
        reqwest::Method::GET,
        &format!("/api/v1/schedules/{schedule_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(
        stored["handoff_notice"],
        json!({"minutes_before": 20, "notify_outgoing": true}),
        "{stored}"
    );
    assert_eq!(
        stored["daily_summary"]["chats"],
        json!(["oc_ops", "oc_sre"]),
        "{stored}"
    );
    assert_eq!(stored["daily_summary"]["at"], "09:30", "{stored}");
    assert_eq!(
        stored["daily_summary"]["integration_id"],
        h.integration.as_str(),
        "{stored}"
    );

    // An override from now for three hours: Bob is on call, and the final schedule says why.
    let end = (chrono::Utc::now() + chrono::Duration::hours(3)).with_timezone(&shanghai);
    b.click(&format!(
        "#override-form select[name=member_id] option[value='{bob}']"
    ))
    .await;
    set_value(
        &b,
        "#override-form input[name=end]",
        &end.format("%Y-%m-%dT%H:%M").to_string(),
    )
    .await;
    b.fill("#override-form input[name=note]", "Covering for Alice")
        .await;
    b.click("#override-form button[type=submit]").await;
    let on_call = b.wait_for_text("#final tbody tr:first-child", "override").await;
    assert!(on_call.contains("Bob Li"), "{on_call}");
    b.wait_for_text("#on-call-now", "Bob Li").await;
    assert!(b.text("#overrides").await.contains("Covering for Alice"));
    let stored = api(
        &h,
        reqwest::Method::GET,
        &format!("/api/v1/schedules/{schedule_id}"),
        Value::Null,
    )
    .await;
    let o = &stored["overrides"][0];
    assert_eq!(o["member_id"], json!(bob), "{stored}");
    let stored_end: chrono::DateTime<chrono::Utc> = o["end"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        stored_end
            .with_timezone(&shanghai)
            .format("%Y-%m-%dT%H:%M")
            .to_string(),
        end.format("%Y-%m-%dT%H:%M").to_string()
    );
    b.screenshot("schedule-override-laptop").await;
    check_page(&b, "schedule with an override", false).await;

    // A calendar URL, shown once.
    b.click("#create-feed").await;
    let feed = b.wait_for_text("#feed-url", ".ics").await;
    assert!(feed.contains("/calendar/"), "{feed}");

    // A rule level pages the group bot, a second one set up with the wrong secret, and whoever
    // is on call.
    let wrong = h
        .create(
            "/api/v1/bot-webhooks",
            json!({"name": "Wrong secret", "url": hook_url, "secret": "not-the-secret"}),
        )
        .await;
    let wrong_id = wrong["id"].as_str().unwrap().to_string();
    open(&b, &h, "rules/new").await;
    b.fill("#rule-form input[name=name]", "Group and rota").await;
    for id in [&bot_id, &wrong_id] {
        b.click(&format!("#rule-form [name=bot_webhooks-0][value='{id}']"))
            .await;
    }
    b.click(&format!("#rule-form [name=schedules-0][value='{schedule_id}']"))
        .await;
    b.screenshot("rule-editor-targets-laptop").await;
    check_page(&b, "rule editor with group bots and schedules", false).await;
    b.click("#rule-form button[type=submit]").await;
    b.wait_for_text("#rules", "Group and rota").await;
    let rules = api(&h, reqwest::Method::GET, "/api/v1/rules", Value::Null).await;
    let level = &rules["items"][0]["levels"][0];
    assert_eq!(
        (&level["bot_webhooks"], &level["schedules"]),
        (&json!([bot_id, wrong_id]), &json!([schedule_id])),
        "{rules}"
    );

    // An incident reaches the bot's group; its page shows how the post went.
    h.create(
        "/api/v1/incidents",
        json!({"title": "Disk full on db-1", "severity": "critical"}),
    )
    .await;
    h.wait_for("a signed post at the hook", |h| {
        h.sim
            .bot_hooks()
            .iter()
            .any(|x| x.posts.iter().any(|p| p.code == 0 && p.signed))
    })
    .await;
    h.wait_for("the post in the operation log", |h| {
        lark_oncall::delivery::oplog::query(
            &h.app().store,
            &lark_oncall::delivery::oplog::OpQuery {
                receiver: Some(format!("bot_webhook:{bot_id}")),
                ..Default::default()
            },
        )
        .is_ok_and(|e| e.iter().any(|e| e.outcome == "delivered"))
    })
    .await;
    h.wait_for("the refused post in the operation log", |h| {
        lark_oncall::delivery::oplog::query(
            &h.app().store,
            &lark_oncall::delivery::oplog::OpQuery {
                receiver: Some(format!("bot_webhook:{wrong_id}")),
                ..Default::default()
            },
        )
        .is_ok_and(|e| e.iter().any(|e| e.outcome == "failed"))
    })
    .await;
    open(&b, &h, "bots").await;
    b.wait_for_text(&format!("[data-outcomes='{bot_id}']"), "delivered")
        .await;
    // The wrong secret's post failed for good, with the reason and what to do in words.
    let refused = b
        .wait_for_text(&format!("[data-outcomes='{wrong_id}']"), "sign_mismatch")
        .await;
    assert!(
        refused.contains("19021") && refused.contains("signing secret"),
        "{refused}"
    );
    b.screenshot("bots-outcomes-laptop").await;
    // The quota page gives the bot its own line, outside the app's quota.
    open(&b, &h, "quota").await;
    let line = b.wait_for_text("#quota-bots", "Ops group").await;
    assert!(line.contains("do not count against"), "{line}");
    // Ending the running override keeps its past and lists it no more.
    open(&b, &h, &format!("schedules/{schedule_id}")).await;
    b.click("[data-end-override]").await;
    b.wait_for_text("#overrides", "No override in force or to come.")
        .await;
    b.close().await;

    for (viewport, suffix, note) in [
        (Viewport::PHONE, "phone", "cannot call back"),
        (Viewport::PHONE.with_language("zh-CN"), "phone-zh", "无法回调"),
    ] {
        let Some(b) = Browser::start("admin_ui", viewport).await else {
            return;
        };
        log_in(&b, &h).await;
        for page in [
            "bots",
            "bots/new",
            "schedules",
            &format!("schedules/{schedule_id}"),
            &format!("schedules/{schedule_id}/edit"),
        ] {
            open(&b, &h, page).await;
            b.screenshot(&format!(
                "{}-{suffix}",
                page.replace('/', "-").replace(&schedule_id, "one")
            ))
            .await;
            check_page(&b, page, true).await;
        }
        // Further down the schedule: the shifts in words, the overrides and the calendar URLs.
        open(&b, &h, &format!("schedules/{schedule_id}")).await;
        for part in ["final", "overrides", "feeds"] {
            b.execute(
                "document.getElementById(arguments[0]).scrollIntoView()",
                vec![Value::from(part)],
            )
            .await;
            b.screenshot(&format!("schedule-{part}-{suffix}")).await;
        }
        open(&b, &h, "bots").await;
        assert!(b.text("#bot-notes").await.contains(note));
        // On a phone the six log filters fold behind one line, and open from it.
        open(&b, &h, "oplog").await;
        let folded = b
            .execute(
                "return document.querySelector('#oplog-filter-disclosure').open",
                vec![],
            )
            .await;
        assert_eq!(folded, json!(false), "the filters are open on a phone");
        let hidden = b
            .execute(
                "return !document.querySelector('#oplog-filters select[name=outcome]').checkVisibility()",
                vec![],
            )
            .await;
        assert_eq!(hidden, json!(true), "a filter shows while folded");
        b.click("#oplog-filter-disclosure summary").await;
        b.wait_for("#oplog-filters select[name=outcome]").await;
        b.screenshot(&format!("oplog-filters-open-{suffix}")).await;
        check_page(&b, "operation log, filters open", true).await;
        b.close().await;
    }
}

/// Every word of the admin UI has its zh_cn text (a missing one would show in English).
#[tokio::test(flavor = "multi_thread")]
async fn every_english_string_has_its_chinese() {
    let h = start().await;
    let Some(b) = Browser::start("admin_ui", Viewport::LAPTOP).await else {
        return;
    };
    b.goto(&format!("{}/", h.admin)).await;
    b.wait_for("#login").await;
    let missing = b
        .execute_async(
            "const done = arguments[0]; import('/admin/i18n.js').then(({ dictionaries: d }) => \
             done(Object.keys(d.en_us).filter((k) => !(k in d.zh_cn))));",
            vec![],
        )
        .await;
    assert_eq!(missing, json!([]), "en_us keys without zh_cn");
    b.close().await;
}

/// One page load as the Performance API saw it.
#[derive(Debug)]
struct Load {
    /// Navigation start → the UI's `lark-oncall:interactive` mark (first page with its data
    /// shown and its controls live), in ms.
    interactive_ms: f64,
    /// Bytes on the wire (`transferSize`: headers and compressed bodies) of the document, its
    /// files and the API calls made until the mark.
    bytes: u64,
    /// Of which the UI's own files (HTML, CSS, JS).
    asset_bytes: u64,
}

async fn measure(b: &Browser, url: &str) -> Load {
    b.goto(url).await;
    b.wait_for("main h1").await;
    let found = b
        .execute_async(
            "const done = arguments[0];
             const look = () => {
               const mark = performance.getEntriesByName('lark-oncall:interactive')[0];
               if (!mark) return setTimeout(look, 20);
               const nav = performance.getEntriesByType('navigation')[0];
               const files = performance.getEntriesByType('resource').filter((r) => r.startTime <= mark.startTime);
               const asset = (r) => /\\/(kit|admin)\\/.*\\.(js|css)$/.test(new URL(r.name).pathname);
               done({ interactive_ms: mark.startTime,
                      bytes: nav.transferSize + files.reduce((n, r) => n + r.transferSize, 0),
                      asset_bytes: nav.transferSize + files.filter(asset).reduce((n, r) => n + r.transferSize, 0) });
             };
             look();",
            vec![],
        )
        .await;
    Load {
        interactive_ms: found["interactive_ms"].as_f64().unwrap(),
        bytes: found["bytes"].as_u64().unwrap(),
        asset_bytes: found["asset_bytes"].as_u64().unwrap(),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Time to interactive and bytes of a first (empty cache) and a repeat load of the integrations
/// page under chromium's phone emulation, unthrottled and with the CPU slowed 4×. Prints the
/// numbers recorded in BENCHMARKS.md; asserts nothing about them (timings are not tests).
/// `cargo test --release --test admin_ui -- --ignored --nocapture time_to_interactive`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement: run it by hand (BENCHMARKS.md)"]
async fn time_to_interactive_on_a_phone() {
    const RUNS: usize = 7;
    let h = start().await;
    let Some(b) = Browser::start("admin_ui", Viewport::PHONE).await else {
        return;
    };
    log_in(&b, &h).await;
    let url = format!("{}/#/integrations", h.admin);
    b.cdp("Network.enable", json!({})).await;
    for throttle in [1.0, 4.0] {
        b.cdp("Emulation.setCPUThrottlingRate", json!({ "rate": throttle }))
            .await;
        let (mut first, mut repeat) = (Vec::new(), Vec::new());
        for _ in 0..RUNS {
            b.cdp("Network.clearBrowserCache", json!({})).await;
            // A blank page between loads, so each one is a navigation, not a hash change.
            b.goto("about:blank").await;
            first.push(measure(&b, &url).await);
            b.goto("about:blank").await;
            repeat.push(measure(&b, &url).await);
        }
        for (name, loads) in [("first", &first), ("repeat", &repeat)] {
            println!(
                "cpu {throttle}x, {name} load: time to interactive median {:.0} ms (max {:.0} ms), \
                 {} bytes on the wire ({} of them the UI's files), {RUNS} runs",
                median(loads.iter().map(|l| l.interactive_ms).collect()),
                loads.iter().map(|l| l.interactive_ms).fold(0.0, f64::max),
                loads[RUNS / 2].bytes,
                loads[RUNS / 2].asset_bytes,
            );
        }
    }
    b.close().await;
}
