//! The Open API client of one Lark app: messages and cards, chats, user look-up and user login,
//! over one connection pool, with the app's tenant token cached and refreshed (see
//! [`super::token`]). A call refused for its token is retried once with a fresh token.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use url::Url;

use super::api::{
    AddedMembers, Chat, ChatPage, Message, MessageContent, NewChat, ReceiveIdType, TenantTokenAnswer,
    UserIdList, UserIdMatch, UserInfo, UserToken,
};
use super::config::{ClientConfig, Secret};
use super::error::{self, Exchange, LarkError};
use super::token::{FetchedToken, TokenCache};
use crate::clock::Clock;

/// Lark's per-call maximum for member lists and user look-ups (reference §5.5–§5.7).
pub const MAX_IDS_PER_CALL: usize = 50;
/// Chats per page when listing: the usual maximum of Lark's IM lists (this list's own maximum
/// is unconfirmed, reference §9 item 7).
const CHAT_PAGE_SIZE: &str = "100";
/// A chat list longer than this many pages means the paging is broken, not that the bot is in
/// 100,000 groups.
const MAX_CHAT_PAGES: usize = 1000;

/// One Open API endpoint: its name in logs (the names [`crate::delivery::JobKind::api`] uses) and
/// the scope a permission error on it is about.
#[derive(Debug, Clone, Copy)]
struct Api {
    name: &'static str,
    scope: Option<&'static str>,
}

const TENANT_TOKEN: Api = Api {
    name: "auth.tenant_access_token",
    scope: None,
};
const SEND: Api = Api {
    name: "im.message.create",
    scope: Some("im:message"),
};
const REPLY: Api = Api {
    name: "im.message.reply",
    scope: Some("im:message"),
};
const PATCH: Api = Api {
    name: "im.message.patch",
    scope: Some("im:message"),
};
const DELAYED_CARD_UPDATE: Api = Api {
    name: "interactive.card.update",
    scope: None,
};
const LIST_CHATS: Api = Api {
    name: "im.chat.list",
    scope: Some("im:chat"),
};
const CREATE_CHAT: Api = Api {
    name: "im.chat.create",
    scope: Some("im:chat"),
};
const ADD_MEMBERS: Api = Api {
    name: "im.chat.members.create",
    scope: Some("im:chat"),
};
const UPDATE_CHAT: Api = Api {
    name: "im.chat.update",
    scope: Some("im:chat"),
};
const PIN: Api = Api {
    name: "im.pin.create",
    scope: Some("im:message"),
};
const TOP_NOTICE: Api = Api {
    name: "im.chat.top_notice.put",
    scope: Some("im:chat"),
};
const SHARE_LINK: Api = Api {
    name: "im.chat.link",
    scope: Some("im:chat"),
};
const BATCH_GET_ID: Api = Api {
    name: "contact.user.batch_get_id",
    scope: Some("contact:user.id:readonly"),
};
const OAUTH_TOKEN: Api = Api {
    name: "authen.oauth.token",
    scope: None,
};
const USER_INFO: Api = Api {
    name: "authen.user_info",
    scope: None,
};

