//! Homepage sessions: the OAuth callback `GET /lark/{id}/oauth/callback` and the page for each
//! way a login fails, the session a form post must carry, and `POST /lark/{id}/app/logout`.

use std::collections::HashMap;
use std::sync::Arc;

use warp::http::StatusCode;
use warp::reply::Response;

use super::{
    Lang, Visit, add_cookie, escape, internal, problem_page, redirect, session_cookie, unknown_integration,
};
use crate::homepage::{HomeSession, HomepageError, StateProblem};
use crate::services::Services;
use crate::web::error::ApiError;

/// Longest query value the callback reads (codes and states are far shorter).
const MAX_PARAM_CHARS: usize = 2048;

/// `GET /lark/{id}/oauth/callback`.
pub(super) async fn callback(
    app: Arc<Services>,
    visit: Visit,
    query: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let refuse = |reason: &str| {
        tracing::warn!(integration = %visit.integration, reason, "homepage login refused");
    };
    if app.integrations.get(&visit.integration).is_none() {
        return Ok(unknown_integration(&visit));
    }
    let param = |k: &str| {
        query
            .get(k)
            .map(String::as_str)
            .filter(|v| !v.is_empty() && v.len() <= MAX_PARAM_CHARS)
    };
    if let Some(error) = param("error") {
        refuse(if error == "access_denied" {
            "access_denied"
        } else {
            "lark_error"
        });
        return Ok(problem_page(
            &visit,
            StatusCode::FORBIDDEN,
            l.pick("你没有授权登录", "You did not allow the login"),
            l.pick(
                "飞书没有把你的身份交给值班应用，所以无法打开事件。如果是误操作，请重新登录并选择“授权”。",
                "Lark did not pass your identity to the on-call app, so it cannot show your incidents. If that was a mistake, log in again and choose Allow.",
            ),
            true,
        ));
    }
    let (Some(code), Some(state)) = (param("code"), param("state")) else {
        refuse("missing_code_or_state");
        return Ok(problem_page(
            &visit,
            StatusCode::BAD_REQUEST,
            l.pick("登录链接不完整", "The login link is incomplete"),
            l.pick(
                "这个地址缺少飞书返回的 code 或 state。请从应用主页重新登录。",
                "This address lacks the code or state Lark sends back. Start again from the homepage.",
            ),
            true,
        ));
    };
    let redirect_uri = app.integrations.urls(&visit.integration).redirect;
    match app
        .homepage
        .finish_login(&visit.integration, &redirect_uri, code, state)
        .await
    {
        Ok(login) => {
            if let Some(previous) = &visit.cookie
                && let Ok(Some(old)) = app.homepage.session(&visit.integration, previous).await
            {
                app.homepage.revoke(&old.id).await.map_err(internal)?;
            }
            let mut r = redirect(&format!("{}{}", visit.base(), login.target));
            add_cookie(
                &mut r,
                session_cookie(
                    &app,
                    &visit.integration,
                    &login.cookie,
                    crate::homepage::SESSION_LIFETIME.num_seconds(),
                ),
            );
            Ok(r)
        }
        Err(e) => {
            refuse(e.reason());
            Ok(login_problem(&app, &visit, e))
        }
    }
}

