//! Outbound webhooks' unit tests, against a receiver over real HTTP: events are signed, ordered,
//! retried and logged; permanent refusals end a delivery and filters apply.

use super::*;
use crate::clock::ShiftedClock;
use std::sync::Mutex;

/// A receiver over real HTTP that answers with the scripted statuses, then 200.
async fn receiver(script: Vec<u16>) -> (String, Arc<Mutex<Vec<(String, String, String)>>>) {
    use warp::Filter;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(Mutex::new(script));
    let log = seen.clone();
    let route = warp::post()
        .and(warp::header::<String>(EVENT_HEADER))
        .and(warp::header::<String>(SIGNATURE_HEADER))
        .and(warp::body::bytes())
        .map(move |event: String, sig: String, body: bytes::Bytes| {
            log.lock()
                .unwrap()
                .push((event, sig, String::from_utf8(body.to_vec()).unwrap()));
            let status = script.lock().unwrap().pop().unwrap_or(200);
            warp::reply::with_status("", warp::http::StatusCode::from_u16(status).unwrap())
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (format!("http://{addr}/hook"), seen)
}

fn webhooks(dir: &std::path::Path, clock: Arc<ShiftedClock>) -> (Arc<Webhooks>, Store) {
    let store = Store::open(&dir.join("state.redb")).unwrap();
    let secrets = SecretBox::load_or_create(dir, true).unwrap();
    let policy = RetryPolicy {
        base: Duration::from_secs(1),
        ..RetryPolicy::default()
    };
    (Webhooks::new(store.clone(), secrets, clock, policy, true), store)
}

#[tokio::test]
async fn events_are_signed_ordered_retried_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let (hooks, store) = webhooks(dir.path(), clock.clone());
    // The first attempt gets a 503, then everything succeeds.
    let (url, seen) = receiver(vec![503]).await;
    let (sub, secret) = hooks
        .create(SubscriptionInput {
            name: Some("upstream".into()),
            url: Some(url),
            ..Default::default()
        })
        .await
        .unwrap();
    let op = Operator {
        source: "api".into(),
        id: None,
        name: Some("admin".into()),
    };
    for t in ["i_new", "i_ack", "i_rslv"] {
        hooks
            .publish(t, &op, Some("inc_1"), &serde_json::json!({"id": "inc_1"}))
            .await
            .unwrap();
    }
    let retry_at = hooks.send_due().await.unwrap().expect("a retry is scheduled");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "later events wait behind the failed one"
    );
    clock.set(retry_at);
    assert_eq!(hooks.send_due().await.unwrap(), None);
    let seen = seen.lock().unwrap().clone();
    let types: Vec<&str> = seen.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(types, ["i_new", "i_new", "i_ack", "i_rslv"]);
    for (_, sig, body) in &seen {
        assert_eq!(sig, &signature(&secret, body.as_bytes()));
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["incident"]["id"], "inc_1");
        assert!(v["event_id"].as_str().unwrap().starts_with("evt_"));
    }
    let log = oplog::query(
        &store,
        &oplog::OpQuery {
            integration: Some(format!("webhook:{}", sub.id)),
            ..Default::default()
        },
    )
    .unwrap();
    let outcomes: Vec<&str> = log.iter().rev().map(|e| e.outcome.as_str()).collect();
    assert_eq!(outcomes, ["retrying", "delivered", "delivered", "delivered"]);
    assert_eq!(store.read(|r| r.count(&tables::WEBHOOK_QUEUE)).unwrap(), 0);
}

#[tokio::test]
async fn permanent_refusals_end_and_filters_apply() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ShiftedClock::default());
    let (hooks, store) = webhooks(dir.path(), clock);
    let (url, seen) = receiver(vec![404]).await;
    hooks
        .create(SubscriptionInput {
            name: Some("acks only".into()),
            url: Some(url),
            event_types: Some(vec!["i_ack".into()]),
            ..Default::default()
        })
        .await
        .unwrap();
    let op = Operator {
        source: "card".into(),
        id: Some("ou_1".into()),
        name: None,
    };
    hooks.publish("i_new", &op, None, &Value::Null).await.unwrap();
    hooks.publish("i_ack", &op, None, &Value::Null).await.unwrap();
    assert_eq!(hooks.send_due().await.unwrap(), None, "a 404 is not retried");
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert_eq!(store.read(|r| r.count(&tables::WEBHOOK_QUEUE)).unwrap(), 0);
    let bad = hooks
        .create(SubscriptionInput {
            name: Some("x".into()),
            url: Some("ftp://nope".into()),
            ..Default::default()
        })
        .await;
    assert!(matches!(bad, Err(WebhookError::Invalid { field: "url", .. })));
    let bad = hooks
        .create(SubscriptionInput {
            name: Some("x".into()),
            url: Some("http://x.example".into()),
            event_types: Some(vec!["i_explode".into()]),
            ..Default::default()
        })
        .await;
    assert!(matches!(
        bad,
        Err(WebhookError::Invalid {
            field: "event_types",
            ..
        })
    ));
}
