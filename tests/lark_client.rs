//! The Open API client against the Lark simulator over real HTTP: every call, token refresh and
//! recovery, Lark's limits and errors, and the outbox executor.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use lark_oncall::clock::{Clock, ManualClock};
use lark_oncall::delivery::{
    CallOutcome, Executor, FailureKind, Job, JobKind, LarkClients, LarkExecutor, Priority,
};
use lark_oncall::lark::{
    ClientConfig, Domain, LarkClient, LarkError, MessageContent, NewChat, ReceiveIdType, Secret,
};
use lark_oncall::sim::{FaultKind, Faults, Outage, SimApp, SimConfig, SimUser, Simulator, World};
use serde_json::{Value, json};
use url::Url;

const APP_ID: &str = "cli_client_test01";
const APP_SECRET: &str = "client-test-secret";
const TOKEN_API: &str = "auth.v3.tenant_access_token.internal";

struct Lark {
    sim: Simulator,
    clock: Arc<ManualClock>,
    client: Arc<LarkClient>,
    /// What the client's call observer saw: API name and whether the call succeeded.
    observed: Arc<Mutex<Vec<(&'static str, bool)>>>,
}

impl Lark {
    async fn start() -> Lark {
        Lark::start_with(|_| {}).await
    }

    /// A simulator with one app and the built-in world, sharing a clock with the client.
    async fn start_with(adjust: impl FnOnce(&mut SimConfig)) -> Lark {
        let clock = Arc::new(ManualClock::default());
        let mut config = SimConfig::new(vec![SimApp::new(APP_ID, APP_SECRET, "verification")]);
        config.clock = clock.clone();
        adjust(&mut config);
        let sim = Simulator::start(config).await.unwrap();
        let observed = Arc::new(Mutex::new(Vec::new()));
        let seen = observed.clone();
        let client = client_for(&sim, APP_SECRET, clock.clone(), Duration::from_secs(5)).with_call_observer(
            Arc::new(move |api, result| {
                seen.lock().unwrap().push((api, result.is_ok()));
            }),
        );
        Lark {
            sim,
            clock,
            client: Arc::new(client),
            observed,
        }
    }

    fn user(&self, seed_name: &str) -> SimUser {
        self.sim
            .world()
            .users
            .into_iter()
            .find(|u| u.en_name == seed_name)
            .unwrap()
    }

    fn chat_id(&self, name_prefix: &str) -> String {
        self.sim
            .world()
            .chats
            .into_iter()
            .find(|c| c.name.starts_with(name_prefix))
            .unwrap()
            .chat_id
    }

