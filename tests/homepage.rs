//! The app homepage inside Lark, end to end over HTTP: the appliance and the simulator on one
//! clock, a person going through Lark's (simulated) authorize page, the callback linking their
//! member (`linked_via: "oauth"`), the session cookie, the pages and their actions, the re-send
//! of a card that could not reach them before, and a clear page for every bad input.

mod common;

use std::collections::HashMap;

use common::inprocess::Harness;
use lark_oncall::sim::{EMAIL_SCOPE, MOBILE_SCOPE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_homepage000001";
const APP_SECRET: &str = "homepage-secret";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

/// The `lko_home` cookie a response sets, if any.
fn session_cookie(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("lko_home="))
        .map(|v| v.split(';').next().unwrap().to_string())
}

fn query_of(url: &str) -> HashMap<String, String> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

struct Browser {
    http: reqwest::Client,
    /// Where the appliance really listens (the public URL is `https://oncall.example.com`).
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(env: &Harness) -> Browser {
        Browser {
            http: no_redirects(),
            base: env.admin.clone(),
            cookie: None,
        }
    }

    /// The public URL's path on the real listener.
    fn local(&self, url: &str) -> String {
        if url.starts_with('/') {
            return format!("{}{url}", self.base);
        }
        url.replace("https://oncall.example.com", &self.base)
    }

    async fn get(&self, url: &str) -> reqwest::Response {
        let mut req = self
            .http
            .get(self.local(url))
            .header("accept-language", "en-US,en");
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let mut body = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            body.append_pair(k, v);
        }
        let mut req = self
            .http
            .post(self.local(url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.finish());
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }

    /// Visits `path` below the homepage without a session: the 302 to Lark's authorize page.
    async fn authorize_url(&self, integration: &str, path: &str) -> String {
        let res = self.get(&format!("/lark/{integration}/app{path}")).await;
        assert_eq!(res.status(), StatusCode::FOUND);
        location(&res)
    }

    /// Picks `open_id` on the simulated authorize page: the callback URL Lark sends back to.
    async fn pick_user(&self, authorize: &str, open_id: &str) -> String {
        let page = self.http.get(authorize).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK);
        let grant = authorize.replace("/authorize?", "/authorize/grant?") + "&open_id=" + open_id;
        let res = self.http.get(&grant).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::FOUND);
        location(&res)
    }

    /// The whole login as `open_id`, starting at `path`; keeps the cookie; returns the page
    /// the callback sent the person back to.
    async fn login(&mut self, integration: &str, path: &str, open_id: &str) -> String {
        // Lark's "switch account" logs in again with the old cookie still in the web view.
        let old = self.cookie.take();
        let authorize = self.authorize_url(integration, path).await;
        self.cookie = old;
        let callback = self.pick_user(&authorize, open_id).await;
        let res = self.get(&callback).await;
        assert_eq!(res.status(), StatusCode::FOUND, "{}", res.text().await.unwrap());
        let cookie = session_cookie(&res).expect("a session cookie");
        let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Secure"),
            "{set}"
        );
        assert!(set.contains(&format!("Path=/lark/{integration}/")), "{set}");
        self.cookie = Some(cookie);
        location(&res)
    }

    async fn page(&self, path: &str) -> (StatusCode, String) {
        let res = self.get(path).await;
        (res.status(), res.text().await.unwrap())
    }
}

/// The hidden form token of a page.
fn form_token(html: &str) -> String {
    let at = html.find("name=\"token\" value=\"").expect("a form token") + 20;
    html[at..].split('"').next().unwrap().to_string()
}

async fn start() -> Harness {
    Harness::builder(APP_ID, APP_SECRET)
        .sim_config(|c| c.apps[0].user_scopes = vec![EMAIL_SCOPE.into(), MOBILE_SCOPE.into()])
        .tune(|s| s.homepage.admin_contact = Some("Ops desk (ops@example.com)".into()))
        .start()
        .await
}

