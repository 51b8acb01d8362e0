//! The console's pages and assets: the login form, the login and logout, and the page of the
//! farm with its style and script.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Form, Json};
use serde::Deserialize;
use serde_json::json;

use super::{login_limit, session, ApiSession, Changing, Console, PageSession, Peer};

const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");
const STYLE: &str = include_str!("assets/console.css");
const SCRIPT: &str = include_str!("assets/console.js");

/// Where the login page says why a login was refused.
const LOGIN_ERROR: &str = "<!--login-error-->";

/// Where the farm's page gets its session's CSRF token.
const CSRF_TOKEN: &str = "{{csrf}}";

/// Where the farm's page names the node.
const NODE_NAME: &str = "{{node}}";

/// `GET /`: the page of the farm.
pub(super) async fn index(
    State(console): State<Arc<Console>>,
    session: PageSession,
) -> Html<String> {
    // The CSRF token is hex digits; the node's name is escaped.
    Html(
        INDEX
            .replace(CSRF_TOKEN, &session.csrf)
            .replace(NODE_NAME, &escape(&console.state.node)),
    )
}

/// `GET /login`: the login form.
pub(super) async fn login_form() -> Html<String> {
    login_page(None)
}

/// What the login form sends.
#[derive(Deserialize)]
pub(super) struct LoginForm {
    secret: String,
}

/// `POST /login`: opens a session when the secret is right, unless the client's address has
/// failed too often lately.
pub(super) async fn login(
    State(console): State<Arc<Console>>,
    peer: Peer,
    Form(form): Form<LoginForm>,
) -> Response {
    let address = peer.ip();
    if let Err(wait) = console.logins.check(address) {
        // Rounded up: a client that waits as long as told is let in.
        let seconds = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        tracing::warn!(%peer, "console: refused a login: too many failed logins from this address");
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            login_page(Some(&format!(
                "Too many failed logins from this address: try again in {seconds} s."
            ))),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return response;
    }
    if !console.state.secret.matches(&form.secret) {
        console.logins.failed(address);
        tracing::warn!(%peer, "console: refused a login with a wrong secret");
        return (
            StatusCode::UNAUTHORIZED,
            login_page(Some(&format!(
                "Wrong secret. (At most {} tries a minute.)",
                login_limit::FAILURES
            ))),
        )
            .into_response();
    }
    let opened = match console.sessions.open() {
        Ok(opened) => opened,
        Err(error) => {
            tracing::warn!(%peer, "console: cannot open a session: no random numbers: {error}");
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                login_page(Some(
                    "The console cannot open a session: see the node's log.",
                )),
            )
                .into_response();
        }
    };
    console.logins.forget(address);
    tracing::info!(%peer, "console: logged in");
    let cookie = session::cookie(&opened.token, console.sessions.lifetime());
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

/// `POST /logout`: ends the session.
pub(super) async fn logout(
    State(console): State<Arc<Console>>,
    peer: Peer,
    session: Changing,
) -> Response {
    console.sessions.close(&session.token);
    tracing::info!(%peer, "console: logged out");
    (
        [(header::SET_COOKIE, session::forget_cookie())],
        Json(json!({ "ok": true, "text": "logged out" })),
    )
        .into_response()
}

/// `GET /assets/console.css`: the style of both pages (the login page's too, so it is
/// served without a session; it holds nothing of the farm).
pub(super) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

/// `GET /assets/console.js`: the farm page's script.
pub(super) async fn script(_: ApiSession) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

/// The login page, saying why the last login was refused, if it was.
fn login_page(error: Option<&str>) -> Html<String> {
    let error = error
        .map(|error| format!(r#"<p id="login-error" role="alert">{}</p>"#, escape(error)))
        .unwrap_or_default();
    Html(LOGIN.replace(LOGIN_ERROR, &error))
}

/// `text` for an HTML text node or attribute.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            c => escaped.push(c),
        }
    }
    escaped
}
