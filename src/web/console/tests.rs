//! The console's security and API, through its router with a fake farm: no network.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use herd_checkers::lifecycle::NodeState;
use herd_config::FarmConfig;
use herd_membership::snapshot::{NodeSnapshot, Snapshot};
use herd_membership::wire::State;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{router, ConsoleState, Secret};
use crate::control::Reply;
use crate::farm_access::{FarmAccess, FarmCommand, FarmReport, NodeReport};
use crate::status::{Restarts, Status};
use crate::timeline::{Event, EventKind};

const SECRET: &str = "correct horse battery staple";
const NODES: [&str; 3] = ["alpha", "bravo", "charlie"];
const CONFIG: &str = r#"[farm]
name = "web"
vip = ["198.18.0.100"]
interface = "eth0"
buckets = 64
hash_key = "00112233445566778899aabbccddeeff"
port = 7400

[[node]]
name = "alpha"
address = "198.18.0.1"

[[node]]
name = "bravo"
address = "198.18.0.2"

[[node]]
name = "charlie"
address = "198.18.0.3"
weight = 2

[[rule]]
protocol = "tcp"
ports = ["80"]
"#;

/// A farm of three nodes up, which records the commands it is given.
#[derive(Default)]
struct FakeFarm {
    commands: Mutex<Vec<String>>,
}

impl FakeFarm {
    fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
}

impl FarmAccess for FakeFarm {
    fn report(&self) -> FarmReport {
        FarmReport {
            gathered_by: "alpha".into(),
            at_ms: 1_700_000_000_000,
            nodes: NODES
                .iter()
                .enumerate()
                .map(|(index, &name)| NodeReport {
                    name: name.into(),
                    address: SocketAddr::from(([198, 18, 0, index as u8 + 1], 7400)),
                    status: Some(status(name)),
                    timeline: vec![Event {
                        at_ms: 1_700_000_000_000 - index as u64,
                        node: name.into(),
                        kind: EventKind::State,
                        text: "starting → up".into(),
                    }],
                    error: None,
                })
                .collect(),
        }
    }

    fn command(&self, node: &str, command: FarmCommand, origin: &str) -> anyhow::Result<Reply> {
        self.commands
            .lock()
            .unwrap()
            .push(format!("{command:?} {node} for {origin}"));
        Ok(Reply::Done(format!("{node}: {command:?} under way")))
    }

    fn roll(&self, command: FarmCommand, origin: &str) -> anyhow::Result<String> {
        self.commands
            .lock()
            .unwrap()
            .push(format!("roll {command:?} for {origin}"));
        Ok("rolling restart under way".into())
    }
}

pub(super) fn status(name: &str) -> Status {
    Status {
        node: name.into(),
        farm: "web".into(),
        mode: "xdp".into(),
        pid: 1,
        state: NodeState::Up,
        reason: None,
        since_ms_ago: 0,
        restarts: Restarts {
            recent: 0,
            limit: 3,
            within_s: 600,
            total: 0,
        },
        checks: Vec::new(),
        unseen_listeners: Vec::new(),
        drained: false,
        farm_commands: Default::default(),
        membership: membership(name),
    }
}

/// The membership of `local`, the three nodes up, owning the buckets in turn.
fn membership(local: &str) -> Snapshot {
    Snapshot {
        state: State::Up,
        incarnation: 1,
        epoch: 3,
        agreed: true,
        quorum: true,
        buckets: 64,
        nodes: NODES
            .iter()
            .map(|&name| NodeSnapshot {
                name: name.into(),
                local: name == local,
                alive: true,
                state: Some(State::Up),
                incarnation: Some(1),
                buckets: if name == "charlie" { 32 } else { 16 },
                heard_ms_ago: None,
                delay_ms: None,
            })
            .collect(),
        drain: None,
        stats: Default::default(),
        refused: Default::default(),
        join_held: None,
        traffic: Default::default(),
        bucket_owners: (0..64u16).map(|bucket| bucket % 3).collect(),
        draining_buckets: (0..64).map(|bucket| bucket == 5).collect(),
    }
}

struct Fixture {
    farm: Arc<FakeFarm>,
    router: Router,
}

fn fixture_lasting(lifetime: Duration) -> Fixture {
    let farm = Arc::new(FakeFarm::default());
    let config = FarmConfig::parse(CONFIG, Path::new("herd.toml")).unwrap();
    let mut state = ConsoleState::new(
        Secret::parse(SECRET).unwrap(),
        Arc::clone(&farm) as Arc<dyn FarmAccess>,
        "alpha".into(),
        Arc::new(config),
        Arc::new(ArcSwap::from_pointee(membership("alpha"))),
    );
    state.session_lifetime = lifetime;
    Fixture {
        farm,
        router: router(state),
    }
}

fn fixture() -> Fixture {
    fixture_lasting(super::session::LIFETIME)
}

/// A request from a client at `198.18.0.50`.
fn request(method: Method, uri: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .extension(ConnectInfo(SocketAddr::from(([198, 18, 0, 50], 40000))))
}

