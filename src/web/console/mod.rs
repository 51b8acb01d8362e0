//! The web console: one page that shows the whole farm live and operates it, behind a login.
//!
//! Nothing is read or changed without a session: a login with the secret of
//! `[admin] console_secret_file` opens one, kept in memory and named by a random cookie
//! (HttpOnly, SameSite=Strict, a fixed lifetime). Without a session the page redirects to the
//! login and the API answers 401. Every request that changes anything is a POST carrying the
//! session's CSRF token in `X-CSRF-Token`. Failed logins are limited per client address and
//! logged. The console reaches the farm only through [`FarmAccess`]; the page, its style and
//! its script are built into the binary.

mod api;
mod events;
mod farm_view;
mod login_limit;
mod pages;
pub mod secret;
pub mod session;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::{self, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use herd_config::FarmConfig;
use herd_membership::snapshot::Snapshot;

use crate::farm_access::FarmAccess;
use farm_view::FarmView;
use login_limit::LoginLimit;
use secret::Secret;
use session::Sessions;

/// The page may load its own script, style and data, and nothing else; no other site may
/// frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    frame-ancestors 'none'; base-uri 'none'";

/// How long a client has to send its whole login form: the server's deadline covers the
/// request head only, and a client trickling a form's bytes would otherwise hold one of the
/// few connections the console serves at once for ever.
pub const LOGIN_DEADLINE: Duration = Duration::from_secs(10);

/// What the console is made of.
pub struct ConsoleState {
    /// The secret operators log in with.
    pub secret: Secret,
    /// The farm.
    pub farm: Arc<dyn FarmAccess>,
    /// This node's name.
    pub node: String,
    /// The farm's configuration, for the `whois` box.
    pub config: Arc<FarmConfig>,
    /// This node's membership as the membership thread publishes it, for the bucket map.
    pub membership: Arc<ArcSwap<Snapshot>>,
    /// How long a session lasts.
    pub session_lifetime: Duration,
    /// How long a client has to send its login form.
    pub login_deadline: Duration,
}

impl ConsoleState {
    /// The console of node `node`, whose sessions last [`session::LIFETIME`] and whose login
    /// forms must arrive within [`LOGIN_DEADLINE`].
    pub fn new(
        secret: Secret,
        farm: Arc<dyn FarmAccess>,
        node: String,
        config: Arc<FarmConfig>,
        membership: Arc<ArcSwap<Snapshot>>,
    ) -> Self {
        Self {
            secret,
            farm,
            node,
            config,
            membership,
            session_lifetime: session::LIFETIME,
            login_deadline: LOGIN_DEADLINE,
        }
    }
}

/// The console's state while it serves.
struct Console {
    state: ConsoleState,
    sessions: Sessions,
    logins: LoginLimit,
    updates: events::Updates,
}

impl Console {
    /// The farm as the page shows it, in JSON. Asking the nodes may take seconds: it is done
    /// off the event loop.
    async fn farm_json(self: &Arc<Self>) -> anyhow::Result<String> {
        let console = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let report = console.state.farm.report();
            let snapshot = console.state.membership.load();
            serde_json::to_string(&FarmView::new(report, &console.state.config, &snapshot))
        })
        .await?
        .map_err(Into::into)
    }
}

/// The console's routes. The server must give each request its peer's address
/// (`into_make_service_with_connect_info::<SocketAddr>`): the login limit and the logs use it.
pub fn router(state: ConsoleState) -> Router {
    let login_deadline = state.login_deadline;
    let console = Arc::new(Console {
        sessions: Sessions::new(state.session_lifetime),
        logins: LoginLimit::default(),
        updates: events::Updates::default(),
        state,
    });
    Router::new()
        .route("/", get(pages::index))
        .route(
            "/login",
            get(pages::login_form)
                .post(pages::login)
                .layer(axum::middleware::from_fn(
                    move |request: axum::extract::Request, next: axum::middleware::Next| {
                        within(login_deadline, request, next)
                    },
                )),
        )
        .route("/logout", post(pages::logout))
        .route("/assets/console.css", get(pages::style))
        .route("/assets/console.js", get(pages::script))
        .route("/api/farm", get(api::farm))
        .route("/api/events", get(api::events))
        .route("/api/nodes/{node}/{action}", post(api::node_command))
        .route("/api/roll/restart", post(api::roll_restart))
        .route("/api/whois", get(api::whois))
        .layer(axum::middleware::map_response(secure))
        .with_state(console)
}

/// Answers `request` if it is done within `deadline`, reading its body included; else 408.
async fn within(
    deadline: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    tokio::time::timeout(deadline, next.run(request))
        .await
        .unwrap_or_else(|_| {
            api::error(
                StatusCode::REQUEST_TIMEOUT,
                "the request did not arrive in time",
            )
        })
}

/// Adds to every answer the headers that keep the page to itself and out of caches.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The client's address, when the server tells it.
struct Peer(Option<SocketAddr>);

impl Peer {
    /// The address for the logs and the login limit; unknown addresses share one.
    fn ip(&self) -> std::net::IpAddr {
        self.0
            .map_or(std::net::Ipv6Addr::UNSPECIFIED.into(), |peer| peer.ip())
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(peer) => write!(f, "{peer}"),
            None => f.write_str("an unknown address"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0),
        ))
    }
}

/// A request of an open session, for the API: without one, 401.
struct ApiSession {
    token: String,
}

impl FromRequestParts<Arc<Console>> for ApiSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        session_token(parts, console)
            .map(|(token, _)| ApiSession { token })
            .ok_or_else(unauthorised)
    }
}

/// A request of an open session, for a page: without one, a redirect to the login.
struct PageSession {
    csrf: String,
}

impl FromRequestParts<Arc<Console>> for PageSession {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        session_token(parts, console)
            .map(|(_, csrf)| PageSession { csrf })
            .ok_or_else(|| Redirect::to("/login").into_response())
    }
}

/// A state-changing request of an open session carrying its CSRF token: without a session,
/// 401; without the token or with another, 403.
struct Changing {
    token: String,
}

impl FromRequestParts<Arc<Console>> for Changing {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Self::Rejection> {
        let (token, csrf) = session_token(parts, console).ok_or_else(unauthorised)?;
        let given = parts
            .headers
            .get("x-csrf-token")
            .and_then(|value| value.to_str().ok());
        match given {
            Some(given) if session::same_token(given, &csrf) => Ok(Changing { token }),
            _ => Err(api::error(
                StatusCode::FORBIDDEN,
                "this request needs the session's X-CSRF-Token header: reload the page",
            )),
        }
    }
}

/// The session token of the request and its CSRF token, if its session is open.
fn session_token(parts: &Parts, console: &Console) -> Option<(String, String)> {
    let token = session::token_in(&parts.headers)?;
    let csrf = console.sessions.csrf(token)?;
    Some((token.to_owned(), csrf))
}

/// The API's answer to a request without a session: nothing but that.
fn unauthorised() -> Response {
    api::error(StatusCode::UNAUTHORIZED, "log in first")
}