    fn calls_of(&self, api: &str) -> usize {
        self.sim.calls().iter().filter(|c| c.api == api).count()
    }
}

fn client_for(sim: &Simulator, secret: &str, clock: Arc<ManualClock>, timeout: Duration) -> LarkClient {
    let mut config = ClientConfig::for_domain(
        Domain::Feishu,
        Some(Url::parse(&sim.base_url()).unwrap()),
        APP_ID,
        Secret::new(secret),
    );
    config.timeout = timeout;
    LarkClient::new(config, clock).unwrap()
}

fn shared_card(title: &str) -> Value {
    json!({
        "config": {"update_multi": true},
        "header": {"title": {"tag": "plain_text", "content": title}, "template": "red"},
        "elements": [{"tag": "markdown", "content": "**disk full** on db-1"}]
    })
}

#[tokio::test]
async fn sends_text_and_cards_by_every_id_type_and_dedups_by_uuid() {
    let lark = Lark::start().await;
    let alice = lark.user("Alice Chen");
    let sre = lark.chat_id("SRE");
    let text = MessageContent::text("hello 你好");
    let by_open_id = lark
        .client
        .send_message(ReceiveIdType::OpenId, &alice.open_id, &text, None)
        .await
        .unwrap();
    let by_email = lark
        .client
        .send_message(ReceiveIdType::Email, &alice.email, &text, None)
        .await
        .unwrap();
    let by_user_id = lark
        .client
        .send_message(ReceiveIdType::UserId, &alice.user_id, &text, None)
        .await
        .unwrap();
    let by_union_id = lark
        .client
        .send_message(ReceiveIdType::UnionId, &alice.union_id, &text, None)
        .await
        .unwrap();
    // One p2p chat with Alice, whichever id named her.
    let p2p = by_open_id.chat_id.clone().unwrap();
    for sent in [&by_email, &by_user_id, &by_union_id] {
        assert_eq!(sent.chat_id.as_deref(), Some(p2p.as_str()));
    }
    let card = MessageContent::card(&shared_card("P1 db-1"));
    let first = lark
        .client
        .send_message(ReceiveIdType::ChatId, &sre, &card, Some("lko-1-abc"))
        .await
        .unwrap();
    let again = lark
        .client
        .send_message(ReceiveIdType::ChatId, &sre, &card, Some("lko-1-abc"))
        .await
        .unwrap();
    assert_eq!(first.message_id, again.message_id);

    let messages = lark.sim.messages();
    assert_eq!(messages.len(), 5);
    let in_sre: Vec<_> = messages.iter().filter(|m| m.chat_id == sre).collect();
    assert_eq!(in_sre.len(), 1);
    assert_eq!(in_sre[0].msg_type, "interactive");
    assert_eq!(in_sre[0].uuid.as_deref(), Some("lko-1-abc"));
    let content: Value = serde_json::from_str(&in_sre[0].content).unwrap();
    assert_eq!(content["header"]["template"], "red");
    let texts: Vec<&str> = messages
        .iter()
        .filter(|m| m.msg_type == "text")
        .map(|m| m.content.as_str())
        .collect();
    assert_eq!(texts, vec![r#"{"text":"hello 你好"}"#; 4]);
    // One token for all of it.
    assert_eq!(lark.calls_of(TOKEN_API), 1);
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn replies_and_card_updates_reach_the_message() {
    let lark = Lark::start().await;
    let sre = lark.chat_id("SRE");
    let card = lark
        .client
        .send_message(
            ReceiveIdType::ChatId,
            &sre,
            &MessageContent::card(&shared_card("P1 open")),
            None,
        )
        .await
        .unwrap();
    let reply = lark
        .client
        .reply_message(
            &card.message_id,
            &MessageContent::text("acknowledged by Bob"),
            false,
            Some("lko-2-r"),
        )
        .await
        .unwrap();
    assert_eq!(reply.parent_id.as_deref(), Some(card.message_id.as_str()));
    let updated = shared_card("P1 resolved");
    lark.client
        .update_card(&card.message_id, &updated.to_string())
        .await
        .unwrap();
    let messages = lark.sim.messages();
    let stored = messages.iter().find(|m| m.message_id == card.message_id).unwrap();
    assert_eq!(stored.updates, 1);
    assert_eq!(serde_json::from_str::<Value>(&stored.content).unwrap(), updated);
    let stored_reply = messages
        .iter()
        .find(|m| m.message_id == reply.message_id)
        .unwrap();
    assert_eq!(stored_reply.parent_id.as_deref(), Some(card.message_id.as_str()));
    // Lark refuses to PATCH a card that is not shared; the client reports Lark's answer.
    let plain = lark
        .client
        .send_message(
            ReceiveIdType::ChatId,
            &sre,
            &MessageContent::card(&json!({"elements": []})),
            None,
        )
        .await
        .unwrap();
    let refused = lark
        .client
        .update_card(&plain.message_id, &updated.to_string())
        .await
        .unwrap_err();
    assert!(
        matches!(refused, LarkError::Other(ref a) if a.code == Some(230001)),
        "{refused:?}"
    );
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn lists_every_chat_the_bot_is_in_across_pages() {
    let lark = Lark::start().await;
    let mut chats: Vec<String> = lark
        .client
        .list_chats()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    chats.sort();
    assert_eq!(chats, ["Payments Incidents 支付故障", "SRE 值班 On-call"]);
    lark.sim.shutdown().await;

    // 230 chats take three pages of 100.
    let lark = Lark::start_with(|c| c.world = World::generated_for(12, 230, APP_ID)).await;
    let chats = lark.client.list_chats().await.unwrap();
    assert_eq!(chats.len(), 230);
    let unique: std::collections::HashSet<_> = chats.iter().map(|c| &c.chat_id).collect();
    assert_eq!(unique.len(), 230);
    assert_eq!(lark.calls_of("im.v1.chat.list"), 3);
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn creates_chats_once_per_uuid_and_adds_members_in_batches_of_50() {
    let lark = Lark::start_with(|c| c.world = World::generated_for(130, 1, APP_ID)).await;
    let people: Vec<String> = lark.sim.world().users.iter().map(|u| u.open_id.clone()).collect();
    let new_chat = NewChat {
        name: "INC-42 db-1 disk full".into(),
        description: "incident war room".into(),
        owner_id: Some(people[0].clone()),
        member_open_ids: people[..60].to_vec(),
    };
    let created = lark
        .client
        .create_chat(&new_chat, Some("lko-chat-42"))
        .await
        .unwrap();
    assert!(created.chat_id.starts_with("oc_"), "{created:?}");
    // 60 members: 50 with the chat, 10 added after.
    assert_eq!(lark.calls_of("im.v1.chat.create"), 1);
    assert_eq!(lark.calls_of("im.v1.chat_members.create"), 1);
    let again = lark
        .client
        .create_chat(&new_chat, Some("lko-chat-42"))
        .await
        .unwrap();
    assert_eq!(again.chat_id, created.chat_id);
    let chat = |world: World| {
        world
            .chats
            .into_iter()
            .find(|c| c.chat_id == created.chat_id)
            .unwrap()
    };
    let in_chat = chat(lark.sim.world());
    assert_eq!(in_chat.members.len(), 60);
    assert!(in_chat.apps.contains(&APP_ID.to_string()));

    let mut more: Vec<String> = people[60..].to_vec();
    more.push("ou_nobody_at_all".into());
    let before = lark.calls_of("im.v1.chat_members.create");
    let added = lark
        .client
        .add_chat_members(&created.chat_id, &more)
        .await
        .unwrap();
    assert_eq!(lark.calls_of("im.v1.chat_members.create") - before, 2);
    let refused: Vec<&String> = added
        .invalid_id_list
        .iter()
        .chain(&added.not_existed_id_list)
        .collect();
    assert_eq!(refused, [&"ou_nobody_at_all".to_string()]);
    assert_eq!(chat(lark.sim.world()).members.len(), 130);
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn looks_up_users_by_email_and_mobile_50_at_a_time() {
    let lark = Lark::start_with(|c| c.world = World::generated_for(120, 1, APP_ID)).await;
    let users = lark.sim.world().users;
    let mut emails: Vec<String> = users.iter().map(|u| u.email.clone()).collect();
    emails.push("stranger@example.com".into());
    let mobiles: Vec<String> = users[..3].iter().map(|u| u.mobile.clone()).collect();
    let found = lark
        .client
        .user_ids_by_email_and_mobile(&emails, &mobiles)
        .await
        .unwrap();
    assert_eq!(lark.calls_of("contact.v3.user.batch_get_id"), 3);
    assert_eq!(found.len(), 124);
    for user in &users {
        let by_email = found
            .iter()
            .find(|m| m.email.as_deref() == Some(user.email.as_str()))
            .unwrap();
        assert_eq!(by_email.user_id.as_deref(), Some(user.open_id.as_str()));
    }
    let stranger = found
        .iter()
        .find(|m| m.email.as_deref() == Some("stranger@example.com"))
        .unwrap();
    assert_eq!(stranger.user_id, None);
    let by_mobile = found
        .iter()
        .find(|m| m.mobile.as_deref() == Some(users[2].mobile.as_str()))
        .unwrap();
    assert_eq!(by_mobile.user_id.as_deref(), Some(users[2].open_id.as_str()));
    assert!(
        lark.client
            .user_ids_by_email_and_mobile(&[], &[])
            .await
            .unwrap()
            .is_empty()
    );
    lark.sim.shutdown().await;
}

/// Plays the user's browser on the simulator's authorize page: picks `open_id`, returns the code.
async fn log_in(lark: &Lark, open_id: &str, redirect: &str) -> String {
    let mut url = lark
        .client
        .authorize_url(redirect, "csrf-state-1", &["offline_access"]);
    url.set_path("/open-apis/authen/v1/authorize/grant");
    url.query_pairs_mut().append_pair("open_id", open_id);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = browser.get(url).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let location = Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    let query: std::collections::HashMap<_, _> = location.query_pairs().into_owned().collect();
    assert_eq!(query["state"], "csrf-state-1");
    query["code"].clone()
}

#[tokio::test]
async fn oauth_login_yields_the_user() {
    // Granted the email scope, user_info carries the address (without it, no email: sim_fidelity).
    let lark = Lark::start_with(|c| {
        c.apps[0].user_scopes = vec![lark_oncall::sim::EMAIL_SCOPE.to_string()];
    })
    .await;
    let redirect = "https://oncall.example.com/oauth/callback";
    let page = lark.client.authorize_url(redirect, "csrf-state-1", &[]);
    let shown = reqwest::get(page).await.unwrap();
    assert_eq!(shown.status(), 200);

    let carol = lark.user("Carol Liu");
    let code = log_in(&lark, &carol.open_id, redirect).await;
    let token = lark.client.exchange_code(&code, redirect).await.unwrap();
    assert!(token.access_token.expose().starts_with("u-"));
    assert!(!format!("{token:?}").contains(token.access_token.expose()));
    let me = lark.client.user_info(&token.access_token).await.unwrap();
    assert_eq!(me.open_id, carol.open_id);
    assert_eq!(me.name, "Carol Liu");
    assert_eq!(me.email.as_deref(), Some("carol@example.com"));

    // Codes are single use.
    let reused = lark.client.exchange_code(&code, redirect).await.unwrap_err();
    assert!(
        matches!(reused, LarkError::Other(ref a) if a.code == Some(20003)),
        "{reused:?}"
    );
    // Someone outside the app's availability cannot log in.
    let chen = lark.user("Chen Jing");
    let code = log_in(&lark, &chen.open_id, redirect).await;
    let denied = lark.client.exchange_code(&code, redirect).await.unwrap_err();
    assert_eq!(denied.reason(), "user_not_visible", "{denied:?}");
    // A made-up user token is refused.
    let bogus = lark
        .client
        .user_info(&Secret::new("u-made-up"))
        .await
        .unwrap_err();
    assert!(matches!(bogus, LarkError::InvalidToken(_)), "{bogus:?}");
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn the_token_is_refreshed_once_30_minutes_are_left() {
    let lark = Lark::start().await;
    let sre = lark.chat_id("SRE");
    let text = MessageContent::text("ping");
    assert_eq!(lark.client.token_expires_at(), None);
    lark.client.ensure_tenant_token().await.unwrap();
    let first_expiry = lark.client.token_expires_at().unwrap();
    assert_eq!(first_expiry - lark.clock.now(), chrono::Duration::hours(2));
    assert_eq!(
        lark.client.token_refresh_at().unwrap(),
        first_expiry - chrono::Duration::minutes(30)
    );

    lark.clock.advance(chrono::Duration::minutes(80));
    lark.client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await
        .unwrap();
    assert_eq!(lark.calls_of(TOKEN_API), 1);
    // Now under 30 minutes remain: the next call fetches, and Lark issues a new token.
    lark.clock.advance(chrono::Duration::minutes(11));
    lark.client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await
        .unwrap();
    assert_eq!(lark.calls_of(TOKEN_API), 2);
    assert!(lark.client.token_expires_at().unwrap() > first_expiry + chrono::Duration::minutes(80));
    // Long after the old token expired, calls still work.
    lark.clock.advance(chrono::Duration::hours(5));
    lark.client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await
        .unwrap();
    assert_eq!(lark.calls_of(TOKEN_API), 3);
    assert!(
        lark.sim.calls().iter().all(|c| c.code == Some(0)),
        "{:?}",
        lark.sim.calls()
    );
    let observed = lark.observed.lock().unwrap().clone();
    let tokens = observed
        .iter()
        .filter(|(api, _)| *api == "auth.tenant_access_token")
        .count();
    assert_eq!((observed.len(), tokens), (6, 3), "{observed:?}");
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn a_refused_token_is_refreshed_and_the_call_retried_once() {
    let lark = Lark::start().await;
    let sre = lark.chat_id("SRE");
    let text = MessageContent::text("ping");
    lark.client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await
        .unwrap();
    lark.sim.expire_tokens();
    let sent = lark
        .client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await;
    assert!(sent.is_ok(), "{sent:?}");
    let codes: Vec<(String, Option<i64>)> =
        lark.sim.calls().iter().map(|c| (c.api.clone(), c.code)).collect();
    let send = "im.v1.message.create".to_string();
    assert_eq!(
        codes,
        [
            (TOKEN_API.to_string(), Some(0)),
            (send.clone(), Some(0)),
            (send.clone(), Some(99991663)),
            (TOKEN_API.to_string(), Some(0)),
            (send, Some(0)),
        ]
    );
    let observed = lark.observed.lock().unwrap().clone();
    assert_eq!(
        observed,
        [
            ("auth.tenant_access_token", true),
            ("im.message.create", true),
            ("im.message.create", false),
            ("auth.tenant_access_token", true),
            ("im.message.create", true),
        ]
    );
    lark.sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_callers_share_one_token_fetch() {
    let lark = Lark::start().await;
    let calls: Vec<_> = (0..30)
        .map(|_| {
            let client = lark.client.clone();
            tokio::spawn(async move { client.list_chats().await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().len(), 2);
    }
    assert_eq!(lark.calls_of(TOKEN_API), 1);
    // After the tokens are revoked, concurrent callers that all see the refusal share one fetch.
    lark.sim.expire_tokens();
    let calls: Vec<_> = (0..15)
        .map(|_| {
            let client = lark.client.clone();
            tokio::spawn(async move { client.list_chats().await })
        })
        .collect();
    for call in calls {
        assert!(call.await.unwrap().is_ok());
    }
    assert_eq!(lark.calls_of(TOKEN_API), 2);
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn rate_limits_come_back_with_the_wait() {
    let lark = Lark::start().await;
    let sre = lark.chat_id("SRE");
    // Six messages to one chat within a second: the sixth hits the 5/s per-chat limit.
    let text = MessageContent::text("flood");
    for _ in 0..5 {
        lark.client
            .send_message(ReceiveIdType::ChatId, &sre, &text, None)
            .await
            .unwrap();
    }
    let limited = lark
        .client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await
        .unwrap_err();
    match &limited {
        LarkError::RateLimited { retry_after, answer } => {
            assert_eq!(answer.code, Some(230020));
            assert!(*retry_after > Duration::ZERO && *retry_after <= Duration::from_secs(1));
        }
        other => panic!("{other:?}"),
    }
    assert!(limited.is_retryable());

    // 51 list calls within a second: the 51st is HTTP 429 with Lark's reset header.
    let lark2 = Lark::start().await;
    let mut refused = None;
    for _ in 0..51 {
        if let Err(e) = lark2.client.list_chats().await {
            refused = Some(e);
            break;
        }
    }
    match refused {
        Some(LarkError::RateLimited { retry_after, answer }) => {
            assert_eq!((answer.http_status, answer.code), (429, Some(99991400)));
            assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(lark2.calls_of("im.v1.chat.list"), 51);
    lark.sim.shutdown().await;
    lark2.sim.shutdown().await;
}

#[tokio::test]
async fn lark_refusals_arrive_as_typed_errors() {
    let lark = Lark::start().await;
    let text = MessageContent::text("hi");
    let random = lark.chat_id("Random");
    let e = lark
        .client
        .send_message(ReceiveIdType::ChatId, &random, &text, None)
        .await
        .unwrap_err();
    assert!(matches!(e, LarkError::BotNotInChat(_)), "{e:?}");
    assert_eq!(e.reason(), "bot_not_in_chat");
    assert!(e.answer().unwrap().log_id.is_some(), "{e:?}");

    let chen = lark.user("Chen Jing");
    let e = lark
        .client
        .send_message(ReceiveIdType::OpenId, &chen.open_id, &text, None)
        .await
        .unwrap_err();
    assert_eq!(e.reason(), "user_not_visible", "{e:?}");
    let e = lark
        .client
        .send_message(ReceiveIdType::OpenId, "ou_nobody_at_all", &text, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, LarkError::UserNotVisible(_) | LarkError::UserNotFound(_)),
        "{e:?}"
    );
    assert!(!e.is_retryable());

    let sre = lark.chat_id("SRE");
    lark.sim.disband_chat(&sre).await.unwrap();
    let e = lark
        .client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await
        .unwrap_err();
    assert!(matches!(e, LarkError::ChatDisbanded(_)), "{e:?}");

    let wrong = client_for(
        &lark.sim,
        "not-the-secret",
        lark.clock.clone(),
        Duration::from_secs(5),
    );
    let e = wrong.list_chats().await.unwrap_err();
    assert!(
        matches!(e, LarkError::WrongCredentials(ref a) if a.code == Some(10014)),
        "{e:?}"
    );
    assert!(!e.to_string().contains("not-the-secret"));
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn an_exhausted_quota_is_reported_as_such() {
    let lark = Lark::start_with(|c| c.monthly_quota = Some(3)).await;
    lark.client.list_chats().await.unwrap();
    lark.client.list_chats().await.unwrap();
    // Token, two lists: the quota of 3 is spent.
    let e = lark.client.list_chats().await.unwrap_err();
    assert!(matches!(e, LarkError::QuotaExhausted(_)), "{e:?}");
    assert!(!e.is_retryable());
    // Next month it works again.
    lark.clock.advance(chrono::Duration::days(32));
    lark.client.list_chats().await.unwrap();
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn faults_are_transient() {
    let lark = Lark::start().await;
    lark.client.ensure_tenant_token().await.unwrap();
    for kind in [FaultKind::ServerError, FaultKind::CodeOne] {
        lark.sim.set_faults(Faults {
            error_rate: 1.0,
            kind,
            ..Faults::default()
        });
        let e = lark.client.list_chats().await.unwrap_err();
        assert!(
            matches!(
                e,
                LarkError::Transient {
                    http_status: Some(500),
                    ..
                }
            ),
            "{kind:?}: {e:?}"
        );
        assert!(e.is_retryable());
    }
    for outage in [Outage::Unavailable, Outage::Refused] {
        lark.sim.set_faults(Faults {
            outage: Some(outage),
            ..Faults::default()
        });
        let e = lark.client.list_chats().await.unwrap_err();
        assert!(matches!(e, LarkError::Transient { .. }), "{outage:?}: {e:?}");
    }
    // A hang past the client's timeout.
    let impatient = client_for(
        &lark.sim,
        APP_SECRET,
        lark.clock.clone(),
        Duration::from_millis(300),
    );
    lark.sim.set_faults(Faults::default());
    impatient.ensure_tenant_token().await.unwrap();
    lark.sim.set_faults(Faults {
        error_rate: 1.0,
        kind: FaultKind::Hang,
        hang: Duration::from_secs(5),
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let e = impatient.list_chats().await.unwrap_err();
    assert!(
        matches!(e, LarkError::Transient { ref cause, .. } if cause.contains("timed out")),
        "{e:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    lark.sim.set_faults(Faults::default());
    lark.client.list_chats().await.unwrap();
    lark.sim.shutdown().await;
}

fn job(id: u64, integration: &str, kind: JobKind) -> Job {
    Job {
        id,
        integration_id: integration.into(),
        incident_id: Some("inc-1".into()),
        priority: Priority::Critical,
        cosmetic: false,
        kind,
        uuid: format!("lko-{id}-test"),
        created_at: Utc::now(),
        first_attempt_at: None,
        attempts: 0,
        next_attempt_at: None,
        state: lark_oncall::delivery::job::JobState::Pending,
    }
}

#[tokio::test]
async fn the_executor_turns_jobs_into_calls_and_outcomes() {
    let lark = Lark::start().await;
    let clients = Arc::new(LarkClients::new());
    clients.insert("int-1", lark.client.clone());
    let executor = LarkExecutor::new(clients.clone());
    let sre = lark.chat_id("SRE");
    let bob = lark.user("Bob Smith");
    let card = shared_card("P1").to_string();

    let send = job(
        1,
        "int-1",
        JobKind::Send {
            receive_id_type: ReceiveIdType::ChatId,
            receive_id: sre.clone(),
            msg_type: "interactive".into(),
            content: card.clone(),
        },
    );
    let CallOutcome::Delivered {
        returned_id: Some(card_id),
    } = executor.execute(&send).await
    else {
        panic!("send not delivered");
    };
    // A retried job (same uuid) does not send twice.
    let CallOutcome::Delivered {
        returned_id: Some(again),
    } = executor.execute(&send).await
    else {
        panic!("retry not delivered");
    };
    assert_eq!(again, card_id);
    let stored = lark.sim.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].uuid.as_deref(), Some("lko-1-test"));

    let reply = job(
        2,
        "int-1",
        JobKind::Reply {
            message_id: card_id.clone(),
            msg_type: "text".into(),
            content: MessageContent::text("ack").content,
        },
    );
    assert!(matches!(
        executor.execute(&reply).await,
        CallOutcome::Delivered { returned_id: Some(_) }
    ));
    let update = job(
        3,
        "int-1",
        JobKind::UpdateCard {
            message_id: card_id.clone(),
            content: shared_card("P1 acknowledged").to_string(),
        },
    );
    assert!(matches!(
        executor.execute(&update).await,
        CallOutcome::Delivered { returned_id: None }
    ));
    let create = job(
        4,
        "int-1",
        JobKind::CreateChat {
            name: "INC-1 war room".into(),
            owner_open_id: Some(bob.open_id.clone()),
            member_open_ids: vec![bob.open_id.clone()],
            description: String::new(),
            dedup_uuid: None,
        },
    );
    let CallOutcome::Delivered {
        returned_id: Some(created_id),
    } = executor.execute(&create).await
    else {
        panic!("create_chat did not return the chat id");
    };
    let war_room = lark
        .sim
        .world()
        .chats
        .into_iter()
        .find(|c| c.name == "INC-1 war room")
        .unwrap();
    assert_eq!(war_room.chat_id, created_id);
    let alice = lark.user("Alice Chen");
    let add = job(
        5,
        "int-1",
        JobKind::AddMembers {
            chat_id: war_room.chat_id.clone(),
            open_ids: vec![alice.open_id.clone()],
        },
    );
    assert!(matches!(
        executor.execute(&add).await,
        CallOutcome::Delivered { .. }
    ));
    let war_room = lark
        .sim
        .world()
        .chats
        .into_iter()
        .find(|c| c.chat_id == war_room.chat_id)
        .unwrap();
    assert!(war_room.members.contains(&alice.open_id));

    let outside = job(
        6,
        "int-1",
        JobKind::Send {
            receive_id_type: ReceiveIdType::ChatId,
            receive_id: lark.chat_id("Random"),
            msg_type: "text".into(),
            content: MessageContent::text("hi").content,
        },
    );
    match executor.execute(&outside).await {
        CallOutcome::Failed(f) => {
            assert_eq!(
                f.kind,
                FailureKind::Permanent {
                    reason: "bot_not_in_chat"
                }
            );
            assert_eq!(f.code, Some(230002));
        }
        other => panic!("{other:?}"),
    }
    lark.sim.set_faults(Faults {
        error_rate: 1.0,
        kind: FaultKind::ServerError,
        ..Faults::default()
    });
    match executor.execute(&reply).await {
        CallOutcome::Failed(f) => assert_eq!(f.kind, FailureKind::Transient),
        other => panic!("{other:?}"),
    }
    lark.sim.set_faults(Faults::default());
    match executor.execute(&job(7, "int-unknown", send.kind.clone())).await {
        CallOutcome::Failed(f) => {
            assert_eq!(
                f.kind,
                FailureKind::Permanent {
                    reason: "integration_unknown"
                }
            )
        }
        other => panic!("{other:?}"),
    }
    lark.sim.shutdown().await;
}

#[tokio::test]
async fn the_executor_reports_rate_limits_and_quota() {
    let lark = Lark::start_with(|c| c.monthly_quota = Some(7)).await;
    let clients = Arc::new(LarkClients::new());
    clients.insert("int-1", lark.client.clone());
    let executor = LarkExecutor::new(clients);
    let sre = lark.chat_id("SRE");
    let send = |id| {
        job(
            id,
            "int-1",
            JobKind::Send {
                receive_id_type: ReceiveIdType::ChatId,
                receive_id: sre.clone(),
                msg_type: "text".into(),
                content: MessageContent::text("storm").content,
            },
        )
    };
    for id in 1..=5 {
        assert!(matches!(
            executor.execute(&send(id)).await,
            CallOutcome::Delivered { .. }
        ));
    }
    match executor.execute(&send(6)).await {
        CallOutcome::Failed(f) => {
            assert!(
                matches!(f.kind, FailureKind::RateLimited { retry_after } if retry_after <= Duration::from_secs(1)),
                "{f:?}"
            );
            assert_eq!(f.code, Some(230020));
        }
        other => panic!("{other:?}"),
    }
    // Token + 5 sends + the refused one (Lark counts calls that pass the frequency gate).
    lark.clock.advance(chrono::Duration::seconds(2));
    let mut last = None;
    for id in 7..=9 {
        last = Some(executor.execute(&send(id)).await);
    }
    match last {
        Some(CallOutcome::Failed(f)) => assert_eq!(f.kind, FailureKind::QuotaExhausted),
        other => panic!("{other:?}"),
    }
    lark.sim.shutdown().await;
}

/// Collects what tracing writes, at every level, while a test runs on this thread.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `t-`/`u-` followed by the 20 hex digits of the simulator's tokens.
fn has_token(text: &str) -> bool {
    text.match_indices(['t', 'u']).any(|(i, _)| {
        let rest = &text[i + 1..];
        rest.starts_with('-') && rest.len() >= 21 && rest[1..21].chars().all(|c| c.is_ascii_hexdigit())
    })
}

#[tokio::test(flavor = "current_thread")]
async fn no_secret_or_token_reaches_the_logs() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    // Global, not scoped: a scoped subscriber misses events whose callsite interest another test
    // thread cached first (seen as a flaky miss of "lark call failed"). The other tests of this
    // binary then log here too, which only widens what is checked for secrets.
    tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber of this binary");

    let lark = Lark::start().await;
    let sre = lark.chat_id("SRE");
    let text = MessageContent::text("ping");
    lark.client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await
        .unwrap();
    lark.sim.expire_tokens();
    lark.client
        .send_message(ReceiveIdType::ChatId, &sre, &text, None)
        .await
        .unwrap();
    let wrong = client_for(
        &lark.sim,
        "wrong-secret-value",
        lark.clock.clone(),
        Duration::from_secs(5),
    );
    assert!(wrong.list_chats().await.is_err());
    let alice = lark.user("Alice Chen");
    let redirect = "https://oncall.example.com/oauth/callback";
    let code = log_in(&lark, &alice.open_id, redirect).await;
    let token = lark.client.exchange_code(&code, redirect).await.unwrap();
    lark.client.user_info(&token.access_token).await.unwrap();
    lark.sim.shutdown().await;

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("tenant token refused"),
        "the test saw no logs:\n{logs}"
    );
    assert!(logs.contains("lark call failed"), "{logs}");
    assert!(
        !logs.contains(APP_SECRET) && !logs.contains("wrong-secret-value"),
        "{logs}"
    );
    assert!(!logs.contains(token.access_token.expose()), "{logs}");
    assert!(!has_token(&logs), "{logs}");
    assert!(has_token(&format!("t-{}", "ab".repeat(10))));
}

/// The appliance's callback endpoint, played by a bare server that records each callback body
/// and answers `{}` (keep the card).
struct CallbackStub {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl CallbackStub {
    async fn start() -> CallbackStub {
        use http_body_util::{BodyExt, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/lark/callback", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let log = bodies.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let log = log.clone();
                let service =
                    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let log = log.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            log.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                                bytes::Bytes::from_static(b"{}"),
                            )))
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        CallbackStub { url, bodies, task }
    }
}

impl Drop for CallbackStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_clicked_card_is_updated_with_the_callback_token() {
    let stub = CallbackStub::start().await;
    let url = stub.url.clone();
    let lark = Lark::start_with(|c| c.apps[0].request_url = Some(url)).await;
    let sre = lark.chat_id("SRE");
    let card = lark
        .client
        .send_message(
            ReceiveIdType::ChatId,
            &sre,
            &MessageContent::card(&shared_card("P1 open")),
            None,
        )
        .await
        .unwrap();
    let bob = lark.user("Bob Smith");
    let outcome = lark
        .sim
        .press_button(&bob.open_id, &card.message_id, json!({"action": "ack"}))
        .await
        .unwrap();
    assert_eq!(outcome.status, Some(200));
    let callback = stub.bodies.lock().unwrap()[0].clone();
    assert_eq!(callback["header"]["event_type"], "card.action.trigger");
    let card_token = callback["event"]["token"].as_str().unwrap().to_string();

    let acked = shared_card("P1 acknowledged by Bob");
    lark.client
        .update_card_with_token(&card_token, &acked)
        .await
        .unwrap();
    let stored = lark
        .sim
        .messages()
        .into_iter()
        .find(|m| m.message_id == card.message_id)
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&stored.content).unwrap(), acked);
    // Two uses per token.
    lark.client
        .update_card_with_token(&card_token, &acked)
        .await
        .unwrap();
    let e = lark
        .client
        .update_card_with_token(&card_token, &acked)
        .await
        .unwrap_err();
    assert!(
        matches!(e, LarkError::Other(ref a) if a.code == Some(230001)),
        "{e:?}"
    );
    lark.sim.shutdown().await;
}