/// Told of every exchange with the Open API (token fetches included): the API's name and how
/// it ended, e.g. to count calls against the monthly quota.
pub type CallObserver = Arc<dyn Fn(&'static str, Result<(), &LarkError>) + Send + Sync>;

pub struct LarkClient {
    config: ClientConfig,
    http: reqwest::Client,
    tokens: TokenCache,
    observer: Option<CallObserver>,
}

impl std::fmt::Debug for LarkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LarkClient")
            .field("config", &self.config)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl LarkClient {
    /// `clock` decides when the cached tenant token is due for refresh.
    pub fn new(config: ClientConfig, clock: Arc<dyn Clock>) -> Result<LarkClient, LarkError> {
        config.validate()?;
        // reqwest is built without a default crypto provider; installing ring twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            // A redirect would carry the App Secret or a token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("lark-oncall/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| LarkError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(LarkClient {
            config,
            http,
            tokens: TokenCache::new(clock),
            observer: None,
        })
    }

    pub fn with_call_observer(mut self, observer: CallObserver) -> LarkClient {
        self.observer = Some(observer);
        self
    }

    pub fn app_id(&self) -> &str {
        &self.config.app_id
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// When the cached tenant token expires; `None` until one was fetched.
    pub fn token_expires_at(&self) -> Option<DateTime<Utc>> {
        self.tokens.expires_at()
    }

    /// From when the next call fetches a new tenant token (30 minutes before expiry).
    pub fn token_refresh_at(&self) -> Option<DateTime<Utc>> {
        self.tokens.refresh_at()
    }

    /// Makes sure a tenant token is cached and not due for refresh: for a scheduler refreshing
    /// ahead of calls, and to check credentials (a wrong secret is [`LarkError::WrongCredentials`]).
    pub async fn ensure_tenant_token(&self) -> Result<(), LarkError> {
        self.tenant_token().await.map(drop)
    }

    async fn tenant_token(&self) -> Result<Secret, LarkError> {
        self.tokens.get(|| self.fetch_tenant_token()).await
    }

    /// `POST /auth/v3/tenant_access_token/internal`, bypassing the cache.
    async fn fetch_tenant_token(&self) -> Result<FetchedToken, LarkError> {
        let body = json!({
            "app_id": self.config.app_id,
            "app_secret": self.config.app_secret.expose(),
        });
        let request = self.request(Method::POST, &["auth", "v3", "tenant_access_token", "internal"]);
        let answer = self.exchange(TENANT_TOKEN, json_body(request, &body)).await?;
        let token: TenantTokenAnswer = parse(TENANT_TOKEN, answer)?;
        tracing::debug!(app_id = %self.config.app_id, expires_in = token.expire, "tenant token fetched");
        Ok(FetchedToken {
            token: Secret::new(token.tenant_access_token),
            expires_in: Duration::from_secs(token.expire),
        })
    }

    /// Sends a message (`POST /im/v1/messages`). `uuid` makes a repeat of the same send within
    /// an hour a no-op on Lark's side (at most 50 characters).
    pub async fn send_message(
        &self,
        receive_id_type: ReceiveIdType,
        receive_id: &str,
        content: &MessageContent,
        uuid: Option<&str>,
    ) -> Result<Message, LarkError> {
        let mut body = json!({
            "receive_id": receive_id,
            "msg_type": content.msg_type,
            "content": content.content,
        });
        if let Some(uuid) = uuid {
            body["uuid"] = json!(uuid);
        }
        let answer = self
            .tenant_call(SEND, || {
                let request = self
                    .request(Method::POST, &["im", "v1", "messages"])
                    .query(&[("receive_id_type", receive_id_type.as_str())]);
                json_body(request, &body)
            })
            .await?;
        data(SEND, answer)
    }

    /// Replies to a message (`POST /im/v1/messages/:id/reply`), in its thread when asked.
    pub async fn reply_message(
        &self,
        message_id: &str,
        content: &MessageContent,
        reply_in_thread: bool,
        uuid: Option<&str>,
    ) -> Result<Message, LarkError> {
        let mut body = json!({
            "msg_type": content.msg_type,
            "content": content.content,
            "reply_in_thread": reply_in_thread,
        });
        if let Some(uuid) = uuid {
            body["uuid"] = json!(uuid);
        }
        let answer = self
            .tenant_call(REPLY, || {
                let request = self.request(Method::POST, &["im", "v1", "messages", message_id, "reply"]);
                json_body(request, &body)
            })
            .await?;
        data(REPLY, answer)
    }

    /// Replaces a sent card's content (`PATCH /im/v1/messages/:id`); `card` is the card JSON
    /// string, which must keep `config.update_multi: true`.
    pub async fn update_card(&self, message_id: &str, card: &str) -> Result<(), LarkError> {
        let body = json!({ "content": card });
        self.tenant_call(PATCH, || {
            json_body(
                self.request(Method::PATCH, &["im", "v1", "messages", message_id]),
                &body,
            )
        })
        .await
        .map(drop)
    }

    /// Replaces a card after a click with the callback's update token (`c-…`;
    /// `POST /interactive/v1/card/update`, reference §3.5). Lark accepts it only after the
    /// callback was answered, for 30 minutes and 2 uses; `card` is the card JSON.
    pub async fn update_card_with_token(&self, card_token: &str, card: &Value) -> Result<(), LarkError> {
        let body = json!({ "token": card_token, "card": card });
        self.tenant_call(DELAYED_CARD_UPDATE, || {
            json_body(
                self.request(Method::POST, &["interactive", "v1", "card", "update"]),
                &body,
            )
        })
        .await
        .map(drop)
    }

    /// Every group chat the bot is in (`GET /im/v1/chats`, all pages).
    pub async fn list_chats(&self) -> Result<Vec<Chat>, LarkError> {
        let mut chats = Vec::new();
        let mut pager = Pager::default();
        let mut page_token: Option<String> = None;
        loop {
            let answer = self
                .tenant_call(LIST_CHATS, || {
                    let mut query = vec![("page_size", CHAT_PAGE_SIZE)];
                    if let Some(token) = &page_token {
                        query.push(("page_token", token));
                    }
                    self.request(Method::GET, &["im", "v1", "chats"]).query(&query)
                })
                .await?;
            let page: ChatPage = data(LIST_CHATS, answer)?;
            page_token = pager.next(&page)?;
            chats.extend(page.items);
            if page_token.is_none() {
                return Ok(chats);
            }
        }
    }

    /// Creates a group chat (`POST /im/v1/chats`); the bot is a member. Lark creates at most one
    /// chat per `uuid` and owner within 10 hours. Members beyond the first 50 are added after.
    pub async fn create_chat(&self, chat: &NewChat, uuid: Option<&str>) -> Result<Chat, LarkError> {
        let split = chat.member_open_ids.len().min(MAX_IDS_PER_CALL);
        let (first, rest) = chat.member_open_ids.split_at(split);
        let body = serde_json::to_value(NewChat {
            member_open_ids: first.to_vec(),
            ..chat.clone()
        })
        .expect("a chat serializes");
        let answer = self
            .tenant_call(CREATE_CHAT, || {
                let mut query = vec![("user_id_type", "open_id")];
                if let Some(uuid) = uuid {
                    query.push(("uuid", uuid));
                }
                let request = self.request(Method::POST, &["im", "v1", "chats"]).query(&query);
                json_body(request, &body)
            })
            .await?;
        let created: Chat = data(CREATE_CHAT, answer)?;
        if !rest.is_empty() {
            self.add_chat_members(&created.chat_id, rest).await?;
        }
        Ok(created)
    }

    /// Adds users by open_id (`POST /im/v1/chats/:id/members`, 50 per call). Valid ids are
    /// added; the others are reported in the result.
    pub async fn add_chat_members(
        &self,
        chat_id: &str,
        open_ids: &[String],
    ) -> Result<AddedMembers, LarkError> {
        let mut result = AddedMembers::default();
        for chunk in open_ids.chunks(MAX_IDS_PER_CALL) {
            let body = json!({ "id_list": chunk });
            let answer = self
                .tenant_call(ADD_MEMBERS, || {
                    let request = self
                        .request(Method::POST, &["im", "v1", "chats", chat_id, "members"])
                        .query(&[("member_id_type", "open_id"), ("succeed_type", "1")]);
                    json_body(request, &body)
                })
                .await?;
            result.merge(data(ADD_MEMBERS, answer)?);
        }
        Ok(result)
    }

    /// Renames a chat (`PUT /im/v1/chats/:id`).
    pub async fn rename_chat(&self, chat_id: &str, name: &str) -> Result<(), LarkError> {
        let body = json!({ "name": name });
        self.tenant_call(UPDATE_CHAT, || {
            json_body(self.request(Method::PUT, &["im", "v1", "chats", chat_id]), &body)
        })
        .await
        .map(drop)
    }

    /// Pins a message in its chat (`POST /im/v1/pins`); pinning a pinned message is a no-op.
    pub async fn pin_message(&self, message_id: &str) -> Result<(), LarkError> {
        let body = json!({ "message_id": message_id });
        self.tenant_call(PIN, || {
            json_body(self.request(Method::POST, &["im", "v1", "pins"]), &body)
        })
        .await
        .map(drop)
    }

    /// Makes a message the chat's top notice (`put_top_notice`, `action_type` "1").
    pub async fn set_top_notice(&self, chat_id: &str, message_id: &str) -> Result<(), LarkError> {
        let body = json!({"chat_top_notice": [{"action_type": "1", "message_id": message_id}]});
        self.tenant_call(TOP_NOTICE, || {
            let path = ["im", "v1", "chats", chat_id, "top_notice", "put_top_notice"];
            json_body(self.request(Method::POST, &path), &body)
        })
        .await
        .map(drop)
    }

    /// A link that lets anyone in the tenant join the chat for a week (`POST /im/v1/chats/:id/link`).
    pub async fn chat_share_link(&self, chat_id: &str) -> Result<String, LarkError> {
        let body = json!({ "validity_period": "week" });
        let answer = self
            .tenant_call(SHARE_LINK, || {
                json_body(
                    self.request(Method::POST, &["im", "v1", "chats", chat_id, "link"]),
                    &body,
                )
            })
            .await?;
        let link: ShareLink = data(SHARE_LINK, answer)?;
        Ok(link.share_link)
    }

    /// Looks up open_ids by email and mobile (`POST /contact/v3/users/batch_get_id`), at most 50
    /// of each per call. One entry per input; `user_id` is empty where nobody matched.
    pub async fn user_ids_by_email_and_mobile(
        &self,
        emails: &[String],
        mobiles: &[String],
    ) -> Result<Vec<UserIdMatch>, LarkError> {
        let mut found = Vec::with_capacity(emails.len() + mobiles.len());
        for (emails, mobiles) in lookup_batches(emails, mobiles) {
            // An empty list is left out, as the SDKs leave out fields never set.
            let mut body = json!({ "include_resigned": false });
            if !emails.is_empty() {
                body["emails"] = json!(emails);
            }
            if !mobiles.is_empty() {
                body["mobiles"] = json!(mobiles);
            }
            let answer = self
                .tenant_call(BATCH_GET_ID, || {
                    let request = self
                        .request(Method::POST, &["contact", "v3", "users", "batch_get_id"])
                        .query(&[("user_id_type", "open_id")]);
                    json_body(request, &body)
                })
                .await?;
            let list: UserIdList = data(BATCH_GET_ID, answer)?;
            found.extend(list.user_list);
        }
        Ok(found)
    }

    /// Where to send a user's browser to log in (reference §5.8). `state` is the caller's CSRF
    /// token; `scopes` may be empty.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str, scopes: &[&str]) -> Url {
        let mut url = self.url(&self.config.accounts_url, &["authen", "v1", "authorize"]);
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("client_id", &self.config.app_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", redirect_uri);
            if !scopes.is_empty() {
                query.append_pair("scope", &scopes.join(" "));
            }
            query.append_pair("state", state);
        }
        url
    }

    /// Exchanges a login code for the user's access token (`POST /authen/v2/oauth/token`).
    pub async fn exchange_code(&self, code: &str, redirect_uri: &str) -> Result<UserToken, LarkError> {
        let body = json!({
            "grant_type": "authorization_code",
            "client_id": self.config.app_id,
            "client_secret": self.config.app_secret.expose(),
            "code": code,
            "redirect_uri": redirect_uri,
        });
        let request = self.request(Method::POST, &["authen", "v2", "oauth", "token"]);
        let answer = self.exchange(OAUTH_TOKEN, json_body(request, &body)).await?;
        parse(OAUTH_TOKEN, answer)
    }

    /// Who the user token belongs to (`GET /authen/v1/user_info`).
    pub async fn user_info(&self, user_token: &Secret) -> Result<UserInfo, LarkError> {
        let request = self
            .request(Method::GET, &["authen", "v1", "user_info"])
            .header(AUTHORIZATION, bearer(user_token));
        let answer = self.exchange(USER_INFO, request).await?;
        data(USER_INFO, answer)
    }

    /// `{base}/open-apis/{segments}`, each segment percent-encoded.
    fn url(&self, base: &Url, segments: &[&str]) -> Url {
        let mut url = base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .expect("validated as a base URL")
            .pop_if_empty()
            .push("open-apis")
            .extend(segments);
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http
            .request(method, self.url(&self.config.base_url, segments))
    }

    /// A call with the tenant token; when Lark refuses the token, it is discarded, a new one
    /// fetched (once for all callers that saw it refused) and the call made once more.
    async fn tenant_call(&self, api: Api, build: impl Fn() -> RequestBuilder) -> Result<Value, LarkError> {
        let token = self.tenant_token().await?;
        let first = self
            .exchange(api, build().header(AUTHORIZATION, bearer(&token)))
            .await;
        let Err(LarkError::InvalidToken(answer)) = first else {
            return first;
        };
        tracing::info!(api = api.name, code = ?answer.code, "tenant token refused; refreshing it and retrying once");
        self.tokens.discard(&token).await;
        let token = self.tenant_token().await?;
        self.exchange(api, build().header(AUTHORIZATION, bearer(&token)))
            .await
    }

    /// Sends one request and classifies the answer. Logs the outcome, never the headers.
    async fn exchange(&self, api: Api, request: RequestBuilder) -> Result<Value, LarkError> {
        let started = Instant::now();
        let result = self.exchange_inner(api, request).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(_) => tracing::debug!(api = api.name, elapsed_ms, "lark call ok"),
            Err(e) => {
                tracing::debug!(api = api.name, elapsed_ms, reason = e.reason(), error = %e, "lark call failed")
            }
        }
        if let Some(observe) = &self.observer {
            observe(api.name, result.as_ref().map(drop));
        }
        result
    }

    async fn exchange_inner(&self, api: Api, request: RequestBuilder) -> Result<Value, LarkError> {
        let response = request.send().await.map_err(|e| LarkError::from_reqwest(&e))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| LarkError::from_reqwest(&e))?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if !serde_json::from_slice::<Value>(&body).is_ok_and(|v| v.is_object()) {
            // The body is for whoever reads the server log, never for API answers (it may come
            // from a host that is not Lark).
            tracing::warn!(api = api.name, http_status = status, body = %error::snippet(&body), "Lark answered with something that is not its JSON");
        }
        let exchange = Exchange {
            http_status: status,
            ratelimit_reset: header("x-ogw-ratelimit-reset"),
            header_log_id: header("x-tt-logid").or_else(|| header("x-request-id")),
            api_scope: api.scope,
        };
        error::check(&exchange, &body)
    }
}

