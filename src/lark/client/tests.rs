//! The Open API client's unit tests: URLs keep the base path and encode ids, authorize URLs go
//! to the accounts host, look-ups are split in fifties, paging follows tokens and refuses loops,
//! and debug output holds no secret.

use super::*;
use crate::clock::SystemClock;
use crate::lark::config::Domain;

fn client(base: Option<&str>) -> LarkClient {
    let config = ClientConfig::for_domain(
        Domain::Feishu,
        base.map(|b| Url::parse(b).unwrap()),
        "cli_app",
        Secret::new("s3cr3t-value"),
    );
    LarkClient::new(config, Arc::new(SystemClock)).unwrap()
}

fn strings(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn urls_keep_a_base_path_and_encode_ids() {
    let c = client(Some("http://127.0.0.1:9/lark/"));
    assert_eq!(
        c.url(
            &c.config.base_url,
            &["im", "v1", "messages", "om_1/../x", "reply"]
        )
        .as_str(),
        "http://127.0.0.1:9/lark/open-apis/im/v1/messages/om_1%2F..%2Fx/reply"
    );
    let c = client(None);
    assert_eq!(
        c.url(
            &c.config.base_url,
            &["auth", "v3", "tenant_access_token", "internal"]
        )
        .as_str(),
        "https://open.feishu.cn/open-apis/auth/v3/tenant_access_token/internal"
    );
}

#[test]
fn the_authorize_url_goes_to_the_accounts_host() {
    let c = client(None);
    let url = c.authorize_url(
        "https://oncall.example.com/oauth/callback?x=1",
        "st&ate",
        &["contact:user.email:readonly", "offline_access"],
    );
    assert_eq!(url.host_str(), Some("accounts.feishu.cn"));
    assert_eq!(url.path(), "/open-apis/authen/v1/authorize");
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        query,
        [
            ("client_id", "cli_app"),
            ("response_type", "code"),
            ("redirect_uri", "https://oncall.example.com/oauth/callback?x=1"),
            ("scope", "contact:user.email:readonly offline_access"),
            ("state", "st&ate"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let url = client(Some("http://127.0.0.1:7")).authorize_url("http://r", "s", &[]);
    assert!(
        url.as_str()
            .starts_with("http://127.0.0.1:7/open-apis/authen/v1/authorize?")
    );
    assert!(!url.as_str().contains("scope="));
}

#[test]
fn look_ups_are_split_at_50_of_each() {
    assert!(lookup_batches(&[], &[]).is_empty());
    let emails = strings("e", 120);
    let mobiles = strings("m", 30);
    let batches = lookup_batches(&emails, &mobiles);
    let sizes: Vec<(usize, usize)> = batches.iter().map(|(e, m)| (e.len(), m.len())).collect();
    assert_eq!(sizes, [(50, 30), (50, 0), (20, 0)]);
    let rejoined: Vec<&String> = batches.iter().flat_map(|(e, _)| e.iter()).collect();
    assert_eq!(rejoined, emails.iter().collect::<Vec<_>>());
    let sizes: Vec<(usize, usize)> = lookup_batches(&[], &strings("m", 50))
        .iter()
        .map(|(e, m)| (e.len(), m.len()))
        .collect();
    assert_eq!(sizes, [(0, 50)]);
}

fn page(token: Option<&str>, has_more: bool) -> ChatPage {
    ChatPage {
        items: vec![],
        page_token: token.map(str::to_string),
        has_more,
    }
}

#[test]
fn paging_follows_tokens_and_refuses_loops() {
    let mut pager = Pager::default();
    assert_eq!(
        pager.next(&page(Some("p2"), true)).unwrap().as_deref(),
        Some("p2")
    );
    assert_eq!(
        pager.next(&page(Some("p3"), true)).unwrap().as_deref(),
        Some("p3")
    );
    // The last page may still carry a token; has_more decides.
    assert_eq!(pager.next(&page(Some("p4"), false)).unwrap(), None);
    let e = pager.next(&page(Some("p2"), true)).unwrap_err();
    assert!(e.to_string().contains("repeated"), "{e}");
    let e = Pager::default().next(&page(Some(""), true)).unwrap_err();
    assert_eq!(e.reason(), "malformed_response");
    assert!(Pager::default().next(&page(None, true)).is_err());
}

#[test]
fn debug_output_holds_no_secret() {
    let shown = format!("{:?}", client(None));
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(shown.contains("cli_app"), "{shown}");
}
