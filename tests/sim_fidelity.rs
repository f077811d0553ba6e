//! The Lark simulator against Lark's rules, over real HTTP: tokens, frequency limits, quota,
//! message rules, card updates, chats, users, OAuth, faults, and signed (encrypted) delivery with
//! redelivery. Time-based rules run on a manual clock, so nothing here waits for wall time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lark_oncall::clock::ManualClock;
use lark_oncall::lark::crypto::{Cipher, card_v1_signature, event_signature};
use lark_oncall::sim::{
    CardCallbackVersion, FaultKind, Faults, Outage, RedeliverySchedule, SimApp, SimConfig, Simulator, World,
};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const APP: &str = "cli_sim_test_app";
const SECRET: &str = "app-secret-123";
const VTOKEN: &str = "verification-token-1";
const ENCRYPT_KEY: &str = "encrypt-key-xyz";

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 10, 4, 0, 0).unwrap()
}

fn config(clock: &Arc<ManualClock>) -> SimConfig {
    let mut c = SimConfig::new(vec![SimApp::new(APP, SECRET, VTOKEN)]);
    c.clock = clock.clone();
    c
}

struct Api {
    sim: Simulator,
    http: reqwest::Client,
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Api {
    async fn start(config: SimConfig) -> Api {
        let sim = Simulator::start(config).await.expect("simulator starts");
        Api {
            sim,
            http: reqwest::Client::new(),
        }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
        let url = format!("{}{path}", self.sim.base_url());
        let mut req = self.http.request(method.parse().unwrap(), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("simulator answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn token_for(&self, app_id: &str, secret: &str) -> String {
        let a = self
            .call(
                "POST",
                "/open-apis/auth/v3/tenant_access_token/internal",
                None,
                Some(json!({"app_id": app_id, "app_secret": secret})),
            )
            .await;
        assert_eq!(a.body["code"], 0, "{:?}", a.body);
        a.body["tenant_access_token"].as_str().unwrap().to_string()
    }

    async fn token(&self) -> String {
        self.token_for(APP, SECRET).await
    }

    async fn send(
        &self,
        token: &str,
        id_type: &str,
        receive_id: &str,
        msg_type: &str,
        content: Value,
    ) -> Answer {
        self.call(
            "POST",
            &format!("/open-apis/im/v1/messages?receive_id_type={id_type}"),
            Some(token),
            Some(json!({"receive_id": receive_id, "msg_type": msg_type, "content": content.to_string()})),
        )
        .await
    }

    async fn send_text(&self, token: &str, chat_id: &str) -> Answer {
        self.send(token, "chat_id", chat_id, "text", json!({"text": "hello"}))
            .await
    }
}

fn shared_card(title: &str) -> Value {
    json!({"config": {"update_multi": true}, "header": {"title": {"tag": "plain_text", "content": title},
           "template": "red"}, "elements": [{"tag": "markdown", "content": "**P1** database down"}]})
}

#[tokio::test]
async fn tokens_follow_the_30_minute_rule_and_expire_by_the_clock() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let api = Api::start(config(&clock)).await;
    let chat = api.sim.world().chats[0].chat_id.clone();

    let t1 = api.token().await;
    assert!(t1.starts_with("t-"));
    clock.advance(chrono::Duration::minutes(89));
    let again = api
        .call(
            "POST",
            "/open-apis/auth/v3/tenant_access_token/internal",
            None,
            Some(json!({"app_id": APP, "app_secret": SECRET})),
        )
        .await;
    assert_eq!(
        again.body["tenant_access_token"],
        t1.as_str(),
        "31 min left: same token"
    );
    assert_eq!(again.body["expire"], 31 * 60);
    assert!(again.body.get("data").is_none(), "token answers are top-level");

    clock.advance(chrono::Duration::minutes(2));
    let t2 = api.token().await;
    assert_ne!(t2, t1, "29 min left: a new token");
    assert_eq!(
        api.send_text(&t1, &chat).await.body["code"],
        0,
        "the old token still works"
    );

    clock.advance(chrono::Duration::minutes(30));
    let expired = api.send_text(&t1, &chat).await;
    assert_eq!(
        (expired.status, expired.body["code"].as_i64()),
        (400, Some(99991663))
    );
    assert_eq!(api.send_text(&t2, &chat).await.body["code"], 0);

    api.sim.expire_tokens();
    assert_eq!(api.send_text(&t2, &chat).await.body["code"], 99991663);

    let missing = api.call("GET", "/open-apis/im/v1/chats", None, None).await;
    assert_eq!(
        (missing.status, missing.body["code"].as_i64()),
        (400, Some(99991661))
    );

    let wrong = api
        .call(
            "POST",
            "/open-apis/auth/v3/tenant_access_token/internal",
            None,
            Some(json!({"app_id": APP, "app_secret": "nope"})),
        )
        .await;
    assert_eq!((wrong.status, wrong.body["code"].as_i64()), (400, Some(10014)));
    assert_eq!(wrong.body["msg"], "app secret invalid");
    let unknown = api
        .call(
            "POST",
            "/open-apis/auth/v3/tenant_access_token/internal",
            None,
            Some(json!({"app_id": "cli_unknown0000", "app_secret": "nope"})),
        )
        .await;
    assert_eq!(
        (unknown.status, unknown.body["code"].as_i64()),
        (400, Some(99991543))
    );

    let app_token = api
        .call(
            "POST",
            "/open-apis/auth/v3/app_access_token/internal",
            None,
            Some(json!({"app_id": APP, "app_secret": SECRET})),
        )
        .await;
    assert!(
        app_token.body["app_access_token"]
            .as_str()
            .unwrap()
            .starts_with("a-")
    );
    assert!(
        app_token.body["tenant_access_token"]
            .as_str()
            .unwrap()
            .starts_with("t-")
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn the_51st_call_of_one_api_in_a_second_is_429_with_the_headers() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.monthly_quota = None;
    let api = Api::start(cfg).await;
    let token = api.token().await;
    for i in 0..50 {
        let a = api
            .call("GET", "/open-apis/im/v1/chats", Some(&token), None)
            .await;
        assert_eq!(a.status, 200, "call {i}");
    }
    let refused = api
        .call("GET", "/open-apis/im/v1/chats", Some(&token), None)
        .await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["code"], 99991400);
    assert_eq!(refused.body["msg"], "request trigger frequency limit");
    assert_eq!(refused.headers["x-ogw-ratelimit-limit"], "50");
    assert_eq!(refused.headers["x-ogw-ratelimit-reset"], "1");
    // Another API has its own window.
    let other = api
        .call(
            "POST",
            "/open-apis/contact/v3/users/batch_get_id",
            Some(&token),
            Some(json!({"emails": []})),
        )
        .await;
    assert_eq!(other.status, 200);
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        api.call("GET", "/open-apis/im/v1/chats", Some(&token), None)
            .await
            .status,
        200
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn a_chat_takes_5_messages_a_second_shared_by_every_bot_in_it() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.apps.push(SimApp::new("cli_other_bot", "other-secret", "vt2"));
    cfg.world.chats[0].apps.push("cli_other_bot".to_string());
    let chat = cfg.world.chats[0].chat_id.clone();
    let alice = cfg.world.users[3].open_id.clone();
    let api = Api::start(cfg).await;
    let (ours, theirs) = (
        api.token().await,
        api.token_for("cli_other_bot", "other-secret").await,
    );
    for _ in 0..3 {
        assert_eq!(api.send_text(&ours, &chat).await.body["code"], 0);
    }
    for _ in 0..2 {
        assert_eq!(api.send_text(&theirs, &chat).await.body["code"], 0);
    }
    let sixth = api.send_text(&theirs, &chat).await;
    assert_eq!((sixth.status, sixth.body["code"].as_i64()), (400, Some(230020)));
    assert_eq!(api.sim.messages().len(), 5, "a refused send creates nothing");
    // One user: 5 per second per app.
    for _ in 0..5 {
        let a = api
            .send(&ours, "open_id", &alice, "text", json!({"text": "hi"}))
            .await;
        assert_eq!(a.body["code"], 0);
    }
    assert_eq!(
        api.send(&ours, "open_id", &alice, "text", json!({"text": "hi"}))
            .await
            .body["code"],
        230020
    );
    clock.advance(chrono::Duration::seconds(1));
    assert_eq!(api.send_text(&theirs, &chat).await.body["code"], 0);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn the_1001st_send_in_a_minute_is_refused() {
    // 20 batches of 50 sends, the manual clock moved 1 s between batches: the minute window
    // fills without a minute of wall time, and no batch trips the 50/s or 5/s windows.
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.world = World::generated_for(300, 10, APP);
    cfg.monthly_quota = None;
    let users: Vec<String> = cfg.world.users.iter().map(|u| u.open_id.clone()).collect();
    let api = Api::start(cfg).await;
    let token = api.token().await;
    for batch in 0..20 {
        let sends = (0..50).map(|i| {
            let user = &users[(batch * 50 + i) % 300];
            api.send(&token, "open_id", user, "text", json!({"text": "page"}))
        });
        for a in futures_util::future::join_all(sends).await {
            assert_eq!(a.body["code"], 0, "batch {batch}");
        }
        clock.advance(chrono::Duration::seconds(1));
    }
    let refused = api
        .send(
            &token,
            "open_id",
            &users[0],
            "text",
            json!({"text": "one too many"}),
        )
        .await;
    assert_eq!(
        (refused.status, refused.body["code"].as_i64()),
        (429, Some(99991400))
    );
    assert_eq!(refused.headers["x-ogw-ratelimit-limit"], "1000");
    assert_eq!(refused.headers["x-ogw-ratelimit-reset"], "40");
    assert_eq!(api.sim.messages().len(), 1000);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn the_monthly_quota_runs_out_and_resets_on_the_first_in_shanghai() {
    // 2026-03-31 15:00 UTC is 23:00 in Shanghai.
    let clock = Arc::new(ManualClock::at(
        Utc.with_ymd_and_hms(2026, 3, 31, 15, 0, 0).unwrap(),
    ));
    let mut cfg = config(&clock);
    cfg.monthly_quota = Some(4);
    let api = Api::start(cfg).await;
    let token = api.token().await; // 1
    for _ in 0..3 {
        assert_eq!(
            api.call("GET", "/open-apis/im/v1/chats", Some(&token), None)
                .await
                .status,
            200
        );
    }
    let over = api
        .call("GET", "/open-apis/im/v1/chats", Some(&token), None)
        .await;
    assert_eq!((over.status, over.body["code"].as_i64()), (429, Some(99991403)));
    assert_eq!(api.sim.quota_used(), 4);
    clock.advance(chrono::Duration::minutes(59));
    assert_eq!(
        api.call("GET", "/open-apis/im/v1/chats", Some(&token), None)
            .await
            .body["code"],
        99991403
    );
    clock.advance(chrono::Duration::minutes(1)); // April 1st, 00:00 in Shanghai
    assert_eq!(
        api.call("GET", "/open-apis/im/v1/chats", Some(&token), None)
            .await
            .status,
        200
    );
    assert_eq!(api.sim.quota_used(), 1);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn message_rules_receivers_content_and_uuid() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let cfg = config(&clock);
    let world = cfg.world.clone();
    let api = Api::start(cfg).await;
    let token = api.token().await;
    let (sre, random) = (&world.chats[0].chat_id, &world.chats[2].chat_id);

    let not_in = api.send_text(&token, random).await;
    assert_eq!((not_in.status, not_in.body["code"].as_i64()), (400, Some(230002)));
    let invisible = world.users.iter().find(|u| !u.app_visible).unwrap();
    assert_eq!(
        api.send(
            &token,
            "open_id",
            &invisible.open_id,
            "text",
            json!({"text": "x"})
        )
        .await
        .body["code"],
        230013
    );
    assert_eq!(
        api.send(&token, "open_id", "ou_nobody", "text", json!({"text": "x"}))
            .await
            .body["code"],
        230013
    );
    let by_email = api
        .send(
            &token,
            "email",
            &world.users[1].email,
            "text",
            json!({"text": "x"}),
        )
        .await;
    assert_eq!(by_email.body["code"], 0);

    let object_content = api
        .call(
            "POST",
            "/open-apis/im/v1/messages?receive_id_type=chat_id",
            Some(&token),
            Some(json!({"receive_id": sre, "msg_type": "text", "content": {"text": "not a string"}})),
        )
        .await;
    assert_eq!(
        (object_content.status, object_content.body["code"].as_i64()),
        (400, Some(230001))
    );
    let big = json!({"config": {"update_multi": true}, "elements": [{"tag": "markdown", "content": "x".repeat(31 * 1024)}]});
    assert_eq!(
        api.send(&token, "chat_id", sre, "interactive", big).await.body["code"],
        230025
    );

    let with_uuid = |uuid: &str| {
        json!({"receive_id": sre, "msg_type": "text",
                                        "content": "{\"text\":\"once\"}", "uuid": uuid})
    };
    let path = "/open-apis/im/v1/messages?receive_id_type=chat_id";
    let first = api
        .call("POST", path, Some(&token), Some(with_uuid("alert-42")))
        .await;
    let second = api
        .call("POST", path, Some(&token), Some(with_uuid("alert-42")))
        .await;
    assert_eq!(
        first.body["data"]["message_id"],
        second.body["data"]["message_id"]
    );
    let once = api
        .sim
        .messages()
        .iter()
        .filter(|m| m.uuid.as_deref() == Some("alert-42"))
        .count();
    assert_eq!(once, 1);
    clock.advance(chrono::Duration::minutes(61));
    let later = api
        .call("POST", path, Some(&token), Some(with_uuid("alert-42")))
        .await;
    assert_ne!(later.body["data"]["message_id"], first.body["data"]["message_id"]);

    let reply = api
        .call(
            "POST",
            &format!(
                "/open-apis/im/v1/messages/{}/reply",
                first.body["data"]["message_id"].as_str().unwrap()
            ),
            Some(&token),
            Some(json!({"msg_type": "text", "content": "{\"text\":\"ack\"}"})),
        )
        .await;
    assert_eq!(reply.body["data"]["chat_id"], sre.as_str());
    assert_eq!(reply.body["data"]["parent_id"], first.body["data"]["message_id"]);

    api.sim.disband_chat(sre).await.unwrap();
    let gone = api.send_text(&token, sre).await;
    assert_eq!((gone.status, gone.body["code"].as_i64()), (400, Some(232009)));
    api.sim.shutdown().await;
}

#[tokio::test]
async fn card_updates_need_a_shared_card_of_ours_within_14_days() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.apps.push(SimApp::new("cli_other_bot", "other-secret", "vt2"));
    let chat = cfg.world.chats[0].chat_id.clone();
    let api = Api::start(cfg).await;
    let token = api.token().await;
    let patch = |id: &str, card: Value| {
        let path = format!("/open-apis/im/v1/messages/{id}");
        let token = token.clone();
        let api = &api;
        async move {
            api.call(
                "PATCH",
                &path,
                Some(&token),
                Some(json!({"content": card.to_string()})),
            )
            .await
        }
    };
    let sent = |a: Answer| a.body["data"]["message_id"].as_str().unwrap().to_string();

    let independent = sent(
        api.send(&token, "chat_id", &chat, "interactive", json!({"elements": []}))
            .await,
    );
    let refused = patch(&independent, shared_card("x")).await;
    assert_eq!(
        (refused.status, refused.body["code"].as_i64()),
        (400, Some(230001))
    );

    let shared = sent(
        api.send(&token, "chat_id", &chat, "interactive", shared_card("P1 open"))
            .await,
    );
    assert_eq!(
        patch(&shared, json!({"elements": []})).await.body["code"],
        230001,
        "new card not shared"
    );
    let ok = patch(&shared, shared_card("P1 acknowledged")).await;
    assert_eq!(ok.body["code"], 0);
    let stored = api
        .sim
        .messages()
        .into_iter()
        .find(|m| m.message_id == shared)
        .unwrap();
    assert_eq!(stored.updates, 1);
    assert!(stored.content.contains("P1 acknowledged"));

    let theirs = api.token_for("cli_other_bot", "other-secret").await;
    let foreign = api
        .call(
            "PATCH",
            &format!("/open-apis/im/v1/messages/{shared}"),
            Some(&theirs),
            Some(json!({"content": shared_card("hijack").to_string()})),
        )
        .await;
    assert_eq!(foreign.body["code"], 230017);

    let text = sent(api.send_text(&token, &chat).await);
    assert_eq!(patch(&text, shared_card("x")).await.body["code"], 230001);

    for _ in 0..4 {
        assert_eq!(patch(&shared, shared_card("again")).await.body["code"], 0);
    }
    assert_eq!(
        patch(&shared, shared_card("sixth")).await.body["code"],
        230020,
        "5 PATCHes/s per message"
    );

    clock.advance(chrono::Duration::days(14) + chrono::Duration::seconds(1));
    let token = api.token().await;
    let old = api
        .call(
            "PATCH",
            &format!("/open-apis/im/v1/messages/{shared}"),
            Some(&token),
            Some(json!({"content": shared_card("late").to_string()})),
        )
        .await;
    assert_eq!(old.body["code"], 230001);
    assert!(old.body["msg"].as_str().unwrap().contains("14 days"));
    api.sim.shutdown().await;
}

#[tokio::test]
async fn chats_members_and_users() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let cfg = config(&clock);
    let world = cfg.world.clone();
    let api = Api::start(cfg).await;
    let token = api.token().await;

    let page1 = api
        .call("GET", "/open-apis/im/v1/chats?page_size=1", Some(&token), None)
        .await;
    assert_eq!(page1.body["data"]["items"].as_array().unwrap().len(), 1);
    assert_eq!(page1.body["data"]["has_more"], true);
    let next = page1.body["data"]["page_token"].as_str().unwrap();
    let page2 = api
        .call(
            "GET",
            &format!("/open-apis/im/v1/chats?page_size=1&page_token={next}"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(page2.body["data"]["has_more"], false);
    assert_eq!(
        page2.body["data"]["items"][0]["chat_id"],
        world.chats[1].chat_id.as_str()
    );

    let create = |uuid: &str| {
        let body = json!({"name": "INC-7 war room", "user_id_list": [world.users[0].open_id]});
        let path = format!("/open-apis/im/v1/chats?user_id_type=open_id&uuid={uuid}");
        let (api, token) = (&api, token.clone());
        async move { api.call("POST", &path, Some(&token), Some(body)).await }
    };
    let c1 = create("inc-7").await;
    let c2 = create("inc-7").await;
    assert_eq!(c1.body["code"], 0);
    assert_eq!(c1.body["data"]["chat_id"], c2.body["data"]["chat_id"]);
    let chat_id = c1.body["data"]["chat_id"].as_str().unwrap().to_string();
    assert_eq!(
        api.send_text(&token, &chat_id).await.body["code"],
        0,
        "the creating bot is a member"
    );

    let members = |succeed_type: u8, ids: Value| {
        let path = format!(
            "/open-apis/im/v1/chats/{chat_id}/members?member_id_type=open_id&succeed_type={succeed_type}"
        );
        let (api, token) = (&api, token.clone());
        async move {
            api.call("POST", &path, Some(&token), Some(json!({"id_list": ids})))
                .await
        }
    };
    let strict = members(2, json!([world.users[1].open_id, "ou_nobody"])).await;
    assert_eq!(strict.body["code"], 99992351);
    let lenient = members(1, json!([world.users[1].open_id, "ou_nobody"])).await;
    assert_eq!(lenient.body["data"]["not_existed_id_list"], json!(["ou_nobody"]));
    let chat = api
        .sim
        .world()
        .chats
        .into_iter()
        .find(|c| c.chat_id == chat_id)
        .unwrap();
    assert!(chat.members.contains(&world.users[1].open_id));

    let ids = api
        .call("POST", "/open-apis/contact/v3/users/batch_get_id?user_id_type=open_id", Some(&token),
              Some(json!({"emails": [world.users[3].email, "ghost@example.com"], "mobiles": [world.users[0].mobile]})))
        .await;
    let list = ids.body["data"]["user_list"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["user_id"], world.users[3].open_id.as_str());
    assert!(list[1].get("user_id").is_none());
    assert_eq!(list[2]["user_id"], world.users[0].open_id.as_str());
    api.sim.shutdown().await;
}

#[tokio::test]
async fn war_room_chat_apis_as_lark_answers_them() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.world.users[5].resigned = true;
    let world = cfg.world.clone();
    let (visible, hidden) = (world.users[0].open_id.clone(), world.users[6].open_id.clone());
    let gone = world.users[5].open_id.clone();
    assert!(!world.users[6].app_visible);
    let api = Api::start(cfg).await;
    let token = api.token().await;
    let create = |users: Value, uuid: &str, token: &str| {
        let path = format!("/open-apis/im/v1/chats?user_id_type=open_id&uuid={uuid}");
        let (api, token) = (&api, token.to_string());
        async move {
            api.call(
                "POST",
                &path,
                Some(&token),
                Some(json!({"name": "[P1] #7 db", "user_id_list": users})),
            )
            .await
        }
    };

    // One id the bot cannot see refuses the whole create, and nothing is created.
    let refused = create(json!([visible, hidden]), "wr-7", &token).await;
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (400, json!(232043))
    );
    assert!(
        refused.body["msg"].as_str().unwrap().contains(&hidden),
        "{}",
        refused.body
    );
    assert_eq!(api.sim.world().chats.len(), world.chats.len());
    let resigned = create(json!([visible, gone]), "wr-7", &token).await;
    assert_eq!(resigned.body["code"], 232022, "{}", resigned.body);
    assert_eq!(api.sim.world().chats.len(), world.chats.len());
    // Created with the visible one: the bot owns it, so the owner fields are absent; the same
    // uuid within 10 hours gives the same chat, after them a new one.
    let created = create(json!([visible]), "wr-7", &token).await;
    assert_eq!(created.body["code"], 0, "{}", created.body);
    assert!(created.body["data"].get("owner_id").is_none(), "{}", created.body);
    assert!(created.body["data"].get("owner_id_type").is_none());
    let chat_id = created.body["data"]["chat_id"].as_str().unwrap().to_string();
    clock.advance(chrono::Duration::hours(9));
    let later = api.token().await;
    assert_eq!(
        create(json!([visible]), "wr-7", &later).await.body["data"]["chat_id"],
        chat_id.as_str()
    );
    clock.advance(chrono::Duration::hours(2));
    let token = api.token().await;
    assert_ne!(
        create(json!([visible]), "wr-7", &token).await.body["data"]["chat_id"],
        chat_id.as_str()
    );

    // succeed_type 1 adds the valid ids and lists the rest; 0 refuses invisible ids (232024).
    let add = |succeed_type: u8, ids: Value| {
        let path = format!(
            "/open-apis/im/v1/chats/{chat_id}/members?member_id_type=open_id&succeed_type={succeed_type}"
        );
        let (api, token) = (&api, token.clone());
        async move {
            api.call("POST", &path, Some(&token), Some(json!({"id_list": ids})))
                .await
        }
    };
    let strict = add(0, json!([world.users[1].open_id, hidden])).await;
    assert_eq!(strict.body["code"], 232024, "{}", strict.body);
    assert_eq!(add(2, json!([gone])).await.body["code"], 232022);
    assert_eq!(add(0, json!([gone])).await.body["code"], 232027, "nobody valid");
    let skipped = add(0, json!([world.users[4].open_id, gone])).await;
    assert_eq!(skipped.body["code"], 0, "{}", skipped.body);
    assert_eq!(skipped.body["data"]["invalid_id_list"], json!([gone]));
    let lenient = add(1, json!([world.users[1].open_id, hidden, "ou_nobody"])).await;
    assert_eq!(lenient.body["code"], 0);
    assert_eq!(lenient.body["data"]["invalid_id_list"], json!([hidden]));
    assert_eq!(lenient.body["data"]["not_existed_id_list"], json!(["ou_nobody"]));
    assert_eq!(lenient.body["data"]["pending_approval_id_list"], json!([]));
    // Two adds to one chat at once: one is refused with 232019.
    let (a, b) = tokio::join!(
        add(1, json!([world.users[2].open_id])),
        add(1, json!([world.users[3].open_id]))
    );
    let mut codes = vec![a.body["code"].as_i64().unwrap(), b.body["code"].as_i64().unwrap()];
    codes.sort();
    assert_eq!(codes, vec![0, 232019]);

    // Pins are idempotent; the top notice takes a message of the chat, action_type a string.
    let sent = api
        .send(&token, "chat_id", &chat_id, "interactive", shared_card("INC-7"))
        .await;
    let message_id = sent.body["data"]["message_id"].as_str().unwrap().to_string();
    let pin = |message: String| {
        let (api, token) = (&api, token.clone());
        async move {
            api.call(
                "POST",
                "/open-apis/im/v1/pins",
                Some(&token),
                Some(json!({"message_id": message})),
            )
            .await
        }
    };
    let first = pin(message_id.clone()).await;
    assert_eq!(first.body["code"], 0, "{}", first.body);
    assert_eq!(first.body["data"]["pin"]["operator_id_type"], "app_id");
    let second = pin(message_id.clone()).await;
    assert_eq!(second.body["data"]["pin"], first.body["data"]["pin"]);
    assert_eq!(api.sim.pins(&chat_id).len(), 1);
    let notice = |action_type: Value| {
        let path = format!("/open-apis/im/v1/chats/{chat_id}/top_notice/put_top_notice");
        let body = json!({"chat_top_notice": [{"action_type": action_type, "message_id": message_id}]});
        let (api, token) = (&api, token.clone());
        async move { api.call("POST", &path, Some(&token), Some(body)).await }
    };
    assert_eq!(notice(json!(1)).await.body["code"], 232001);
    assert_eq!(notice(json!("1")).await.body["code"], 0);
    assert_eq!(api.sim.top_notice(&chat_id).as_deref(), Some(message_id.as_str()));
    // The virtual Lark page sees the room's pinned card and top notice.
    let page = api.call("GET", "/sim/api/world", None, None).await;
    assert_eq!(page.body["pins"][&chat_id], json!([message_id]));
    assert_eq!(page.body["top_notices"][&chat_id], message_id.as_str());

    // Share link and rename; a dissolved chat refuses both.
    let link = api
        .call(
            "POST",
            &format!("/open-apis/im/v1/chats/{chat_id}/link"),
            Some(&token),
            Some(json!({})),
        )
        .await;
    assert!(
        link.body["data"]["share_link"]
            .as_str()
            .unwrap()
            .starts_with("https://applink.")
    );
    assert_eq!(link.body["data"]["is_permanent"], false);
    let rename = |name: &str| {
        let (api, token, path) = (&api, token.clone(), format!("/open-apis/im/v1/chats/{chat_id}"));
        let body = json!({ "name": name });
        async move { api.call("PUT", &path, Some(&token), Some(body)).await }
    };
    assert_eq!(rename("[Resolved] [P1] #7 db").await.body["code"], 0);
    let chat = api
        .sim
        .world()
        .chats
        .into_iter()
        .find(|c| c.chat_id == chat_id)
        .unwrap();
    assert_eq!(chat.name, "[Resolved] [P1] #7 db");
    api.sim.disband_chat(&chat_id).await.unwrap();
    assert_eq!(rename("again").await.body["code"], 232009);
    assert_eq!(add(1, json!([visible])).await.body["code"], 232009);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn chat_apis_refuse_a_missing_scope_and_a_pin_the_chat_keeps_for_its_managers() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let cfg = config(&clock);
    let visible = cfg.world.users[0].open_id.clone();
    let api = Api::start(cfg).await;
    let token = api.token().await;
    let create = |uuid: &'static str| {
        let (api, token, visible) = (&api, token.clone(), visible.clone());
        async move {
            api.call(
                "POST",
                &format!("/open-apis/im/v1/chats?uuid={uuid}"),
                Some(&token),
                Some(json!({"name": "[P1] #8 db", "user_id_list": [visible]})),
            )
            .await
        }
    };
    let chats_before = api.sim.world().chats.len();
    // Without `im:chat` the finer `im:chat:create` still lets the app create.
    api.sim.set_faults(Faults {
        missing_scopes: vec!["im:chat".into()],
        ..Faults::default()
    });
    let created = create("wr-8").await;
    assert_eq!(created.body["code"], 0, "{}", created.body);
    let chat_id = created.body["data"]["chat_id"].as_str().unwrap().to_string();
    // Without either: HTTP 400, 99991672 naming the scopes that would do, and no chat.
    let put = api
        .http
        .put(format!("{}/sim/api/faults", api.sim.base_url()))
        .json(&json!({"missing_scopes": ["im:chat", "im:chat:create", "im:chat.top_notice:write_only"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let refused = create("wr-9").await;
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (400, json!(99991672)),
        "{}",
        refused.body
    );
    assert!(
        refused.body["msg"]
            .as_str()
            .unwrap()
            .contains("im:chat, im:chat:create"),
        "{}",
        refused.body
    );
    assert_eq!(api.sim.world().chats.len(), chats_before + 1);
    let sent = api
        .send(&token, "chat_id", &chat_id, "interactive", shared_card("INC-8"))
        .await;
    let message_id = sent.body["data"]["message_id"].as_str().unwrap().to_string();
    let notice = api
        .call(
            "POST",
            &format!("/open-apis/im/v1/chats/{chat_id}/top_notice/put_top_notice"),
            Some(&token),
            Some(json!({"chat_top_notice": [{"action_type": "1", "message_id": message_id}]})),
        )
        .await;
    assert_eq!(
        (notice.status, notice.body["code"].clone()),
        (400, json!(99991672))
    );
    assert_eq!(api.sim.top_notice(&chat_id), None);

    // A chat that keeps pinning for its owner and managers refuses the app's pin with 230046.
    let pin = || {
        let (api, token, message_id) = (&api, token.clone(), message_id.clone());
        async move {
            api.call(
                "POST",
                "/open-apis/im/v1/pins",
                Some(&token),
                Some(json!({"message_id": message_id})),
            )
            .await
        }
    };
    let put = api
        .http
        .put(format!("{}/sim/api/faults", api.sim.base_url()))
        .json(&json!({"pins_for_managers_only": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let refused = pin().await;
    assert_eq!(
        (refused.status, refused.body["code"].clone()),
        (400, json!(230046)),
        "{}",
        refused.body
    );
    assert!(api.sim.pins(&chat_id).is_empty());
    api.sim.set_faults(Faults::default());
    assert_eq!(pin().await.body["code"], 0);
    assert_eq!(api.sim.pins(&chat_id).len(), 1);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn oauth_login_as_a_chosen_user() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let cfg = config(&clock);
    let alice = cfg.world.users[3].clone();
    let api = Api::start(cfg).await;
    let redirect = "https://oncall.example.com/auth/callback";
    let authorize = format!(
        "{}/open-apis/authen/v1/authorize?client_id={APP}&redirect_uri={}&state=xyz",
        api.sim.base_url(),
        url::form_urlencoded::byte_serialize(redirect.as_bytes()).collect::<String>()
    );
    let page = reqwest::get(&authorize).await.unwrap().text().await.unwrap();
    assert!(page.contains("Alice Chen") && page.contains("张伟"));

    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let grant = authorize.replace("/authorize?", "/authorize/grant?") + "&open_id=" + &alice.open_id;
    let resp = no_redirects.get(&grant).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    assert!(location.as_str().starts_with(redirect));
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "xyz");

    let exchange = json!({"grant_type": "authorization_code", "client_id": APP, "client_secret": SECRET,
                          "code": query["code"], "redirect_uri": redirect});
    let token = api
        .call(
            "POST",
            "/open-apis/authen/v2/oauth/token",
            None,
            Some(exchange.clone()),
        )
        .await;
    let user_token = token.body["access_token"].as_str().unwrap().to_string();
    assert!(user_token.starts_with("u-"));
    let info = api
        .call("GET", "/open-apis/authen/v1/user_info", Some(&user_token), None)
        .await;
    assert_eq!(info.body["data"]["open_id"], alice.open_id.as_str());
    // Without contact:user.email:readonly / contact:user.phone:readonly: no email, no mobile.
    assert!(info.body["data"].get("email").is_none(), "{}", info.body);
    assert!(info.body["data"].get("mobile").is_none(), "{}", info.body);
    let reused = api
        .call("POST", "/open-apis/authen/v2/oauth/token", None, Some(exchange))
        .await;
    assert_eq!((reused.status, reused.body["code"].as_i64()), (400, Some(20003)));

    // A code is good for 5 minutes.
    let resp = no_redirects.get(&grant).send().await.unwrap();
    let location = url::Url::parse(resp.headers()["location"].to_str().unwrap()).unwrap();
    let code = location
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    clock.advance(chrono::Duration::minutes(5) + chrono::Duration::seconds(1));
    let late =
        json!({"grant_type": "authorization_code", "client_id": APP, "client_secret": SECRET, "code": code});
    let expired = api
        .call("POST", "/open-apis/authen/v2/oauth/token", None, Some(late))
        .await;
    assert_eq!(expired.body["code"], 20004);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn faults_are_switchable_at_run_time_also_over_http() {
    let clock = Arc::new(ManualClock::at(start_time()));
    let api = Api::start(config(&clock)).await;
    let token = api.token().await;
    api.sim.set_faults(Faults {
        outage: Some(Outage::Unavailable),
        ..Faults::default()
    });
    assert_eq!(
        api.call("GET", "/open-apis/im/v1/chats", Some(&token), None)
            .await
            .status,
        503
    );
    api.sim.set_faults(Faults {
        outage: Some(Outage::Refused),
        ..Faults::default()
    });
    let url = format!("{}/open-apis/im/v1/chats", api.sim.base_url());
    assert!(api.http.get(&url).bearer_auth(&token).send().await.is_err());
    api.sim.set_faults(Faults {
        error_rate: 1.0,
        kind: FaultKind::CodeOne,
        ..Faults::default()
    });
    let busy = api
        .call("GET", "/open-apis/im/v1/chats", Some(&token), None)
        .await;
    assert_eq!((busy.status, busy.body["code"].as_i64()), (500, Some(1)));
    api.sim.set_faults(Faults {
        error_rate: 1.0,
        kind: FaultKind::ServerError,
        ..Faults::default()
    });
    let broken = api
        .call("GET", "/open-apis/im/v1/chats", Some(&token), None)
        .await;
    assert_eq!(broken.status, 500);
    assert!(broken.body.is_string(), "a non-JSON body");
    api.sim.set_faults(Faults {
        error_rate: 1.0,
        kind: FaultKind::Hang,
        hang: Duration::from_secs(5),
        ..Faults::default()
    });
    let hung = api
        .http
        .get(&url)
        .bearer_auth(&token)
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(hung.unwrap_err().is_timeout());

    // Off again, through the control API.
    let put = api
        .http
        .put(format!("{}/sim/api/faults", api.sim.base_url()))
        .json(&json!({"error_rate": 0.0, "latency": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(
        api.call("GET", "/open-apis/im/v1/chats", Some(&token), None)
            .await
            .status,
        200
    );
    let calls = api.sim.calls();
    assert!(calls.iter().any(|c| c.summary == "fault: hang" && c.status == 0));
    assert!(calls.iter().all(|c| !c.summary.contains(SECRET)));
    api.sim.shutdown().await;
}

// ---- delivery to the appliance ----------------------------------------------------------

type Responder = Box<dyn Fn(&[u8], usize) -> (u16, String) + Send + Sync>;
/// How long the receiver waits before answering its n-th request.
type Delay = fn(usize) -> Duration;

/// A stand-in for the appliance's Request URL: records each request and answers via `respond`.
struct Receiver {
    url: String,
    seen: Arc<Mutex<VecDeque<(HeaderMap, Bytes)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(respond: Responder) -> Receiver {
        Receiver::start_delayed(respond, |_| Duration::ZERO).await
    }

    async fn start_delayed(respond: Responder, delay: Delay) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/lark/callback", listener.local_addr().unwrap());
        let seen: Arc<Mutex<VecDeque<(HeaderMap, Bytes)>>> = Arc::default();
        let respond = Arc::new(respond);
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (log, respond) = (log.clone(), respond.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let (log, respond) = (log.clone(), respond.clone());
                            async move {
                                let headers = req.headers().clone();
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                let n = {
                                    let mut log = log.lock().unwrap();
                                    log.push_back((headers, body.clone()));
                                    log.len() - 1
                                };
                                tokio::time::sleep(delay(n)).await;
                                let (status, answer) = respond(&body, n);
                                Ok::<_, std::convert::Infallible>(
                                    hyper::Response::builder()
                                        .status(status)
                                        .body(Full::new(Bytes::from(answer)))
                                        .unwrap(),
                                )
                            }
                        });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, seen, task }
    }

    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.seen.lock().unwrap().iter().cloned().collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Checks the SHA-256 signature and decrypts an encrypted push.
fn open_push(headers: &HeaderMap, body: &[u8]) -> Value {
    let h = |name: &str| headers[name].to_str().unwrap().to_string();
    let expected = event_signature(
        &h("x-lark-request-timestamp"),
        &h("x-lark-request-nonce"),
        ENCRYPT_KEY,
        body,
    );
    assert_eq!(h("x-lark-signature"), expected, "signed over the raw body");
    let outer: Value = serde_json::from_slice(body).unwrap();
    let plain = Cipher::new(ENCRYPT_KEY)
        .decrypt(outer["encrypt"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&plain).unwrap()
}

fn encrypted_app(url: &str) -> SimApp {
    SimApp {
        encrypt_key: Some(ENCRYPT_KEY.to_string()),
        request_url: Some(url.to_string()),
        ..SimApp::new(APP, SECRET, VTOKEN)
    }
}

#[tokio::test]
async fn events_are_encrypted_signed_and_redelivered_with_the_same_event_id() {
    // The appliance fails twice, then answers 200.
    let receiver = Receiver::start(Box::new(|_, n| {
        if n < 2 {
            (500, String::new())
        } else {
            (200, "{}".into())
        }
    }))
    .await;
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.apps = vec![encrypted_app(&receiver.url)];
    cfg.redelivery = RedeliverySchedule {
        delays: vec![Duration::from_millis(20); 4],
    };
    let (sre, alice) = (cfg.world.chats[0].chat_id.clone(), cfg.world.users[3].clone());
    let sim = Simulator::start(cfg).await.unwrap();

    sim.send_text(&alice.open_id, Some(&sre), "db is down", true)
        .await
        .unwrap();
    for _ in 0..200 {
        if sim.pushes().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let requests = receiver.requests();
    assert_eq!(requests.len(), 3);
    let events: Vec<Value> = requests.iter().map(|(h, b)| open_push(h, b)).collect();
    let id = &events[0]["header"]["event_id"];
    assert!(events.iter().all(|e| &e["header"]["event_id"] == id));
    let e = &events[0];
    assert_eq!(e["schema"], "2.0");
    assert_eq!(e["header"]["event_type"], "im.message.receive_v1");
    assert_eq!(e["header"]["token"], VTOKEN);
    assert_eq!(e["header"]["app_id"], APP);
    assert_eq!(
        e["event"]["sender"]["sender_id"]["open_id"],
        alice.open_id.as_str()
    );
    assert_eq!(e["event"]["message"]["chat_type"], "group");
    let content: Value = serde_json::from_str(e["event"]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["text"], "@_user_1 db is down");
    assert_eq!(e["event"]["message"]["mentions"][0]["key"], "@_user_1");
    let pushes = sim.pushes();
    assert_eq!(
        pushes.iter().map(|p| (p.attempt, p.ok)).collect::<Vec<_>>(),
        [(0, false), (1, false), (2, true)]
    );

    // Without a mention the bot hears nothing in a group; in p2p it always does.
    sim.send_text(&alice.open_id, Some(&sre), "chatter", false)
        .await
        .unwrap();
    sim.send_text(&alice.open_id, None, "status?", false)
        .await
        .unwrap();
    let last = receiver.requests();
    assert_eq!(last.len(), 4);
    let p2p = open_push(&last[3].0, &last[3].1);
    assert_eq!(p2p["event"]["message"]["chat_type"], "p2p");
    assert_ne!(p2p["header"]["event_id"], *id, "a new event has a new id");

    sim.disband_chat(&sre).await.unwrap();
    let disbanded = receiver.requests();
    let event = open_push(&disbanded[4].0, &disbanded[4].1);
    assert_eq!(event["header"]["event_type"], "im.chat.disbanded_v1");
    assert_eq!(event["event"]["chat_id"], sre.as_str());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_card_callback_answer_replaces_the_card_and_shows_the_toast() {
    let receiver = Receiver::start(Box::new(|_, _| {
        let card = json!({"config": {"update_multi": true}, "elements": [{"tag": "markdown", "content": "Acknowledged by Alice"}]});
        (200, json!({"toast": {"type": "success", "content": "Acknowledged"}, "card": {"type": "raw", "data": card}}).to_string())
    }))
    .await;
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.apps = vec![encrypted_app(&receiver.url)];
    let (sre, alice, outsider) = (
        cfg.world.chats[0].chat_id.clone(),
        cfg.world.users[3].clone(),
        cfg.world.users[2].clone(),
    );
    let api = Api::start(cfg).await;
    let token = api.token().await;
    let sent = api
        .send(&token, "chat_id", &sre, "interactive", shared_card("P1"))
        .await;
    let message_id = sent.body["data"]["message_id"].as_str().unwrap().to_string();

    let outcome = api
        .sim
        .press_button(&alice.open_id, &message_id, json!({"action": "ack"}))
        .await
        .unwrap();
    assert_eq!(outcome.status, Some(200));
    assert_eq!(outcome.toast.unwrap()["content"], "Acknowledged");
    assert!(outcome.card_replaced && outcome.client_error.is_none());
    let card = api
        .sim
        .messages()
        .into_iter()
        .find(|m| m.message_id == message_id)
        .unwrap();
    assert!(card.content.contains("Acknowledged by Alice"));

    let (headers, body) = &receiver.requests()[0];
    let callback = open_push(headers, body);
    assert_eq!(callback["header"]["event_type"], "card.action.trigger");
    assert_eq!(callback["event"]["operator"]["open_id"], alice.open_id.as_str());
    assert!(callback["event"]["token"].as_str().unwrap().starts_with("c-"));
    assert_eq!(
        callback["event"]["action"],
        json!({"tag": "button", "value": {"action": "ack"}})
    );
    assert_eq!(
        callback["event"]["context"]["open_message_id"],
        message_id.as_str()
    );
    assert_eq!(callback["event"]["context"]["open_chat_id"], sre.as_str());

    // The callback's token allows two delayed updates within 30 minutes.
    let card_token = callback["event"]["token"].as_str().unwrap().to_string();
    let update = |title: &str| {
        let body = json!({"token": card_token, "card": shared_card(title)});
        let (api, token) = (&api, token.clone());
        async move {
            api.call(
                "POST",
                "/open-apis/interactive/v1/card/update",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    assert_eq!(update("Resolving").await.body["code"], 0);
    assert_eq!(update("Resolved").await.body["code"], 0);
    let third = update("Again").await;
    assert_eq!((third.status, third.body["code"].as_i64()), (400, Some(230001)));
    let card = api
        .sim
        .messages()
        .into_iter()
        .find(|m| m.message_id == message_id)
        .unwrap();
    assert!(card.content.contains("Resolved") && card.updates == 3);
    api.sim
        .press_button(&alice.open_id, &message_id, json!({}))
        .await
        .unwrap();
    let (headers, body) = &receiver.requests()[1];
    let fresh = open_push(headers, body)["event"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    clock.advance(chrono::Duration::minutes(31));
    let token = api.token().await;
    let late = api
        .call(
            "POST",
            "/open-apis/interactive/v1/card/update",
            Some(&token),
            Some(json!({"token": fresh, "card": shared_card("late")})),
        )
        .await;
    assert_eq!(late.body["code"], 230001);

    // Someone outside the chat cannot see the card, let alone press it.
    assert!(
        api.sim
            .press_button(&outsider.open_id, &message_id, json!({}))
            .await
            .is_err()
    );
    api.sim.shutdown().await;
}

#[tokio::test]
async fn the_old_card_callback_is_signed_with_sha1_and_the_verification_token() {
    let receiver = Receiver::start(Box::new(|_, n| match n {
        0 => (
            200,
            json!({"elements": [{"tag": "div", "text": {"tag": "plain_text", "content": "done"}}]})
                .to_string(),
        ),
        _ => (502, "bad gateway".into()),
    }))
    .await;
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.apps = vec![SimApp {
        request_url: Some(receiver.url.clone()),
        card_callback: CardCallbackVersion::V1,
        ..SimApp::new(APP, SECRET, VTOKEN)
    }];
    let (sre, alice) = (cfg.world.chats[0].chat_id.clone(), cfg.world.users[3].clone());
    let api = Api::start(cfg).await;
    let token = api.token().await;
    let sent = api
        .send(&token, "chat_id", &sre, "interactive", shared_card("P2"))
        .await;
    let message_id = sent.body["data"]["message_id"].as_str().unwrap().to_string();

    let outcome = api
        .sim
        .press_button(&alice.open_id, &message_id, json!({"k": "resolve"}))
        .await
        .unwrap();
    assert!(outcome.card_replaced);
    let (headers, body) = &receiver.requests()[0];
    let h = |name: &str| headers[name].to_str().unwrap().to_string();
    assert_eq!(
        h("x-lark-signature"),
        card_v1_signature(
            &h("x-lark-request-timestamp"),
            &h("x-lark-request-nonce"),
            VTOKEN,
            body
        )
    );
    let plain: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(plain["open_message_id"], message_id.as_str());
    assert_eq!(plain["action"]["value"]["k"], "resolve");
    assert!(plain.get("schema").is_none());

    let failed = api
        .sim
        .press_button(&alice.open_id, &message_id, json!({}))
        .await
        .unwrap();
    assert_eq!(failed.client_error, Some(200671));
    assert!(!failed.card_replaced);
    api.sim.shutdown().await;
}

#[tokio::test]
async fn url_verification_is_encrypted_and_must_echo_the_challenge() {
    let receiver = Receiver::start(Box::new(|body, n| {
        let outer: Value = serde_json::from_slice(body).unwrap();
        let plain = Cipher::new(ENCRYPT_KEY)
            .decrypt(outer["encrypt"].as_str().unwrap())
            .unwrap();
        let challenge: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(challenge["type"], "url_verification");
        assert_eq!(challenge["token"], VTOKEN);
        let echo = if n == 0 {
            challenge["challenge"].clone()
        } else {
            json!("wrong")
        };
        (200, json!({"challenge": echo}).to_string())
    }))
    .await;
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.apps = vec![encrypted_app(&receiver.url)];
    let sim = Simulator::start(cfg).await.unwrap();
    sim.verify_url(APP).await.unwrap();
    assert!(sim.verify_url(APP).await.is_err());
    sim.shutdown().await;
}

#[tokio::test]
async fn the_control_api_and_page_drive_the_simulator() {
    let receiver = Receiver::start(Box::new(|_, _| {
        (
            200,
            json!({"toast": {"type": "info", "content": "noted"}}).to_string(),
        )
    }))
    .await;
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.apps = vec![encrypted_app(&receiver.url)];
    let (sre, alice) = (cfg.world.chats[0].chat_id.clone(), cfg.world.users[3].clone());
    let api = Api::start(cfg).await;
    let base = api.sim.base_url();
    let page = reqwest::get(format!("{base}/sim/")).await.unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text().await.unwrap().contains("Virtual Lark"));

    let token = api.token().await;
    let sent = api
        .send(&token, "chat_id", &sre, "interactive", shared_card("P3"))
        .await;
    let message_id = sent.body["data"]["message_id"].as_str().unwrap();
    let messages: Value = reqwest::get(format!("{base}/sim/api/messages?chat_id={sre}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(messages[0]["message_id"], message_id);

    let press: Value = api
        .http
        .post(format!("{base}/sim/api/press"))
        .json(&json!({"user_open_id": alice.open_id, "message_id": message_id, "value": {"a": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(press["toast"]["content"], "noted");
    let said = api
        .http
        .post(format!("{base}/sim/api/send_text"))
        .json(&json!({"user_open_id": alice.open_id, "text": "hi bot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(said.status(), 200);
    assert_eq!(receiver.requests().len(), 2);
    let unknown = api
        .http
        .post(format!("{base}/sim/api/disband"))
        .json(&json!({"chat_id": "oc_nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let error: Value = unknown.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_found");
    let world: Value = reqwest::get(format!("{base}/sim/api/world"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!world.to_string().contains(SECRET) && !world.to_string().contains(ENCRYPT_KEY));
    api.sim.shutdown().await;
}

#[tokio::test]
async fn a_callback_slower_than_3_seconds_fails_and_a_slow_event_is_redelivered() {
    let receiver = Receiver::start_delayed(Box::new(|_, _| (200, "{}".into())), |n| {
        if n < 2 {
            Duration::from_millis(3200)
        } else {
            Duration::ZERO
        }
    })
    .await;
    let clock = Arc::new(ManualClock::at(start_time()));
    let mut cfg = config(&clock);
    cfg.apps = vec![encrypted_app(&receiver.url)];
    cfg.redelivery = RedeliverySchedule {
        delays: vec![Duration::from_millis(10)],
    };
    let (sre, alice) = (cfg.world.chats[0].chat_id.clone(), cfg.world.users[3].clone());
    let api = Api::start(cfg).await;
    let token = api.token().await;
    let sent = api
        .send(&token, "chat_id", &sre, "interactive", shared_card("P1"))
        .await;
    let message_id = sent.body["data"]["message_id"].as_str().unwrap().to_string();
    // Both slow answers run at once, so the test waits about 3 s, not 6.
    let (press, said) = tokio::join!(
        api.sim.press_button(&alice.open_id, &message_id, json!({})),
        api.sim.send_text(&alice.open_id, None, "anyone?", false)
    );
    let outcome = press.unwrap();
    said.unwrap();
    assert_eq!((outcome.status, outcome.client_error), (None, Some(200341)));
    for _ in 0..200 {
        if api.sim.pushes().iter().any(|p| p.kind == "event" && p.ok) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let events: Vec<_> = api
        .sim
        .pushes()
        .into_iter()
        .filter(|p| p.kind == "event")
        .collect();
    assert_eq!(
        events.iter().map(|p| (p.attempt, p.ok)).collect::<Vec<_>>(),
        [(0, false), (1, true)]
    );
    assert_eq!(events[0].event_id, events[1].event_id);
    api.sim.shutdown().await;
}