async fn send(router: &Router, request: Request<Body>) -> Response {
    router.clone().oneshot(request).await.unwrap()
}

async fn body_text(response: Response) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn login(router: &Router, secret: &str) -> Response {
    let form = format!("secret={}", secret.replace(' ', "+"));
    send(
        router,
        request(Method::POST, "/login")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form))
            .unwrap(),
    )
    .await
}

/// A session: its cookie (`name=value`) and its CSRF token.
struct LoggedIn {
    cookie: String,
    csrf: String,
}

async fn logged_in(router: &Router) -> LoggedIn {
    let response = login(router, SECRET).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let set_cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = set_cookie.split(';').next().unwrap().to_owned();
    let page = body_text(
        send(
            router,
            request(Method::GET, "/")
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap(),
        )
        .await,
    )
    .await;
    let csrf = page
        .split(r#"name="csrf-token" content=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page holds its CSRF token")
        .to_owned();
    LoggedIn { cookie, csrf }
}

/// Every endpoint, with the method it takes.
const ENDPOINTS: [(&str, &str); 9] = [
    ("GET", "/"),
    ("GET", "/assets/console.js"),
    ("GET", "/api/farm"),
    ("GET", "/api/events"),
    ("GET", "/api/whois?client=198.51.100.7"),
    ("POST", "/api/nodes/bravo/drain"),
    ("POST", "/api/nodes/bravo/stop"),
    ("POST", "/api/roll/restart"),
    ("POST", "/logout"),
];

#[tokio::test]
async fn without_a_session_nothing_is_shown_or_done() {
    let fixture = fixture();
    let forged = "herd_session=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    for cookie in [None, Some(forged)] {
        for (method, uri) in ENDPOINTS {
            let mut asked = request(method.parse().unwrap(), uri).header("x-csrf-token", "0");
            if let Some(cookie) = cookie {
                asked = asked.header(header::COOKIE, cookie);
            }
            let response = send(&fixture.router, asked.body(Body::empty()).unwrap()).await;
            let status = response.status();
            let location = response.headers().get(header::LOCATION).cloned();
            let body = body_text(response).await;
            if uri == "/" {
                assert_eq!(status, StatusCode::SEE_OTHER, "{method} {uri}");
                assert_eq!(location.unwrap(), "/login");
            } else {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {body}");
            }
            for name in NODES {
                assert!(!body.contains(name), "{method} {uri} leaks {name}: {body}");
            }
        }
    }
    assert_eq!(fixture.farm.commands(), Vec::<String>::new());
}

