//! On-call schedules end to end: the real appliance in-process on a clock the test sets, driven
//! over HTTP — validation that names the field, who is on call with overrides in force, versions
//! that leave this week alone, a person's shifts, and calendar feeds parsed back and matched
//! against the shifts the API reports.

mod common;

use chrono::{DateTime, Duration, NaiveDateTime, Utc};
use common::inprocess::Harness;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const APP_ID: &str = "cli_scheduletest01";
const APP_SECRET: &str = "schedule-test-secret";

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn q(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The ids of the people in a list of `{id, name}`.
fn ids(people: &Value) -> Vec<String> {
    people
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect()
}

fn daily(name: &str, people: &[&str], first: &str) -> Value {
    json!({"name": name, "participants": people, "rotation": {"unit": "day"}, "first_handoff": first})
}

impl Harness {
    async fn schedule(&self, body: Value) -> String {
        self.create("/api/v1/schedules", body).await["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.api(Method::GET, path, Value::Null).await
    }

    /// The ids on call in `schedule` at `at`.
    async fn on_call(&self, schedule: &str, at: DateTime<Utc>) -> Vec<String> {
        let (status, body) = self
            .get(&format!("/api/v1/schedules/{schedule}/on-call?at={}", q(at)))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids(&body["members"])
    }

    async fn shifts(&self, schedule: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Value {
        let (status, body) = self
            .get(&format!(
                "/api/v1/schedules/{schedule}/shifts?from={}&to={}",
                q(from),
                q(to)
            ))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// `(start, end, member ids)` of the final shifts in a `shifts` answer.
fn finals(body: &Value) -> Vec<(DateTime<Utc>, DateTime<Utc>, Vec<String>)> {
    body["final"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                t(f["start"].as_str().unwrap()),
                t(f["end"].as_str().unwrap()),
                ids(&f["members"]),
            )
        })
        .collect()
}

#[tokio::test]
async fn bad_schedules_are_refused_naming_the_field() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let alice = env.member("Alice", "alice@example.com").await;
    let layer = |change: Value| {
        let mut l = daily("primary", &[&alice], "2026-12-14T09:00");
        l.as_object_mut()
            .unwrap()
            .extend(change.as_object().unwrap().clone());
        json!({"name": "ops", "time_zone": "Asia/Shanghai", "layers": [l]})
    };
    let cases = [
        (json!({"name": "ops", "time_zone": "Mars/Olympus"}), "time_zone"),
        (json!({"name": " ", "time_zone": "UTC"}), "name"),
        (json!({"name": "ops"}), "time_zone"),
        (
            layer(json!({"participants": ["mem_nobody"]})),
            "layers[0].participants[0]",
        ),
        (layer(json!({"participants": [[]]})), "layers[0].participants[0]"),
        (layer(json!({"participants": []})), "layers[0].participants"),
        (
            layer(json!({"first_handoff": "2026-12-14 09:00"})),
            "first_handoff",
        ),
        (
            layer(json!({"first_handoff": "2026-12-14T09:00:00+08:00"})),
            "first_handoff",
        ),
        (layer(json!({"rotation": {"unit": "fortnight"}})), "rotation.unit"),
        (
            layer(json!({"rotation": {"unit": "day", "every": 0}})),
            "layers[0].rotation.every",
        ),
        (
            layer(json!({"restrictions": [{"days": [7], "start": "09:00", "end": "18:00"}]})),
            "layers[0].restrictions[0].days",
        ),
        (
            layer(json!({"restrictions": [{"days": [1], "start": "9am", "end": "18:00"}]})),
            "restrictions[0].start",
        ),
        (
            layer(json!({"active_until": "2026-12-01T00:00"})),
            "layers[0].active_until",
        ),
        (layer(json!({"color": "red"})), "color"),
    ];
    for (body, field) in cases {
        let (status, answer) = env.api(Method::POST, "/api/v1/schedules", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message:?} names no {field}");
    }
    let (_, list) = env.get("/api/v1/schedules").await;
    assert_eq!(list["items"], json!([]), "nothing refused was stored");
    env.stop().await;
}

#[tokio::test]
async fn on_call_follows_rotations_overrides_and_versions() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    // Monday 14 December 2026, 10:00 in Shanghai.
    let now = t("2026-12-14T02:00:00Z");
    env.clock.set(now);
    let alice = env.member("Alice", "alice@example.com").await;
    let bob = env.member("Bob", "bob@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    let id = env
        .schedule(json!({"name": "ops", "time_zone": "Asia/Shanghai",
                         "layers": [daily("primary", &[&alice, &bob, &carol], "2026-12-14T09:00")]}))
        .await;

    let (status, now_on_call) = env.get(&format!("/api/v1/schedules/{id}/on-call")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&now_on_call["members"]), vec![alice.clone()]);
    assert_eq!(now_on_call["members"][0]["name"], "Alice");
    assert_eq!(now_on_call["until"], "2026-12-15T01:00:00Z");
    assert_eq!(ids(&now_on_call["next"]["members"]), vec![bob.clone()]);
    assert_eq!(
        env.on_call(&id, t("2026-12-15T01:00:00Z")).await,
        vec![bob.clone()]
    );
    assert_eq!(
        env.on_call(&id, t("2026-12-16T00:59:59Z")).await,
        vec![bob.clone()]
    );
    assert_eq!(
        env.on_call(&id, t("2026-12-16T01:00:00Z")).await,
        vec![carol.clone()]
    );
    assert!(
        env.on_call(&id, t("2026-12-14T00:59:59Z")).await.is_empty(),
        "before the first handoff"
    );
    for (path, field) in [
        (format!("/api/v1/schedules/{id}/on-call?at=yesterday"), "at"),
        (format!("/api/v1/schedules/{id}/on-call?when=now"), "when"),
        (
            format!(
                "/api/v1/schedules/{id}/shifts?from={}&to={}",
                q(now),
                q(now + Duration::days(91))
            ),
            "to",
        ),
        (
            format!("/api/v1/schedules/{id}/shifts?from={}&to={}", q(now), q(now)),
            "to",
        ),
    ] {
        let (status, body) = env.get(&path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().starts_with(field),
            "{body}"
        );
    }

    let week = (t("2026-12-14T01:00:00Z"), t("2026-12-21T01:00:00Z"));
    let before = env.shifts(&id, week.0, week.1).await;
    let rota = [&alice, &bob, &carol];
    let expected: Vec<_> = (0..7)
        .map(|d| {
            let start = week.0 + Duration::days(d);
            (
                start,
                start + Duration::days(1),
                vec![rota[d as usize % 3].clone()],
            )
        })
        .collect();
    assert_eq!(finals(&before), expected);
    assert_eq!(before["gaps"], json!([]));
    assert_eq!(before["layers"][0]["shifts"].as_array().unwrap().len(), 7);

    // Carol covers the next two hours.
    let (status, cover) = env
        .api(
            Method::POST,
            &format!("/api/v1/schedules/{id}/overrides"),
            json!({"end": q(now + Duration::hours(2)), "member_id": carol, "note": "swap"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cover}");
    let (_, covered) = env.get(&format!("/api/v1/schedules/{id}/on-call")).await;
    assert_eq!(ids(&covered["members"]), vec![carol.clone()]);
    assert_eq!(covered["source"]["kind"], "override");
    assert_eq!(covered["until"], q(now + Duration::hours(2)));
    assert_eq!(
        env.on_call(&id, now + Duration::hours(2)).await,
        vec![alice.clone()]
    );
    let (status, body) = env
        .api(
            Method::POST,
            &format!("/api/v1/schedules/{id}/overrides"),
            json!({"start": q(now - Duration::days(1)), "end": q(now), "member_id": carol}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"].as_str().unwrap().starts_with("start"),
        "{body}"
    );

    // Next week Bob alone; this week stays as it was.
    let (status, body) = env
        .api(
            Method::PUT,
            &format!("/api/v1/schedules/{id}/layers"),
            json!({"layers": [daily("primary", &[&bob], "2026-12-21T09:00")],
                   "effective_from": q(now - Duration::hours(1))}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("effective_from"),
        "{body}"
    );
    let (status, edited) = env
        .api(
            Method::PUT,
            &format!("/api/v1/schedules/{id}/layers"),
            json!({"layers": [{"name": "primary", "participants": [&bob], "rotation": {"unit": "week"},
                               "first_handoff": "2026-12-21T09:00"}],
                   "effective_from": q(week.1)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{edited}");
    assert_eq!(edited["versions"].as_array().unwrap().len(), 2);
    assert_eq!(
        edited["layers"][0]["participants"],
        json!([alice, bob, carol]),
        "the version in force now is shown"
    );
    let after = env.shifts(&id, week.0, week.1).await;
    assert_eq!(
        after["layers"], before["layers"],
        "this week's layer shifts are unchanged"
    );
    let next_week = env.shifts(&id, week.1, week.1 + Duration::days(7)).await;
    assert_eq!(
        finals(&next_week),
        [(week.1, week.1 + Duration::days(7), vec![bob.clone()])]
    );

    // Bob's own view: Tuesday and Friday this week, then all of next week.
    let (status, mine) = env
        .get(&format!(
            "/api/v1/members/{bob}/shifts?from={}&to={}",
            q(week.0),
            q(week.1 + Duration::days(7))
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let starts: Vec<&str> = mine["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start"].as_str().unwrap())
        .collect();
    assert_eq!(
        starts,
        [
            "2026-12-15T01:00:00Z",
            "2026-12-18T01:00:00Z",
            "2026-12-21T01:00:00Z"
        ]
    );
    assert_eq!(mine["items"][0]["schedule_id"], id);

    // Ending the running override hands back to the rotation; the past stays.
    let oid = cover["id"].as_str().unwrap();
    env.clock.set(now + Duration::minutes(30));
    let (status, ended) = env
        .api(
            Method::DELETE,
            &format!("/api/v1/schedules/{id}/overrides/{oid}"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (status, ended["result"].as_str()),
        (StatusCode::OK, Some("ended_now"))
    );
    assert_eq!(
        env.on_call(&id, now + Duration::minutes(30)).await,
        vec![alice.clone()]
    );
    assert_eq!(
        env.on_call(&id, now + Duration::minutes(29)).await,
        vec![carol.clone()]
    );

    let (_, list) = env.get("/api/v1/schedules").await;
    assert_eq!(ids(&list["items"][0]["on_call_now"]), vec![alice.clone()]);
    let (status, _) = env
        .api(Method::DELETE, &format!("/api/v1/schedules/{id}"), Value::Null)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = env.get(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    env.stop().await;
}

/// One VEVENT of a feed.
#[derive(Debug, PartialEq)]
struct Event {
    uid: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    summary: String,
}

/// Parses an iCalendar text by RFC 5545's rules: CRLF lines of at most 75 octets, folded lines
/// joined, one VCALENDAR holding VEVENTs, text unescaped.
fn parse_ical(text: &str) -> Vec<Event> {
    assert!(text.ends_with("\r\n"));
    let raw: Vec<&str> = text.strip_suffix("\r\n").unwrap().split("\r\n").collect();
    let mut lines: Vec<String> = Vec::new();
    for line in raw {
        assert!(!line.contains('\n'), "bare LF in {line:?}");
        assert!(line.len() <= 75, "line over 75 octets: {line:?}");
        match line.strip_prefix(' ') {
            Some(rest) => lines.last_mut().expect("fold after a line").push_str(rest),
            None => lines.push(line.to_string()),
        }
    }
    assert_eq!(lines.first().map(String::as_str), Some("BEGIN:VCALENDAR"));
    assert_eq!(lines.last().map(String::as_str), Some("END:VCALENDAR"));
    assert!(lines.iter().any(|l| l == "VERSION:2.0"));
    assert!(lines.iter().any(|l| l.starts_with("PRODID:")));
    let stamp = |v: &str| {
        NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc()
    };
    let mut events = Vec::new();
    let mut current: Option<Vec<(String, String)>> = None;
    for line in &lines[1..lines.len() - 1] {
        match line.as_str() {
            "BEGIN:VEVENT" => current = Some(Vec::new()),
            "END:VEVENT" => {
                let props = current.take().expect("END without BEGIN");
                let get = |name: &str| {
                    props
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_else(|| panic!("VEVENT without {name}"))
                };
                get("DTSTAMP");
                events.push(Event {
                    uid: get("UID"),
                    start: stamp(&get("DTSTART")),
                    end: stamp(&get("DTEND")),
                    summary: get("SUMMARY")
                        .replace("\\,", ",")
                        .replace("\\;", ";")
                        .replace("\\n", "\n")
                        .replace("\\\\", "\\"),
                });
            }
            other => {
                let (name, value) = other.split_once(':').expect("NAME:value");
                if let Some(props) = current.as_mut() {
                    props.push((name.to_string(), value.to_string()));
                }
            }
        }
    }
    assert!(current.is_none(), "unterminated VEVENT");
    let mut uids: Vec<&str> = events.iter().map(|e| e.uid.as_str()).collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(uids.len(), events.len(), "UIDs are unique");
    events
}

#[tokio::test]
async fn calendar_feeds_match_the_shifts_and_can_be_revoked() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    // Across the end of British Summer Time (25 October 2026) within the feed's window.
    let now = t("2026-10-20T12:00:00Z");
    env.clock.set(now);
    let alice = env.member("Alice", "alice@example.com").await;
    let bob = env.member("Bob, the \"builder\"", "bob@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    let id = env
        .schedule(
            json!({"name": "payments; EU", "time_zone": "Europe/London", "layers": [
                {"name": "base", "participants": [&alice, [&bob, &carol]], "rotation": {"unit": "week"},
                 "first_handoff": "2026-10-05T09:00"},
                {"name": "office", "participants": [&carol], "rotation": {"unit": "day", "every": 3},
                 "first_handoff": "2026-10-01T09:00",
                 "restrictions": [{"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "17:30"}]}
            ]}),
        )
        .await;
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/schedules/{id}/overrides"),
            json!({"start": q(now + Duration::days(3)), "end": q(now + Duration::days(3) + Duration::hours(5)),
                   "member_id": bob}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let public = |url: &str| url.replace("https://oncall.example.com", &env.admin);
    let feed = env
        .create("/api/v1/calendar-feeds", json!({"schedule_id": id}))
        .await;
    let url = feed["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("https://oncall.example.com/calendar/lkocal_"),
        "{url}"
    );
    let res = env.http.get(public(&url)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/calendar; charset=utf-8");
    let events = parse_ical(&res.text().await.unwrap());

    // The feed covers a week back and 60 days ahead: exactly the final shifts of that window.
    let (from, to) = (now - Duration::days(7), now + Duration::days(60));
    let expected = env.shifts(&id, from, to).await;
    let want = finals(&expected);
    let got: Vec<_> = events.iter().map(|e| (e.start, e.end)).collect();
    assert_eq!(got, want.iter().map(|(s, e, _)| (*s, *e)).collect::<Vec<_>>());
    assert!(
        want.iter().any(|(s, _, _)| *s >= now + Duration::days(30)),
        "30 days and more"
    );
    for (event, shift) in events.iter().zip(&expected["final"].as_array().unwrap()[..]) {
        for person in shift["members"].as_array().unwrap() {
            assert!(
                event.summary.contains(person["name"].as_str().unwrap()),
                "{event:?}"
            );
        }
        assert!(event.summary.contains("payments; EU"), "{event:?}");
    }
    assert!(events.iter().any(|e| e.summary.contains("Bob, the \"builder\"")));

    // A person's feed holds their shifts and no one else's.
    let mine = env
        .create("/api/v1/calendar-feeds", json!({"member_id": carol}))
        .await;
    let text = env
        .http
        .get(public(mine["url"].as_str().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let carol_events = parse_ical(&text);
    let want_carol: Vec<_> = want
        .iter()
        .filter(|(_, _, who)| who.contains(&carol))
        .map(|(s, e, _)| (*s, *e))
        .collect();
    assert!(!want_carol.is_empty());
    assert_eq!(
        carol_events.iter().map(|e| (e.start, e.end)).collect::<Vec<_>>(),
        want_carol
    );

    // Listing shows no URL; revoking ends it; every unknown token is the same 404.
    let (_, list) = env.get("/api/v1/calendar-feeds").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains("lkocal_"), "{list}");
    assert!(!list.to_string().contains("token_hash"), "{list}");
    let fid = feed["id"].as_str().unwrap();
    let (status, _) = env
        .api(
            Method::DELETE,
            &format!("/api/v1/calendar-feeds/{fid}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut refusals = Vec::new();
    for u in [
        public(&url),
        format!("{}/calendar/lkocal_00.ics", env.admin),
        format!("{}/calendar/x", env.admin),
    ] {
        let res = env.http.get(u).send().await.unwrap();
        refusals.push((res.status(), res.text().await.unwrap()));
    }
    assert_eq!(refusals[0].0, StatusCode::NOT_FOUND);
    assert!(refusals.iter().all(|r| *r == refusals[0]), "{refusals:?}");
    let (status, _) = env.api(Method::POST, "/api/v1/calendar-feeds", json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    env.stop().await;
}

/// A daily rotation of `people` in UTC handing over at 00:00, from 1 December 2026.
fn rotation(name: &str, people: &[&str]) -> Value {
    json!({"name": name, "time_zone": "UTC", "layers": [daily("primary", people, "2026-12-01T00:00")]})
}

#[tokio::test]
async fn a_level_naming_a_schedule_pages_exactly_who_is_on_call() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    // 14 December: Alice's day in the Alice/Bob rotation (13 days after the first handoff).
    let now = t("2026-12-14T10:00:00Z");
    env.clock.set(now);
    let alice = env.member("Alice", "alice@example.com").await;
    let bob = env.member("Bob", "bob@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    let schedule = env.schedule(rotation("ops", &[&bob, &alice])).await;
    assert_eq!(env.on_call(&schedule, now).await, vec![alice.clone()]);
    let (status, body) = env
        .api(
            Method::POST,
            "/api/v1/rules",
            json!({"name": "bad", "integration_id": env.integration,
                   "levels": [{"schedules": ["sch_nonexistent"]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("levels[0].schedules"),
        "{body}"
    );
    env.rule(json!([{"schedules": [schedule], "chats": [env.chat()]}]))
        .await;
    let (status, body) = env
        .api(
            Method::DELETE,
            &format!("/api/v1/schedules/{schedule}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a rule names it: {body}");

    let (alice_id, bob_id, carol_id, chat) = (
        env.open_id("alice@example.com"),
        env.open_id("bob@example.com"),
        env.open_id("carol@example.com"),
        env.chat(),
    );
    let first = env
        .create(
            "/api/v1/incidents",
            json!({"title": "Disk full", "severity": "critical"}),
        )
        .await;
    env.app().incidents.tick().await.unwrap();
    env.wait_for("Alice's card and the chat's", |e| {
        e.cards_to(&alice_id).len() == 1 && e.cards_to(&chat).len() == 1
    })
    .await;
    env.settle().await;
    assert!(env.cards_to(&bob_id).is_empty(), "Bob is not on call");
    let (_, incident) = env
        .get(&format!("/api/v1/incidents/{}", first["id"].as_str().unwrap()))
        .await;
    assert_eq!(
        incident["assignees"],
        json!([alice]),
        "the person on call is the responder"
    );

    // With Carol's override in force, Carol and only Carol is paged.
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/schedules/{schedule}/overrides"),
            json!({"end": q(now + Duration::hours(1)), "member_id": carol}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    env.create(
        "/api/v1/incidents",
        json!({"title": "CPU hot", "severity": "critical"}),
    )
    .await;
    env.app().incidents.tick().await.unwrap();
    env.wait_for("Carol's card", |e| e.cards_to(&carol_id).len() == 1)
        .await;
    env.settle().await;
    assert_eq!(env.cards_to(&alice_id).len(), 1, "Alice is covered");
    assert!(env.cards_to(&bob_id).is_empty());
    assert!(env.cards_to(&carol_id)[0].content.contains("CPU hot"));
    env.stop().await;
}

#[tokio::test]
async fn nobody_on_call_is_logged_the_chat_still_gets_the_card_and_the_level_falls_through() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    // Saturday 19 December 2026: the office-hours schedule has nobody on call.
    let now = t("2026-12-19T10:00:00Z");
    env.clock.set(now);
    let alice = env.member("Alice", "alice@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    let mut office = rotation("office hours", &[&alice]);
    office["layers"][0]["restrictions"] =
        json!([{"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "18:00"}]);
    let schedule = env.schedule(office).await;
    assert!(env.on_call(&schedule, now).await.is_empty());
    env.rule(json!([
        {"schedules": [schedule], "chats": [env.chat()], "fall_through_when_nobody_on_call": true,
         "escalate_after_minutes": 30},
        {"members": [carol]}
    ]))
    .await;
    let (alice_id, carol_id, chat) = (
        env.open_id("alice@example.com"),
        env.open_id("carol@example.com"),
        env.chat(),
    );
    let incident = env
        .create(
            "/api/v1/incidents",
            json!({"title": "Queue stuck", "severity": "critical"}),
        )
        .await;
    let id = incident["id"].as_str().unwrap().to_string();
    env.app().incidents.tick().await.unwrap();
    env.wait_for("the chat's card and Carol's, at once", |e| {
        e.cards_to(&chat).len() == 1 && e.cards_to(&carol_id).len() == 1
    })
    .await;
    env.settle().await;
    assert!(env.cards_to(&alice_id).is_empty(), "Alice is off on Saturdays");

    let entries = common::oplog::all(
        &env.http,
        &env.admin,
        &env.token,
        &format!("incident={id}&outcome=nobody_on_call"),
    )
    .await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["reason"], "nobody on call in office hours");
    assert_eq!(entries[0]["receiver"], format!("schedule:{schedule}"));
    let (_, detail) = env.get(&format!("/api/v1/incidents/{id}")).await;
    let timeline: Vec<(String, String)> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["detail"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        timeline.contains(&(
            "nobody_on_call".into(),
            "level 1: nobody on call in office hours".into()
        )),
        "{timeline:?}"
    );
    assert!(
        timeline.contains(&("escalated".into(), "to level 2".into())),
        "{timeline:?}"
    );
    env.stop().await;
}

/// The card's elements in one language.
fn card_elements(content: &str, lang: &str) -> Vec<Value> {
    let card: Value = serde_json::from_str(content).unwrap();
    card["i18n_elements"][lang].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_card_says_who_was_on_call_at_the_incidents_time() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    let now = t("2026-12-14T10:00:00Z");
    env.clock.set(now);
    let alice = env.member("Alice", "alice@example.com").await;
    let bob = env.member("Bob", "bob@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    // Alice's day in ops; nobody in the weekend-only desk on a Monday.
    let ops = env.schedule(rotation("ops", &[&bob, &alice])).await;
    let mut weekend = rotation("weekend desk", &[&bob]);
    weekend["layers"][0]["restrictions"] = json!([{"days": [5, 6], "start": "00:00", "end": "00:00"}]);
    let desk = env.schedule(weekend).await;
    env.rule(json!([
        {"schedules": [ops], "chats": [env.chat()], "escalate_after_minutes": 30},
        {"schedules": [desk, ops], "members": [carol]}
    ]))
    .await;
    let incident = env
        .create(
            "/api/v1/incidents",
            json!({"title": "Disk full", "severity": "critical"}),
        )
        .await;
    env.app().incidents.tick().await.unwrap();
    let chat = env.chat();
    env.wait_for("the chat's card", |e| e.cards_to(&chat).len() == 1)
        .await;
    let line = |content: &str, lang: &str| {
        card_elements(content, lang)
            .into_iter()
            .filter_map(|e| e["content"].as_str().map(str::to_string))
            .find(|c| c.contains("On call") || c.contains("值班"))
            .unwrap_or_else(|| panic!("no on-call line in {lang}: {content}"))
    };
    let content = env.cards_to(&chat)[0].content.clone();
    assert_eq!(
        line(&content, "en_us"),
        "**On call:** ops: Alice · weekend desk: nobody"
    );
    assert_eq!(
        line(&content, "zh_cn"),
        "**值班：** ops：Alice · weekend desk：无人值班"
    );

    // The line keeps the incident's time, not the update's: on Bob's day the card still says Alice.
    env.clock.set(now + Duration::days(1));
    let id = incident["id"].as_str().unwrap();
    let (status, body) = env
        .api(
            Method::POST,
            &format!("/api/v1/incidents/{id}/acknowledge"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.wait_for("the chat's card updated", |e| e.cards_to(&chat)[0].updates > 0)
        .await;
    let updated = env.cards_to(&chat)[0].content.clone();
    assert_ne!(updated, content);
    assert_eq!(
        line(&updated, "en_us"),
        "**On call:** ops: Alice · weekend desk: nobody"
    );
    env.stop().await;
}

impl Harness {
    /// Sends `text` to the bot in a p2p chat as `user` and returns the text of its reply.
    async fn ask_bot(&self, user: &str, text: &str) -> String {
        let replies = |e: &Harness| {
            let mut replies: Vec<_> = e
                .sim
                .messages()
                .into_iter()
                .filter(|m| m.msg_type == "text" && m.parent_id.is_some())
                .filter(|m| matches!(m.sender, lark_oncall::sim::MessageSender::App { .. }))
                .collect();
            replies.sort_by_key(|m| m.created_at);
            replies
        };
        let before = replies(self).len();
        self.sim.send_text(user, None, text, false).await.unwrap();
        self.wait_for(&format!("a reply to {text:?}"), |e| replies(e).len() > before)
            .await;
        let reply = replies(self).pop().unwrap();
        let content: Value = serde_json::from_str(&reply.content).unwrap();
        content["text"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn the_bot_says_who_is_on_call_now_and_next() {
    let env = Harness::builder(APP_ID, APP_SECRET)
        .callbacks(lark_oncall::sim::CardCallbackVersion::V2)
        .start()
        .await;
    // Monday 14 December 2026, 10:00 in Shanghai: Alice until 09:00 tomorrow, then Bob.
    let now = t("2026-12-14T02:00:00Z");
    env.clock.set(now);
    let alice = env.member("Alice", "alice@example.com").await;
    let bob = env.member("Bob", "bob@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    let (status, linked) = env
        .api(
            Method::POST,
            &format!("/api/v1/members/link?integration_id={}", env.integration),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{linked}");
    let asker = env.open_id("alice@example.com");
    assert!(env.ask_bot(&asker, "help").await.contains("oncall [schedule]"));
    assert_eq!(env.ask_bot(&asker, "oncall").await, "There are no schedules yet.");

    let ops = env
        .schedule(json!({"name": "ops", "time_zone": "Asia/Shanghai",
                         "layers": [daily("primary", &[&alice, &bob], "2026-12-14T09:00")]}))
        .await;
    let mut office = rotation("DB office", &[&carol]);
    office["layers"][0]["restrictions"] =
        json!([{"days": [0, 1, 2, 3, 4], "start": "09:00", "end": "18:00"}]);
    env.schedule(office).await;
    // Bob covers ops for the next hour: the override is who is on call, and Alice is next.
    let (status, _) = env
        .api(
            Method::POST,
            &format!("/api/v1/schedules/{ops}/overrides"),
            json!({"end": q(now + Duration::hours(1)), "member_id": bob}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let all = env.ask_bot(&asker, "oncall").await;
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines[0], "On call now:");
    assert!(
        lines.contains(&"ops: Bob until 2026-12-14 11:00 CST; next: Alice from 2026-12-14 11:00 CST"),
        "{all}"
    );
    assert!(
        lines.contains(&"DB office: nobody; next: Carol from 2026-12-14 09:00 UTC"),
        "{all}"
    );
    assert_eq!(lines.len(), 3, "{all}");

    let one = env.ask_bot(&asker, "oncall DB Office").await;
    assert_eq!(
        one,
        "On call now:\nDB office: nobody; next: Carol from 2026-12-14 09:00 UTC"
    );
    assert_eq!(
        env.ask_bot(&asker, "值班 ops").await,
        "当前值班：\nops：Bob（至 2026-12-14 11:00 CST）；下一位：Alice（2026-12-14 11:00 CST 起）"
    );
    assert_eq!(
        env.ask_bot(&asker, "oncall payments").await,
        "No schedule is named \"payments\"."
    );
    env.stop().await;
}

impl Harness {
    /// Runs the `schedule_notices` job now, as the scheduler does every minute; returns its
    /// outcome.
    async fn run_notices(&self) -> String {
        let (status, job) = self
            .api(
                Method::POST,
                "/api/v1/scheduler/schedule_notices/run",
                Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{job}");
        let outcome = job["last_outcome"].as_str().unwrap().to_string();
        assert!(outcome.starts_with("ok: "), "{outcome}");
        self.settle().await;
        outcome
    }

    /// Links every member to their simulated Lark user by email.
    async fn link_members(&self) {
        let (status, body) = self
            .api(
                Method::POST,
                &format!("/api/v1/members/link?integration_id={}", self.integration),
                Value::Null,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    /// The content of each card sent to `receiver`, oldest first.
    fn card_texts(&self, receiver: &str) -> Vec<String> {
        self.cards_to(receiver).into_iter().map(|m| m.content).collect()
    }
}

#[tokio::test]
async fn handoff_notices_arrive_once_before_each_shift_and_not_again_after_edits() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    // Monday 14 December 2026, 10:00 in Shanghai; Alice is on call until 09:00 tomorrow.
    env.clock.set(t("2026-12-14T02:00:00Z"));
    let alice = env.member("Alice", "alice@example.com").await;
    let bob = env.member("Bob", "bob@example.com").await;
    let carol = env.member("Carol", "carol@example.com").await;
    env.link_members().await;
    let layers = json!([daily("primary", &[&alice, &bob], "2026-12-14T09:00")]);
    let id = env
        .schedule(
            json!({"name": "ops", "time_zone": "Asia/Shanghai", "layers": layers,
                         "handoff_notice": {"minutes_before": 30}}),
        )
        .await;
    let (_, shown) = env.get(&format!("/api/v1/schedules/{id}")).await;
    assert_eq!(
        shown["handoff_notice"],
        json!({"minutes_before": 30, "notify_outgoing": false})
    );
    let (alice_at, bob_at, carol_at) = (
        env.open_id("alice@example.com"),
        env.open_id("bob@example.com"),
        env.open_id("carol@example.com"),
    );

    env.clock.set(t("2026-12-15T00:29:59Z"));
    env.run_notices().await;
    assert!(
        env.card_texts(&bob_at).is_empty(),
        "31 minutes before is too early"
    );

    env.clock.set(t("2026-12-15T00:30:00Z"));
    let outcome = env.run_notices().await;
    assert!(outcome.contains("1 handoff notices"), "{outcome}");
    env.run_notices().await;
    env.clock.set(t("2026-12-15T00:45:00Z"));
    env.run_notices().await;
    let to_bob = env.card_texts(&bob_at);
    assert_eq!(to_bob.len(), 1, "exactly one notice: {to_bob:?}");
    assert!(
        to_bob[0].contains("You are on call for ops from 2026-12-15 09:00 CST to 2026-12-16 09:00 CST."),
        "{}",
        to_bob[0]
    );
    assert!(to_bob[0].contains("Taking over from Alice."), "{}", to_bob[0]);
    assert!(to_bob[0].contains("你将于 2026-12-15 09:00 CST 至 2026-12-16 09:00 CST"));
    assert!(
        env.card_texts(&alice_at).is_empty(),
        "the outgoing person is not told unless asked"
    );

    // Edits that move nobody's shift: the same layers again from now, a new name.
    let (status, body) = env
        .api(
            Method::PUT,
            &format!("/api/v1/schedules/{id}/layers"),
            json!({"layers": layers}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/schedules/{id}"),
            json!({"name": "ops", "description": "the on-call desk"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    env.run_notices().await;
    assert_eq!(env.card_texts(&bob_at).len(), 1, "no notice again after edits");
    assert!(env.card_texts(&alice_at).is_empty());

    // With notify_outgoing, tomorrow's handoff reaches both.
    env.clock.set(t("2026-12-16T00:00:00Z"));
    let (status, body) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/schedules/{id}"),
            json!({"handoff_notice": {"minutes_before": 30, "notify_outgoing": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Two runs at once (the minute's and one by hand) still send each notice once.
    env.clock.set(t("2026-12-16T00:30:00Z"));
    let notices = &env.app().schedule_notices;
    let (first, second) = tokio::join!(notices.send_due(), notices.send_due());
    let sent: Vec<u32> = [first.unwrap(), second.unwrap()]
        .iter()
        .map(|o| o.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(sent.iter().sum::<u32>(), 2, "Alice's and Bob's, once: {sent:?}");
    env.settle().await;
    env.run_notices().await;
    let (to_alice, to_bob) = (env.card_texts(&alice_at), env.card_texts(&bob_at));
    assert_eq!(to_alice.len(), 1, "{to_alice:?}");
    assert!(
        to_alice[0].contains("You are on call for ops from 2026-12-16 09:00 CST to 2026-12-17 09:00 CST.")
    );
    assert_eq!(to_bob.len(), 2, "{to_bob:?}");
    assert!(
        to_bob[1].contains("You hand ops over to Alice at 2026-12-16 09:00 CST."),
        "{}",
        to_bob[1]
    );

    // An override moves Bob's next shift to start an hour later: Carol is told of hers, and
    // Bob of his at its new start.
    env.clock.set(t("2026-12-17T00:20:00Z"));
    let (status, body) = env
        .api(
            Method::POST,
            &format!("/api/v1/schedules/{id}/overrides"),
            json!({"start": "2026-12-17T01:00:00Z", "end": "2026-12-17T02:00:00Z", "member_id": carol}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    env.clock.set(t("2026-12-17T00:30:00Z"));
    env.run_notices().await;
    let to_carol = env.card_texts(&carol_at);
    assert_eq!(to_carol.len(), 1, "{to_carol:?}");
    assert!(to_carol[0].contains("from 2026-12-17 09:00 CST to 2026-12-17 10:00 CST"));
    assert_eq!(
        env.card_texts(&bob_at).len(),
        2,
        "Bob's shift now starts at 10:00"
    );
    assert_eq!(env.card_texts(&alice_at).len(), 2, "Alice hands over to Carol");
    env.clock.set(t("2026-12-17T01:30:00Z"));
    env.run_notices().await;
    let to_bob = env.card_texts(&bob_at);
    assert_eq!(to_bob.len(), 3, "{to_bob:?}");
    assert!(to_bob[2].contains("You are on call for ops from 2026-12-17 10:00 CST to 2026-12-18 09:00 CST."));
    assert!(to_bob[2].contains("Taking over from Carol."));
    env.stop().await;
}

#[tokio::test]
async fn the_daily_card_arrives_once_a_day_in_the_chosen_chat() {
    let env = Harness::builder(APP_ID, APP_SECRET).start().await;
    // Monday 14 December 2026, 08:00 in Shanghai.
    env.clock.set(t("2026-12-14T00:00:00Z"));
    let alice = env.member("Alice", "alice@example.com").await;
    let bob = env.member("Bob", "bob@example.com").await;
    let chat = env.chat();
    let base = json!({"name": "ops", "time_zone": "Asia/Shanghai",
                      "layers": [daily("primary", &[&alice, &bob], "2026-12-14T09:00")]});
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    for (body, field) in [
        (
            with(
                "daily_summary",
                json!({"integration_id": "int_nope", "chats": [&chat], "at": "09:00"}),
            ),
            "daily_summary.integration_id",
        ),
        (
            with(
                "daily_summary",
                json!({"integration_id": env.integration, "chats": [], "at": "09:00"}),
            ),
            "daily_summary.chats",
        ),
        (
            with(
                "daily_summary",
                json!({"integration_id": env.integration, "chats": [&chat], "at": "9am"}),
            ),
            "daily_summary.at",
        ),
        (
            with("handoff_notice", json!({"minutes_before": 0})),
            "handoff_notice.minutes_before",
        ),
        (with("handoff_notice", json!({"minutes": 5})), "minutes"),
    ] {
        let (status, answer) = env.api(Method::POST, "/api/v1/schedules", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} → {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{body}: {message:?} names no {field}");
    }
    let id = env
        .schedule(with(
            "daily_summary",
            json!({"integration_id": env.integration, "chats": [&chat], "at": "09:00"}),
        ))
        .await;

    env.clock.set(t("2026-12-14T00:59:59Z"));
    env.run_notices().await;
    assert!(env.card_texts(&chat).is_empty(), "not before 09:00");
    env.clock.set(t("2026-12-14T01:00:00Z"));
    env.run_notices().await;
    env.run_notices().await;
    env.clock.set(t("2026-12-14T01:30:00Z"));
    env.run_notices().await;
    env.clock.set(t("2026-12-14T09:00:00Z"));
    env.run_notices().await;
    let cards = env.card_texts(&chat);
    assert_eq!(cards.len(), 1, "once a day: {cards:?}");
    assert!(
        cards[0].contains("Who is on call: ops (2026-12-14)"),
        "{}",
        cards[0]
    );
    assert!(
        cards[0].contains("On call now: Alice until 2026-12-15 09:00 CST"),
        "{}",
        cards[0]
    );
    assert!(
        cards[0].contains("Next: Bob from 2026-12-15 09:00 CST"),
        "{}",
        cards[0]
    );
    assert!(cards[0].contains("当前值班：Alice（至 2026-12-15 09:00 CST）"));

    env.clock.set(t("2026-12-15T01:05:00Z"));
    env.run_notices().await;
    env.run_notices().await;
    let cards = env.card_texts(&chat);
    assert_eq!(cards.len(), 2, "the next day's: {cards:?}");
    assert!(
        cards[1].contains("On call now: Bob until 2026-12-16 09:00 CST"),
        "{}",
        cards[1]
    );

    // Turned off, it stops.
    let (status, body) = env
        .api(
            Method::PATCH,
            &format!("/api/v1/schedules/{id}"),
            json!({"daily_summary": null}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.get("daily_summary").is_none_or(Value::is_null), "{body}");
    env.clock.set(t("2026-12-16T01:00:00Z"));
    env.run_notices().await;
    assert_eq!(env.card_texts(&chat).len(), 2);
    env.stop().await;
}