impl Harness {
    async fn member_record(&self, id: &str) -> Value {
        let (status, m) = self
            .api(Method::GET, &format!("/api/v1/members/{id}"), Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{m}");
        m
    }

    async fn incident(&self, id: &str) -> Value {
        let (status, inc) = self
            .api(Method::GET, &format!("/api/v1/incidents/{id}"), Value::Null)
            .await;
        assert_eq!(status, StatusCode::OK, "{inc}");
        inc
    }
}

#[tokio::test]
async fn a_person_logs_in_through_lark_is_linked_and_gets_the_card_they_missed() {
    let env = start().await;
    // Alice's mobile is written without its "+": the look-up by mobile misses her, so her page
    // ends `app_not_linked`; her login (which returns the mobile) links her.
    let alice = env
        .create(
            "/api/v1/members",
            json!({"name": "Alice Chen", "mobile": "14155550101"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let bob = env.member("Bob Smith", "bob@example.com").await;
    env.rule(json!([{"members": [alice]}])).await;
    let inc = env
        .create(
            "/api/v1/incidents",
            json!({"title": "Checkout errors", "severity": "critical"}),
        )
        .await;
    let id = inc["id"].as_str().unwrap().to_string();
    env.app().incidents.tick().await.unwrap();
    let alice_open = env.open_id("alice@example.com");
    env.settle().await;
    assert!(env.cards_to(&alice_open).is_empty());
    assert!(
        env.member_record(&alice).await["lark"]
            .as_object()
            .unwrap()
            .is_empty()
    );

    // First visit: the incident's page, without a session, goes to Lark's authorize page with
    // the integration's client id, Redirect URL and a state.
    let mut browser = Browser::new(&env);
    let authorize = browser
        .authorize_url(&env.integration, &format!("/incidents/{id}"))
        .await;
    let q = query_of(&authorize);
    assert!(authorize.starts_with(&env.sim.base_url()), "{authorize}");
    assert_eq!(q["client_id"], APP_ID);
    assert_eq!(
        q["redirect_uri"],
        format!(
            "https://oncall.example.com/lark/{}/oauth/callback",
            env.integration
        )
    );
    assert!(q["state"].len() > 20);

    let back_to = browser
        .login(&env.integration, &format!("/incidents/{id}"), &alice_open)
        .await;
    assert_eq!(back_to, format!("/lark/{}/app/incidents/{id}", env.integration));
    let member = env.member_record(&alice).await;
    let identity = &member["lark"][&env.integration];
    assert_eq!(identity["linked_via"], "oauth", "{member}");
    assert_eq!(identity["open_id"], alice_open.as_str());

    // The card she missed reaches her now, and the operation log says so.
    env.wait_for("the re-sent card", |h| h.cards_to(&alice_open).len() == 1)
        .await;
    let log = common::oplog::all(&env.http, &env.admin, &env.token, &format!("incident={id}")).await;
    assert!(log.iter().any(|e| e["outcome"] == "resent_after_link"), "{log:?}");

    // Second visit: no authorize step, the page itself.
    let (status, html) = browser.page(&back_to).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Checkout errors") && html.contains("Acknowledge"),
        "{html}"
    );
    assert!(html.contains("Alice Chen"), "responders: {html}");
    let (status, mine) = browser.page(&format!("/lark/{}/app", env.integration)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(mine.contains(&format!("/incidents/{id}")), "{mine}");

    // Acknowledge from the homepage: the card's rules, the card updated, the timeline says so.
    let token = form_token(&html);
    let res = browser
        .post(
            &format!("/lark/{}/app/incidents/{id}/act", env.integration),
            &[("token", &token), ("action", "ack")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, after) = browser.page(&location(&res)).await;
    assert!(after.contains("acknowledged: escalation stops"), "{after}");
    let now = env.incident(&id).await;
    assert_eq!(now["status"], "acknowledged");
    assert_eq!(
        now["timeline"].as_array().unwrap().last().unwrap()["actor"]["via"],
        "homepage"
    );
    env.wait_for("the card acknowledged", |h| {
        h.cards_to(&alice_open)[0].content.contains("Acknowledged")
    })
    .await;
    // Again: nothing changes, and the page says who did it.
    let res = browser
        .post(
            &format!("/lark/{}/app/incidents/{id}/act", env.integration),
            &[("token", &token), ("action", "ack")],
        )
        .await;
    let (_, again) = browser.page(&location(&res)).await;
    assert!(again.contains("already acknowledged by Alice Chen"), "{again}");
    // A post without the page's token is refused.
    let res = browser
        .post(
            &format!("/lark/{}/app/incidents/{id}/act", env.integration),
            &[("action", "resolve")],
        )
        .await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = browser
        .post(
            &format!("/lark/{}/app/incidents/{id}/act", env.integration),
            &[
                ("token", &token),
                ("action", "snooze_custom"),
                ("custom_minutes", "0"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let res = browser
        .post(
            &format!("/lark/{}/app/incidents/{id}/act", env.integration),
            &[
                ("token", &token),
                ("action", "note"),
                ("text", "rolled back the deploy"),
            ],
        )
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        env.incident(&id).await["timeline"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["detail"],
        "rolled back the deploy"
    );

    // All open, filtered; a bad filter is a 400 page.
    let (status, open) = browser
        .page(&format!("/lark/{}/app/open?severity=critical", env.integration))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(open.contains("Checkout errors"));
    let (status, _) = browser
        .page(&format!("/lark/{}/app/open?severity=info", env.integration))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, bad) = browser
        .page(&format!("/lark/{}/app/open?severity=loud", env.integration))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");

    // Who am I, in Chinese on request.
    let (status, me) = browser
        .page(&format!("/lark/{}/app/me?lang=zh_cn", env.integration))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        me.contains("我是谁") && me.contains("oauth") && me.contains(&alice_open),
        "{me}"
    );

    // The admin sees the session and can revoke it: the next visit goes to Lark again.
    let (status, sessions) = env
        .api(Method::GET, "/api/v1/homepage/sessions", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    let items = sessions["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(!sessions.to_string().contains("secret"), "{sessions}");
    let session_id = items[0]["id"].as_str().unwrap();
    let (status, _) = env
        .api(
            Method::DELETE,
            &format!("/api/v1/homepage/sessions/{session_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let res = browser.get(&format!("/lark/{}/app", env.integration)).await;
    assert_eq!(res.status(), StatusCode::FOUND);

    // Switch account: Bob logs in in the same browser; his member is linked by email.
    browser.login(&env.integration, "", &alice_open).await;
    let bob_open = env.open_id("bob@example.com");
    browser.login(&env.integration, "/me", &bob_open).await;
    assert_eq!(
        env.member_record(&bob).await["lark"][&env.integration]["linked_via"],
        "oauth"
    );
    let (_, me) = browser.page(&format!("/lark/{}/app/me", env.integration)).await;
    assert!(me.contains("Bob Smith"), "{me}");
    let (_, sessions) = env
        .api(Method::GET, "/api/v1/homepage/sessions", Value::Null)
        .await;
    assert_eq!(
        sessions["items"].as_array().unwrap().len(),
        1,
        "the old session ended: {sessions}"
    );
    // Logging out ends the session.
    let token = form_token(&me);
    let res = browser
        .post(
            &format!("/lark/{}/app/logout", env.integration),
            &[("token", &token)],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = browser.get(&format!("/lark/{}/app/me", env.integration)).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    env.stop().await;
}

#[tokio::test]
async fn every_bad_login_gets_its_page_and_a_4xx() {
    let env = start().await;
    env.member("Alice Chen", "alice@example.com").await;
    let alice_open = env.open_id("alice@example.com");
    let carol_open = env.open_id("carol@example.com");
    let browser = Browser::new(&env);
    let callback = format!("/lark/{}/oauth/callback", env.integration);
    let expect = async |url: &str, status: StatusCode, words: &str| {
        let res = browser.get(url).await;
        assert_eq!(res.status(), status, "{url}");
        assert!(session_cookie(&res).is_none());
        let html = res.text().await.unwrap();
        assert!(html.contains(words), "{url}: {html}");
    };

    // A forged state.
    expect(
        &format!("{callback}?code=abc&state=forged.state"),
        StatusCode::BAD_REQUEST,
        "not valid",
    )
    .await;
    // Nothing at all.
    expect(&callback, StatusCode::BAD_REQUEST, "incomplete").await;
    // Lark's authorize page answered access_denied.
    let authorize = browser.authorize_url(&env.integration, "").await;
    let deny = authorize.replace("/authorize?", "/authorize/deny?");
    let res = browser.http.get(&deny).send().await.unwrap();
    let denied = location(&res);
    assert_eq!(query_of(&denied)["error"], "access_denied");
    expect(&denied, StatusCode::FORBIDDEN, "did not allow").await;

    // A code Lark rejects (with a good state).
    let authorize = browser.authorize_url(&env.integration, "").await;
    let state = query_of(&authorize)["state"].clone();
    expect(
        &format!("{callback}?code=not-a-code&state={}", urlencode(&state)),
        StatusCode::BAD_REQUEST,
        "Lark refused this login",
    )
    .await;
    // The same state again: replayed.
    let good = browser
        .pick_user(&browser.authorize_url(&env.integration, "").await, &alice_open)
        .await;
    let res = browser.get(&good).await;
    assert_eq!(res.status(), StatusCode::FOUND);
    expect(&good, StatusCode::BAD_REQUEST, "already used").await;
    // A code used twice, with a fresh state.
    let used_code = query_of(&browser.local(&good))["code"].clone();
    let fresh = query_of(&browser.authorize_url(&env.integration, "").await)["state"].clone();
    expect(
        &format!("{callback}?code={used_code}&state={}", urlencode(&fresh)),
        StatusCode::BAD_REQUEST,
        "Lark refused this login",
    )
    .await;
    // An expired state (more than 10 minutes at Lark's page).
    let slow = browser
        .pick_user(&browser.authorize_url(&env.integration, "").await, &alice_open)
        .await;
    env.clock.advance(chrono::Duration::minutes(11));
    expect(&slow, StatusCode::BAD_REQUEST, "took too long").await;
    // A state signed for another integration is not good here.
    let other = browser
        .pick_user(&browser.authorize_url(&env.integration, "").await, &alice_open)
        .await;
    let moved = other.replace(&format!("/lark/{}/", env.integration), "/lark/int_nothere/");
    expect(&moved, StatusCode::NOT_FOUND, "no configured Lark app").await;
    // An unknown integration.
    expect(
        "/lark/int_nothere/app",
        StatusCode::NOT_FOUND,
        "no configured Lark app",
    )
    .await;
    // Somebody no member matches: told who they are and whom to ask; no member is created.
    let carol = browser
        .pick_user(&browser.authorize_url(&env.integration, "").await, &carol_open)
        .await;
    expect(&carol, StatusCode::FORBIDDEN, "Ops desk (ops@example.com)").await;
    expect(
        &browser
            .pick_user(&browser.authorize_url(&env.integration, "").await, &carol_open)
            .await,
        StatusCode::FORBIDDEN,
        "Carol Liu",
    )
    .await;
    let (_, members) = env.api(Method::GET, "/api/v1/members", Value::Null).await;
    assert_eq!(members["items"].as_array().unwrap().len(), 1);
    // Someone outside the app's availability (Lark's 20010).
    let chen = env
        .sim
        .world()
        .users
        .iter()
        .find(|u| !u.app_visible)
        .unwrap()
        .open_id
        .clone();
    expect(
        &browser
            .pick_user(&browser.authorize_url(&env.integration, "").await, &chen)
            .await,
        StatusCode::FORBIDDEN,
        "availability",
    )
    .await;
    // A forged session cookie is no session.
    let mut forged = Browser::new(&env);
    forged.cookie = Some("lko_home=abc.def".into());
    assert_eq!(
        forged
            .get(&format!("/lark/{}/app", env.integration))
            .await
            .status(),
        StatusCode::FOUND
    );
    // The log names the integration and the reason.
    env.stop().await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn the_stylesheet_is_cached_with_an_etag_and_pages_in_chinese_by_the_browser_language() {
    let env = start().await;
    let http = no_redirects();
    let res = http
        .get(format!("{}/lark/assets/home/home.css", env.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_string();
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let again = http
        .get(format!("{}/lark/assets/home/home.css", env.admin))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    let res = http
        .get(format!("{}/lark/int_nothere/app", env.admin))
        .header("accept-language", "zh-CN,zh;q=0.9")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(res.text().await.unwrap().contains("没有这个应用"));
    env.stop().await;
}

#[tokio::test]
async fn the_on_call_page_shows_who_is_on_call_now_and_my_shifts() {
    let env = start().await;
    // Monday 14 December 2026, 10:00 in Shanghai.
    let at = |text: &str| {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    env.clock.set(at("2026-12-14T02:00:00Z"));
    let alice = env.member("Alice Chen", "alice@example.com").await;
    let bob = env.member("Bob <Smith>", "bob@example.com").await;
    let ops = env
        .create(
            "/api/v1/schedules",
            json!({"name": "ops", "time_zone": "Asia/Shanghai", "layers": [
                {"name": "primary", "participants": [&alice, &bob], "rotation": {"unit": "day"},
                 "first_handoff": "2026-12-14T09:00"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Bob covers 11:00–12:00 of Alice's day.
    let (status, body) = env
        .api(
            Method::POST,
            &format!("/api/v1/schedules/{ops}/overrides"),
            json!({"start": "2026-12-14T03:00:00Z", "end": "2026-12-14T04:00:00Z", "member_id": bob}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    env.create(
        "/api/v1/schedules",
        json!({"name": "weekend desk", "time_zone": "UTC", "layers": [
            {"name": "weekends", "participants": [&bob], "rotation": {"unit": "week"},
             "first_handoff": "2026-12-07T00:00",
             "restrictions": [{"days": [5, 6], "start": "09:00", "end": "18:00"}]}]}),
    )
    .await;

    let mut browser = Browser::new(&env);
    let alice_open = env.open_id("alice@example.com");
    let back_to = browser.login(&env.integration, "/oncall", &alice_open).await;
    let path = format!("/lark/{}/app/oncall", env.integration);
    assert_eq!(back_to, path);
    let (status, html) = browser.page(&path).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(&format!("<a href=\"{path}\" aria-current=\"page\">On call</a>")),
        "{html}"
    );
    let (now_part, mine_part) = html.split_at(html.find("My shifts").expect("my shifts"));
    assert!(now_part.contains("Who is on call now"), "{html}");
    let ops_row = now_part
        .split("<li")
        .find(|li| li.contains("<strong>ops</strong>"))
        .expect("a row for ops");
    assert!(ops_row.contains("Alice Chen"), "{ops_row}");
    assert!(
        ops_row.contains("until 2026-12-14 11:00 CST"),
        "the override ends her turn: {ops_row}"
    );
    assert!(
        ops_row.contains("Next Bob &lt;Smith&gt; · 2026-12-14 11:00 CST"),
        "names are escaped: {ops_row}"
    );
    assert!(ops_row.contains(">You</span>"), "Alice is on call: {ops_row}");
    let weekend_row = now_part
        .split("<li")
        .find(|li| li.contains("<strong>weekend desk</strong>"))
        .expect("a row for the weekend desk");
    assert!(weekend_row.contains(">Nobody</span>"), "{weekend_row}");
    assert!(
        weekend_row.contains("Next Bob &lt;Smith&gt; · 2026-12-19 09:00 UTC"),
        "{weekend_row}"
    );
    assert!(!weekend_row.contains(">You</span>"));

    let shifts: Vec<&str> = mine_part.split("<li class=\"shift\">").skip(1).collect();
    assert!(
        shifts[0].contains(">Now</span> <span>until 2026-12-14 11:00 CST</span>"),
        "{mine_part}"
    );
    assert!(
        shifts[1].contains("12-14 12:00 – 12-15 09:00 CST"),
        "after Bob's override: {mine_part}"
    );
    assert!(shifts[2].contains("12-16 09:00 – 12-17 09:00 CST"), "{mine_part}");
    assert!(
        !mine_part.contains("weekend desk"),
        "Alice is not on the weekend desk"
    );

    let (_, zh) = browser.page(&format!("{path}?lang=zh_cn")).await;
    assert!(zh.contains("当前值班") && zh.contains("我的班次"), "{zh}");
    assert!(zh.contains("至 2026-12-14 11:00 CST"), "{zh}");
    env.stop().await;
}

/// The value of `name` in the first form of `html` whose action ends with `action` and that
/// holds `marker`.
fn form_field(html: &str, action: &str, marker: &str, name: &str) -> String {
    let form = html
        .split("<form ")
        .find(|f| f.contains(&format!("{action}\"")) && f.contains(marker))
        .unwrap_or_else(|| panic!("no form for {action} with {marker}: {html}"));
    let at = form
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {form}"))
        + name.len()
        + 15;
    form[at..].split('"').next().unwrap().to_string()
}

impl Browser {
    /// Submits the cover form for `owner`'s shift on the on-call page; returns the page it
    /// leads back to.
    async fn cover(&self, integration: &str, owner: &str) -> String {
        let page = format!("/lark/{integration}/app/oncall");
        let (_, html) = self.page(&page).await;
        let marker = format!("name=\"owner\" value=\"{owner}\"");
        let field = |name: &str| form_field(&html, "/oncall/cover", &marker, name);
        let (token, schedule, start, end) = (field("token"), field("schedule"), field("start"), field("end"));
        let res = self
            .post(
                &format!("{page}/cover"),
                &[
                    ("token", &token),
                    ("schedule", &schedule),
                    ("owner", owner),
                    ("start", &start),
                    ("end", &end),
                ],
            )
            .await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        self.page(&location(&res)).await.1
    }
}

#[tokio::test]
async fn covering_a_shift_waits_for_its_owner_unless_an_admin_takes_it() {
    let env = start().await;
    // Monday 14 December 2026, 10:00 in Shanghai: Alice is on call until 09:00 tomorrow.
    env.clock.set(
        chrono::DateTime::parse_from_rfc3339("2026-12-14T02:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc),
    );
    let alice = env.member("Alice Chen", "alice@example.com").await;
    let bob = env.member("Bob Smith", "bob@example.com").await;
    let carol = env.member("Carol Admin", "carol@example.com").await;
    let (status, body) = env
        .api(
            Method::POST,
            &format!("/api/v1/members/link?integration_id={}", env.integration),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/members/{carol}"),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ops = env
        .create(
            "/api/v1/schedules",
            json!({"name": "ops", "time_zone": "Asia/Shanghai", "layers": [
                {"name": "primary", "participants": [&alice, &bob], "rotation": {"unit": "day"},
                 "first_handoff": "2026-12-14T09:00"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let on_call = || async {
        let (status, body) = env
            .api(
                Method::GET,
                &format!("/api/v1/schedules/{ops}/on-call"),
                Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["members"][0]["id"].as_str().unwrap_or("").to_string()
    };

    // Bob asks to cover Alice's shift: nothing changes until she answers.
    let mut bob_browser = Browser::new(&env);
    bob_browser
        .login(&env.integration, "/oncall", &env.open_id("bob@example.com"))
        .await;
    let page = bob_browser.cover(&env.integration, &alice).await;
    assert!(
        page.contains("Asked: the shift is yours once they accept"),
        "{page}"
    );
    assert!(
        page.contains("Waiting for an answer") && page.contains("Shift of Alice Chen"),
        "{page}"
    );
    assert_eq!(on_call().await, alice);
    let alice_open = env.open_id("alice@example.com");
    env.wait_for("Alice told of the request", |h| {
        h.cards_to(&alice_open).len() == 1
    })
    .await;
    let told = &env.cards_to(&alice_open)[0].content;
    assert!(
        told.contains(
            "Bob Smith asks to cover your ops shift from 2026-12-14 10:00 CST to 2026-12-15 09:00 CST."
        ),
        "{told}"
    );
    assert!(
        told.contains(&format!(
            "https://oncall.example.com/lark/{}/app/oncall",
            env.integration
        )),
        "{told}"
    );

    // Alice accepts on her page: Bob is on call for the rest of her shift.
    let mut alice_browser = Browser::new(&env);
    alice_browser
        .login(&env.integration, "/oncall", &env.open_id("alice@example.com"))
        .await;
    let (_, html) = alice_browser
        .page(&format!("/lark/{}/app/oncall", env.integration))
        .await;
    assert!(
        html.contains("Asked to cover your shifts") && html.contains("By Bob Smith"),
        "{html}"
    );
    let at = html.find("/oncall/requests/").expect("a request form") + "/oncall/requests/".len();
    let request = html[at..].split('"').next().unwrap().to_string();
    let token = form_token(&html);
    let answer = format!("/lark/{}/app/oncall/requests/{request}", env.integration);
    let res = alice_browser
        .post(&answer, &[("token", &token), ("action", "accept")])
        .await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let (_, page) = alice_browser.page(&location(&res)).await;
    assert!(page.contains("Accepted: they cover your shift."), "{page}");
    assert!(!page.contains("Asked to cover your shifts"), "answered: {page}");
    assert_eq!(on_call().await, bob);
    let (_, schedule) = env
        .api(Method::GET, &format!("/api/v1/schedules/{ops}"), Value::Null)
        .await;
    assert_eq!(schedule["overrides"][0]["member_id"], bob.as_str());
    assert_eq!(schedule["overrides"][0]["note"], "covering Alice Chen");
    assert_eq!(schedule["overrides"][0]["end"], "2026-12-15T01:00:00Z");
    let res = alice_browser
        .post(&answer, &[("token", &token), ("action", "accept")])
        .await;
    let (_, page) = alice_browser.page(&location(&res)).await;
    assert!(page.contains("already answered"), "{page}");

    // Carol is an admin: she takes Bob's cover at once.
    let mut carol_browser = Browser::new(&env);
    carol_browser
        .login(&env.integration, "/oncall", &env.open_id("carol@example.com"))
        .await;
    let page = carol_browser.cover(&env.integration, &bob).await;
    assert!(page.contains("Covered: the shift is yours now."), "{page}");
    assert_eq!(on_call().await, carol);

    // A forged shift (Alice is not on call in it any more) is refused.
    let (_, html) = bob_browser
        .page(&format!("/lark/{}/app/oncall", env.integration))
        .await;
    let res = bob_browser
        .post(
            &format!("/lark/{}/app/oncall/cover", env.integration),
            &[
                ("token", &form_token(&html)),
                ("schedule", &ops),
                ("owner", &alice),
                ("start", "2026-12-14T02:00:00Z"),
                ("end", "2026-12-15T01:00:00Z"),
            ],
        )
        .await;
    let (_, page) = bob_browser.page(&location(&res)).await;
    assert!(page.contains("That time is no longer their shift."), "{page}");
    env.stop().await;
}
