//! The operation log read over the admin API, page by page, as the delivery tests check it.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

/// Every entry matching `filter` (a query string such as `outcome=delivered`), walking the
/// pages back from the newest.
pub async fn all(http: &reqwest::Client, admin: &str, token: &str, filter: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before = String::new();
    loop {
        let res = http
            .get(format!("{admin}/api/v1/oplog?limit=500&{filter}{before}"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let page: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(status, StatusCode::OK, "{filter}: {page}");
        all.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_before"].as_u64() {
            Some(seq) => before = format!("&before={seq}"),
            None => return all,
        }
    }
}

/// Polls until at least `count` entries match `filter` and returns them; fails the test when
/// `within` runs out first.
pub async fn wait(
    http: &reqwest::Client,
    admin: &str,
    token: &str,
    filter: &str,
    count: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let entries = all(http, admin, token, filter).await;
        if entries.len() >= count {
            return entries;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} oplog entries for {filter}",
            entries.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