fn bearer(token: &Secret) -> String {
    format!("Bearer {}", token.expose())
}

fn json_body(request: RequestBuilder, body: &Value) -> RequestBuilder {
    request
        .header(CONTENT_TYPE, "application/json; charset=utf-8")
        .body(body.to_string())
}

/// The answer's `data` as `T`.
#[derive(serde::Deserialize)]
struct ShareLink {
    share_link: String,
}

fn data<T: DeserializeOwned>(api: Api, mut answer: Value) -> Result<T, LarkError> {
    let data = answer.get_mut("data").map(Value::take).unwrap_or(Value::Null);
    parse(api, data)
}

fn parse<T: DeserializeOwned>(api: Api, value: Value) -> Result<T, LarkError> {
    serde_json::from_value(value).map_err(|e| LarkError::MalformedResponse {
        http_status: 200,
        cause: format!("{} answer: {e}", api.name),
    })
}

/// Follows `page_token`s and refuses a chain that would never end.
#[derive(Debug, Default)]
struct Pager {
    seen: HashSet<String>,
}

impl Pager {
    /// The token of the page after `page`, `None` after the last page.
    fn next(&mut self, page: &ChatPage) -> Result<Option<String>, LarkError> {
        if !page.has_more {
            return Ok(None);
        }
        let broken = |cause: &str| LarkError::MalformedResponse {
            http_status: 200,
            cause: format!("{}: {cause}", LIST_CHATS.name),
        };
        let token = page
            .page_token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| broken("has_more without a page_token"))?;
        if self.seen.len() >= MAX_CHAT_PAGES {
            return Err(broken("too many pages"));
        }
        if !self.seen.insert(token.clone()) {
            return Err(broken("a page_token repeated"));
        }
        Ok(Some(token))
    }
}

/// Splits look-ups into calls of at most 50 emails and 50 mobiles each.
fn lookup_batches<'a>(emails: &'a [String], mobiles: &'a [String]) -> Vec<(&'a [String], &'a [String])> {
    let calls = emails
        .len()
        .div_ceil(MAX_IDS_PER_CALL)
        .max(mobiles.len().div_ceil(MAX_IDS_PER_CALL));
    let slice = |all: &'a [String], i: usize| {
        let start = (i * MAX_IDS_PER_CALL).min(all.len());
        &all[start..(start + MAX_IDS_PER_CALL).min(all.len())]
    };
    (0..calls)
        .map(|i| (slice(emails, i), slice(mobiles, i)))
        .collect()
}

#[cfg(test)]
mod tests;