fn login_problem(app: &Services, visit: &Visit, e: HomepageError) -> Response {
    let l = visit.lang;
    let bad = StatusCode::BAD_REQUEST;
    match e {
        HomepageError::UnknownIntegration(_) => unknown_integration(visit),
        HomepageError::BadState(StateProblem::Expired) => problem_page(
            visit,
            bad,
            l.pick("登录已过期", "The login took too long"),
            l.pick("登录需在 10 分钟内完成。请重新登录。", "A login must finish within 10 minutes. Log in again."),
            true,
        ),
        HomepageError::BadState(StateProblem::Replayed) => problem_page(
            visit,
            bad,
            l.pick("登录链接已用过", "This login link was already used"),
            l.pick("每个登录链接只能用一次。请重新登录。", "Each login link works once. Log in again."),
            true,
        ),
        HomepageError::BadState(_) => problem_page(
            visit,
            bad,
            l.pick("登录链接无效", "This login link is not valid"),
            l.pick(
                "这个登录链接不是本应用发出的，或已被改动。请从应用主页重新登录。",
                "This login link was not issued by this app, or was changed. Start again from the homepage.",
            ),
            true,
        ),
        HomepageError::CodeRejected { code: Some(20010), .. } => problem_page(
            visit,
            StatusCode::FORBIDDEN,
            l.pick("你不在应用的可用范围内", "You cannot use this app yet"),
            l.pick(
                "飞书说你不在这个应用的可用范围内。请管理员在开发者后台把你加入可用范围。",
                "Lark says you are outside this app's availability. Ask your admin to add you in the Lark developer console.",
            ),
            false,
        ),
        HomepageError::CodeRejected { .. } => problem_page(
            visit,
            bad,
            l.pick("飞书拒绝了这次登录", "Lark refused this login"),
            l.pick(
                "登录码无效、已过期或已被使用。请重新登录。",
                "The login code is not valid, has expired or was already used. Log in again.",
            ),
            true,
        ),
        HomepageError::LarkUnavailable(_) => problem_page(
            visit,
            StatusCode::BAD_GATEWAY,
            l.pick("暂时连不上飞书", "Lark cannot be reached right now"),
            l.pick("请稍后重新登录。", "Log in again in a moment."),
            true,
        ),
        HomepageError::NoMember(info) => {
            let contact = app
                .homepage
                .config
                .admin_contact
                .clone()
                .unwrap_or_else(|| l.pick("值班系统的管理员", "the on-call admin").to_string());
            let mut known = vec![escape(&info.name)];
            for extra in [info.email.as_deref(), info.mobile.as_deref()].into_iter().flatten() {
                if !extra.is_empty() {
                    known.push(escape(extra));
                }
            }
            let body = match l {
                Lang::Zh => format!(
                    "你在飞书中是 <strong id=\"lark-who\">{}</strong>（open_id <code>{}</code>），但没有值班成员与之对应。请联系 <strong id=\"admin-contact\">{}</strong>，让他们用你的邮箱或手机号添加成员，然后重新打开此页。",
                    known.join("，"),
                    escape(&info.open_id),
                    escape(&contact)
                ),
                Lang::En => format!(
                    "In Lark you are <strong id=\"lark-who\">{}</strong> (open_id <code>{}</code>), but no on-call member matches you. Ask <strong id=\"admin-contact\">{}</strong> to add you as a member with your email or mobile, then open this page again.",
                    known.join(", "),
                    escape(&info.open_id),
                    escape(&contact)
                ),
            };
            problem_page(
                visit,
                StatusCode::FORBIDDEN,
                l.pick("你还不是值班成员", "You are not an on-call member yet"),
                &body,
                false,
            )
        }
        HomepageError::Incident(_) | HomepageError::Store(_) => problem_page(
            visit,
            StatusCode::INTERNAL_SERVER_ERROR,
            l.pick("出错了", "Something went wrong"),
            l.pick("值班服务出错了，请稍后重试。", "The on-call server failed; try again shortly."),
            true,
        ),
    }
}

/// A session for a form post, or the page that says why not.
pub(super) async fn form_session(
    app: &Services,
    visit: &Visit,
    form: &HashMap<String, String>,
) -> Result<HomeSession, Response> {
    let l = visit.lang;
    if app.integrations.get(&visit.integration).is_none() {
        return Err(unknown_integration(visit));
    }
    let session = match &visit.cookie {
        Some(c) => app.homepage.session(&visit.integration, c).await.ok().flatten(),
        None => None,
    };
    let Some(session) = session else {
        return Err(problem_page(
            visit,
            StatusCode::UNAUTHORIZED,
            l.pick("请先登录", "Log in first"),
            l.pick(
                "你的登录已失效。请重新登录后再操作。",
                "Your login has ended. Log in again, then try once more.",
            ),
            true,
        ));
    };
    let token = form.get("token").map(String::as_str).unwrap_or("");
    if !app.homepage.form_token_ok(&session, token) {
        tracing::warn!(integration = %visit.integration, reason = "form_token", "homepage form refused");
        return Err(problem_page(
            visit,
            StatusCode::FORBIDDEN,
            l.pick("表单已过期", "This form has expired"),
            l.pick("请刷新页面后重试。", "Reload the page and try again."),
            false,
        ));
    }
    Ok(session)
}

/// `POST /lark/{id}/app/logout`.
pub(super) async fn logout(
    app: Arc<Services>,
    visit: Visit,
    form: HashMap<String, String>,
) -> Result<Response, ApiError> {
    let l = visit.lang;
    let session = match form_session(&app, &visit, &form).await {
        Ok(s) => s,
        Err(page) => return Ok(page),
    };
    app.homepage.revoke(&session.id).await.map_err(internal)?;
    let mut r = problem_page(
        &visit,
        StatusCode::OK,
        l.pick("已退出登录", "Logged out"),
        l.pick(
            "你已退出。再次打开即可登录（也可换一个飞书账号）。",
            "You are logged out. Open the homepage again to log in (as anyone).",
        ),
        true,
    );
    add_cookie(&mut r, session_cookie(&app, &visit.integration, "", 0));
    Ok(r)
}
