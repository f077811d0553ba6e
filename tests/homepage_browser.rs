//! The homepage in headless chromium at a phone's size: log in through the simulator's
//! authorize page as a chosen person, open an incident from *My incidents*, press Acknowledge,
//! and see it acknowledged on the page and on every card in the simulator, then who is on call.
//! Screenshots of each page go to `target/screenshots/homepage/`, and each page is checked with
//! axe-core (no serious or critical violation).

mod common;

use common::accessibility::assert_accessible;
use common::browser::{Browser, Viewport};
use common::inprocess::Harness;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_homepagebrowser1";
const APP_SECRET: &str = "homepage-browser-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_phone_logs_in_opens_an_incident_and_acknowledges_it() {
    // The browser follows Lark's redirect to the public URL: make it the real listener.
    let port = free_port();
    let env = Harness::builder(APP_ID, APP_SECRET)
        .tune(move |s| {
            s.listen = format!("127.0.0.1:{port}").parse().unwrap();
            s.public_url = format!("http://127.0.0.1:{port}").parse().unwrap();
        })
        .start()
        .await;
    let Some(browser) = Browser::start("homepage", Viewport::PHONE).await else {
        return;
    };
    let alice = env.member("Alice Chen", "alice@example.com").await;
    let (status, report) = env
        .api(
            Method::POST,
            &format!("/api/v1/members/link?integration_id={}", env.integration),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    env.rule(json!([{"members": [alice], "chats": [env.chat()]}]))
        .await;
    let bob = env.member("Bob Smith", "bob@example.com").await;
    env.create(
        "/api/v1/schedules",
        json!({"name": "payments", "time_zone": "Asia/Shanghai", "layers": [
            {"name": "primary", "participants": [&alice, &bob], "rotation": {"unit": "day"},
             "first_handoff": "2026-01-01T09:00"}]}),
    )
    .await;
    let inc = env
        .create(
            "/api/v1/incidents",
            json!({"title": "支付回调超时 Payment callbacks time out", "severity": "critical",
                   "description": "p99 of /callback above 5 s since 10:02.", "labels": {"service": "payments"}}),
        )
        .await;
    let id = inc["id"].as_str().unwrap().to_string();
    env.app().incidents.tick().await.unwrap();
    let (alice_open, chat) = (env.open_id("alice@example.com"), env.chat());
    env.wait_for("both cards", |h| {
        h.cards_to(&alice_open).len() == 1 && h.cards_to(&chat).len() == 1
    })
    .await;
    env.wait_for("the cards recorded", |h| {
        h.app().incidents.cards(&id).unwrap().len() == 2
    })
    .await;

    let base = format!("http://127.0.0.1:{port}/lark/{}/app", env.integration);
    browser.goto(&base).await;
    // Lark's authorize page (simulated): pick Alice.
    browser.wait_for("a.user").await;
    browser.screenshot("1-authorize").await;
    browser
        .click(&format!("a.user[href*=\"open_id={alice_open}\"]"))
        .await;
    browser.wait_for_text("h1", "My incidents").await;
    browser.screenshot("2-my-incidents").await;
    assert_accessible(&browser, "2-my-incidents").await;
    browser.click("li.incident a").await;
    browser.wait_for_text("h1", "Payment callbacks").await;
    browser.screenshot("3-incident").await;
    assert_accessible(&browser, "3-incident").await;
    browser.click("button[value=ack]").await;
    browser.wait_for_text("#status", "Acknowledged").await;
    browser.wait_for_text(".flash", "acknowledged").await;
    browser.screenshot("4-acknowledged").await;
    assert_accessible(&browser, "4-acknowledged").await;
    assert_eq!(
        env.api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
            .await
            .1["status"],
        "acknowledged"
    );
    env.wait_for("every card acknowledged", |h| {
        [&alice_open, &chat].iter().all(|r| {
            h.cards_to(r)
                .iter()
                .all(|m| m.content.contains("Acknowledged") && m.content.contains("Alice Chen"))
        })
    })
    .await;

    browser.goto(&format!("{base}/open")).await;
    browser.wait_for_text("h1", "All open").await;
    browser.screenshot("5-all-open").await;
    assert_accessible(&browser, "5-all-open").await;
    browser.goto(&format!("{base}/me")).await;
    browser.wait_for_text("#linked-via", "oauth").await;
    browser.screenshot("6-who-am-i").await;
    assert_accessible(&browser, "6-who-am-i").await;
    browser.goto(&format!("{base}/oncall")).await;
    browser.wait_for_text("h1", "On call").await;
    browser.wait_for_text("li.oncall-now", "payments").await;
    browser.screenshot("8-on-call").await;
    assert_accessible(&browser, "8-on-call").await;
    browser.goto(&format!("{base}/oncall?lang=zh_cn")).await;
    browser.wait_for_text("h1", "值班").await;
    browser.screenshot("9-on-call-zh").await;
    assert_accessible(&browser, "9-on-call-zh").await;
    browser.goto(&format!("{base}/incidents/{id}?lang=zh_cn")).await;
    browser.wait_for_text("#status", "已认领").await;
    browser.screenshot("7-incident-zh").await;
    assert_accessible(&browser, "7-incident-zh").await;
    browser.close().await;
    env.stop().await;
}