#[tokio::test]
async fn the_login_page_and_the_style_need_no_session_and_show_no_farm() {
    let fixture = fixture();
    for uri in ["/login", "/assets/console.css"] {
        let response = send(
            &fixture.router,
            request(Method::GET, uri).body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let body = body_text(response).await;
        for name in NODES {
            assert!(!body.contains(name), "{uri} leaks {name}");
        }
        if uri == "/login" {
            assert!(body.contains(r#"id="secret""#) && body.contains(r#"id="login""#));
            assert!(!body.contains("login-error"));
        }
    }
}

#[tokio::test]
async fn a_right_secret_gives_a_strict_cookie() {
    let fixture = fixture();
    let response = login(&fixture.router, SECRET).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/");
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert!(attributes[0].starts_with("herd_session="), "{cookie}");
    assert_eq!(attributes[0].len(), "herd_session=".len() + 64, "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(
            attributes.contains(&attribute),
            "{attribute} missing: {cookie}"
        );
    }
    let session = logged_in(&fixture.router).await;
    let response = send(
        &fixture.router,
        request(Method::GET, "/api/farm")
            .header(header::COOKIE, &session.cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
    let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    let farm: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert_eq!(farm["states"], serde_json::json!(["up", "up", "up"]));
    assert_eq!(farm["weights"], serde_json::json!([1, 1, 2]));
    assert_eq!(farm["buckets"]["owners"].as_array().unwrap().len(), 64);
    assert_eq!(farm["buckets"]["owners"][4], 1);
    assert_eq!(farm["buckets"]["draining"], serde_json::json!([5]));
    assert_eq!(farm["timeline"].as_array().unwrap().len(), 3);
    assert_eq!(
        farm["report"]["nodes"][0]["timeline"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn a_login_form_that_does_not_arrive_in_time_is_answered_408() {
    let farm = Arc::new(FakeFarm::default());
    let mut state = ConsoleState::new(
        Secret::parse(SECRET).unwrap(),
        farm as Arc<dyn FarmAccess>,
        "alpha".into(),
        Arc::new(FarmConfig::parse(CONFIG, Path::new("herd.toml")).unwrap()),
        Arc::new(ArcSwap::from_pointee(membership("alpha"))),
    );
    state.login_deadline = Duration::from_millis(100);
    let router = router(state);
    // A form announced and never sent: a client holding its connection open.
    let never = futures_util::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
    let response = tokio::time::timeout(
        Duration::from_secs(5),
        send(
            &router,
            request(Method::POST, "/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(header::CONTENT_LENGTH, "64")
                .body(Body::from_stream(never))
                .unwrap(),
        ),
    )
    .await
    .expect("the console gives up on the form");
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(login(&router, SECRET).await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_the_sixth_failure_waits() {
    let fixture = fixture();
    for attempt in 1..=5 {
        let response = login(&fixture.router, "not the secret at all").await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        let page = body_text(response).await;
        assert!(page.contains(r#"id="login-error""#) && page.contains("Wrong secret"));
    }
    // Even the right secret waits now.
    let response = login(&fixture.router, SECRET).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    assert!(body_text(response).await.contains("Too many failed logins"));
}

#[tokio::test]
async fn a_post_without_the_right_csrf_token_changes_nothing() {
    let fixture = fixture();
    let session = logged_in(&fixture.router).await;
    for csrf in [None, Some("0".repeat(64)), Some(session.cookie.clone())] {
        for uri in ["/api/nodes/bravo/drain", "/api/roll/restart", "/logout"] {
            let mut asked = request(Method::POST, uri).header(header::COOKIE, &session.cookie);
            if let Some(csrf) = &csrf {
                asked = asked.header("x-csrf-token", csrf);
            }
            let response = send(&fixture.router, asked.body(Body::empty()).unwrap()).await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{uri} {csrf:?}");
        }
    }
    assert_eq!(fixture.farm.commands(), Vec::<String>::new());
    // GET never changes anything either.
    let response = send(
        &fixture.router,
        request(Method::GET, "/api/nodes/bravo/drain")
            .header(header::COOKIE, &session.cookie)
            .header("x-csrf-token", &session.csrf)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(fixture.farm.commands(), Vec::<String>::new());
    // The session is still open: the failed logouts did not end it.
    let response = send(
        &fixture.router,
        request(Method::GET, "/api/farm")
            .header(header::COOKIE, &session.cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_post_with_the_csrf_token_is_carried_out() {
    let fixture = fixture();
    let session = logged_in(&fixture.router).await;
    let post = |uri: &str| {
        request(Method::POST, uri)
            .header(header::COOKIE, &session.cookie)
            .header("x-csrf-token", &session.csrf)
            .body(Body::empty())
            .unwrap()
    };
    let response = send(&fixture.router, post("/api/nodes/bravo/drain")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body_text(response).await.contains("bravo: Drain under way"));
    let response = send(&fixture.router, post("/api/nodes/zulu/drain")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = send(&fixture.router, post("/api/nodes/bravo/explode")).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = send(&fixture.router, post("/api/roll/restart")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        fixture.farm.commands(),
        [
            "Drain bravo for the console of alpha (from 198.18.0.50:40000)",
            "roll Restart for the console of alpha (from 198.18.0.50:40000)",
        ]
    );
    let response = send(&fixture.router, post("/logout")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let response = send(&fixture.router, post("/api/nodes/bravo/drain")).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(fixture.farm.commands().len(), 2);
}

#[tokio::test]
async fn an_expired_session_is_refused() {
    let fixture = fixture_lasting(Duration::ZERO);
    let response = login(&fixture.router, SECRET).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let response = send(
        &fixture.router,
        request(Method::GET, "/api/farm")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = send(
        &fixture.router,
        request(Method::GET, "/")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn whois_answers_from_the_current_view() {
    let fixture = fixture();
    let session = logged_in(&fixture.router).await;
    let ask = |query: &str| {
        request(Method::GET, &format!("/api/whois?{query}"))
            .header(header::COOKIE, &session.cookie)
            .body(Body::empty())
            .unwrap()
    };
    let response = send(
        &fixture.router,
        ask("client=198.51.100.7&proto=tcp&port=80"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer: serde_json::Value = serde_json::from_str(&body_text(response).await).unwrap();
    assert!(
        answer["text"].as_str().unwrap().contains("of 64\nowner: "),
        "{answer}"
    );
    let response = send(&fixture.router, ask("client=alpha")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(body_text(response).await.contains("not a client address"));
}

#[tokio::test]
async fn the_event_stream_sends_the_farm() {
    let fixture = fixture();
    let session = logged_in(&fixture.router).await;
    let response = send(
        &fixture.router,
        request(Method::GET, "/api/events")
            .header(header::COOKIE, &session.cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut received = String::new();
    let first = tokio::time::timeout(Duration::from_secs(10), async {
        while !received.contains("\n\n") {
            let frame = body.frame().await.expect("the stream goes on").unwrap();
            if let Ok(data) = frame.into_data() {
                received.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    })
    .await;
    assert!(first.is_ok(), "no event within 10 s: {received:?}");
    assert!(received.starts_with("event: farm\ndata: {"), "{received}");
    let data = received
        .lines()
        .nth(1)
        .unwrap()
        .trim_start_matches("data: ");
    let farm: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(farm["report"]["nodes"][2]["name"], "charlie");
}
