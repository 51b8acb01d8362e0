//! The metrics and health endpoint, `[admin] metrics`: `GET /metrics` answers with the node's
//! [`Status`] in the Prometheus text format (version 0.0.4, made by
//! [`crate::daemon::metrics::render`]) and `GET /healthz` with 200 while the node serves its
//! share, 503 otherwise: the health check a cloud load balancer in front of a farm of cloud
//! machines polls. Neither asks for a login.
//!
//! Each answer asks the daemon for the status the way the control socket does, over the same
//! channel, so a scrape sees what `herd status` would show at that moment.

use std::time::Duration;

use axum::extract::State;
use axum::http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode, Uri};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use crossbeam_channel::{RecvTimeoutError, SendTimeoutError, Sender};
use herd_checkers::lifecycle::NodeState;
use herd_membership::wire::State as MemberState;

use crate::control::{Incoming, Reply, Request};
use crate::daemon::metrics::render;
use crate::status::Status;

/// What [`super::Listener::bind`] names the metrics server in its errors and logs.
pub const WHAT: &str = "the metrics";

/// The key whose value is the metrics server's address.
pub const KEY: &str = "[admin] metrics";

/// The content type of the Prometheus text format.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long the daemon has to take the request for its status, and then to answer it. Shorter
/// than the usual health check timeouts of cloud load balancers (often 5 s), so they get a 503
/// rather than nothing.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// `/metrics` and `/healthz`, each answer made from the status the daemon gives over
/// `requests`; every other path is 404, every method but `GET` and `HEAD` 405, and nothing is
/// to be cached.
pub fn router(requests: Sender<Incoming>) -> Router {
    Router::new()
        .route("/metrics", get(metrics).fallback(not_allowed))
        .route("/healthz", get(healthz).fallback(not_allowed))
        .fallback(not_found)
        .layer(map_response(no_store))
        .with_state(requests)
}

/// `GET /metrics`: the status in the Prometheus text format, or 503 and why it cannot be had.
async fn metrics(State(requests): State<Sender<Incoming>>) -> Response {
    with_status(requests, |status| match status {
        Ok(status) => ([(CONTENT_TYPE, METRICS_TYPE)], render(&status)).into_response(),
        Err(why) => unavailable(format!("{why}\n")),
    })
    .await
}

/// `GET /healthz`: 200 while the node serves its share, otherwise 503 and why not.
async fn healthz(State(requests): State<Sender<Incoming>>) -> Response {
    with_status(requests, |status| match status {
        Ok(status) if status.serving() => "up\n".into_response(),
        Ok(status) => unavailable(not_serving(&status)),
        Err(why) => unavailable(format!("{why}\n")),
    })
    .await
}

/// The answer `answer` makes from the daemon's status, asked for over `requests` on a blocking
/// thread: the wait for the daemon, up to twice [`STATUS_TIMEOUT`], must not hold up the other
/// connections.
async fn with_status(
    requests: Sender<Incoming>,
    answer: impl FnOnce(Result<Status, &'static str>) -> Response + Send + 'static,
) -> Response {
    tokio::task::spawn_blocking(move || answer(fetch(&requests)))
        .await
        // Only when the runtime stops under it.
        .unwrap_or_else(|_| unavailable("herd is stopping\n".to_owned()))
}

/// A 503 with `body`.
fn unavailable(body: String) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

/// The answer to a method other than `GET` and `HEAD`.
async fn not_allowed(method: Method, uri: Uri) -> Response {
    let body = format!("{method} is not allowed on {}; use GET\n", uri.path());
    (StatusCode::METHOD_NOT_ALLOWED, [(ALLOW, "GET, HEAD")], body).into_response()
}

/// The answer to any other path.
async fn not_found(uri: Uri) -> Response {
    let body = format!("{} is not here; try /metrics or /healthz\n", uri.path());
    (StatusCode::NOT_FOUND, body).into_response()
}

/// Marks `response` as not to be cached: every answer is the state of the moment.
async fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Asks the daemon for its status over `requests`, or says why it cannot be had.
fn fetch(requests: &Sender<Incoming>) -> Result<Status, &'static str> {
    const STOPPING: &str = "herd is stopping";
    const SILENT: &str = "herd did not answer in time";
    let (sender, receiver) = crossbeam_channel::bounded(1);
    requests
        .send_timeout((Request::Status, sender), STATUS_TIMEOUT)
        .map_err(|error| match error {
            SendTimeoutError::Timeout(_) => SILENT,
            SendTimeoutError::Disconnected(_) => STOPPING,
        })?;
    match receiver.recv_timeout(STATUS_TIMEOUT) {
        Ok(Reply::Status(status)) => Ok(*status),
        Ok(_) => Err("herd answered something else than a status"),
        Err(RecvTimeoutError::Timeout) => Err(SILENT),
        Err(RecvTimeoutError::Disconnected) => Err(STOPPING),
    }
}

/// Why a node that does not serve its share does not, for the body of a 503.
fn not_serving(status: &Status) -> String {
    let snapshot = &status.membership;
    let why = if status.state != NodeState::Up {
        match &status.reason {
            Some(reason) => format!("{}: {reason}", status.state),
            None => status.state.to_string(),
        }
    } else if let Some(why) = &snapshot.join_held {
        format!("up, but refused by the farm: {why}")
    } else if snapshot.state != MemberState::Up {
        format!("up, but {} in the farm", snapshot.state)
    } else if !snapshot.quorum {
        "up, but its side of the farm holds no majority of the weight (quorum lost)".to_owned()
    } else {
        format!("up, but owns none of the {} buckets", snapshot.buckets)
    };
    format!("{why}\n")
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Instant;

    use super::*;
    use crate::daemon::metrics::tests::{samples, status};
    use crate::web::{Listener, Stop, Web, HEAD_TIMEOUT, MAX_HEAD};

    /// A metrics server on a thread of its own, stopped and joined when dropped.
    struct Running {
        address: SocketAddr,
        stop: Stop,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Running {
        /// A server sending its requests to `requests`.
        fn new(requests: Sender<Incoming>) -> Self {
            let listener =
                Listener::bind("127.0.0.1:0".parse().expect("address"), WHAT, KEY).expect("bind");
            let address = listener.address().expect("address");
            let (mut web, stop) = Web::new();
            web.serve(listener, router(requests));
            let thread = std::thread::spawn(move || web.run().expect("serve"));
            Self {
                address,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            self.stop.stop();
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// A server whose daemon answers every request with `status`.
    fn server(status: Status) -> Running {
        let (requests, incoming) = crossbeam_channel::unbounded::<Incoming>();
        // Ends once the server, which holds the requests' sender, has stopped.
        std::thread::spawn(move || {
            for (request, reply) in incoming {
                assert_eq!(request, Request::Status);
                let _ = reply.send(Reply::Status(Box::new(status.clone())));
            }
        });
        Running::new(requests)
    }

    /// Sends `request` as is to `address`; the answer's status code, headers and body.
    fn send(address: SocketAddr, request: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream.write_all(request.as_bytes()).expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        // hyper answers in the version of the request, 1.0 or 1.1.
        let code = head
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| head.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {answer:?}"));
        (code, head.to_owned(), body.to_owned())
    }

    /// `GET path` on `address`.
    fn get(address: SocketAddr, path: &str) -> (u16, String, String) {
        send(
            address,
            &format!("GET {path} HTTP/1.1\r\nHost: herd\r\nAccept: */*\r\n\r\n"),
        )
    }

    #[test]
    fn metrics_are_served_in_the_text_format() {
        let running = server(status());
        let address = running.address;
        let (code, head, body) = get(address, "/metrics");
        assert_eq!(code, 200, "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"),
            "{head}"
        );
        assert!(
            head.contains(&format!("\r\nContent-Length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("\r\nCache-Control: no-store"), "{head}");
        assert!(head.contains("\r\nConnection: close"), "{head}");
        assert!(
            body.lines()
                .any(|line| line == r#"herd_packets_total{outcome="accepted"} 42"#),
            "{body}"
        );
        assert_eq!(body, render(&status()));
        // A query does not change the resource, and HEAD gives the headers alone.
        assert_eq!(get(address, "/metrics?name[]=herd_serving").0, 200);
        let (code, head, body) = send(address, "HEAD /metrics HTTP/1.0\r\n\r\n");
        assert_eq!((code, body.as_str()), (200, ""), "{head}");
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nContent-Length: {}", render(&status()).len())),
            "{head}"
        );
    }

    #[test]
    fn healthz_is_200_while_the_node_serves_and_503_otherwise() {
        let (code, head, body) = get(server(status()).address, "/healthz");
        assert_eq!((code, body.as_str()), (200, "up\n"));
        assert!(
            head.contains("\r\nContent-Type: text/plain; charset=utf-8"),
            "{head}"
        );

        let mut starting = status();
        starting.state = NodeState::Starting;
        starting.reason = Some("check web is not healthy yet".into());
        let (code, _, body) = get(server(starting).address, "/healthz");
        assert_eq!(
            (code, body.as_str()),
            (503, "starting: check web is not healthy yet\n")
        );

        let mut joining = status();
        joining.membership.state = MemberState::Joining;
        let (code, _, body) = get(server(joining.clone()).address, "/healthz");
        assert_eq!(
            (code, body.as_str()),
            (503, "up, but joining in the farm\n")
        );

        let mut refused = joining;
        refused.membership.join_held =
            Some("node bravo runs a different farm configuration".into());
        let (code, _, body) = get(server(refused).address, "/healthz");
        assert_eq!(
            (code, body.as_str()),
            (
                503,
                "up, but refused by the farm: node bravo runs a different farm configuration\n"
            )
        );

        let mut without_quorum = status();
        without_quorum.membership.quorum = false;
        assert!(samples(&render(&without_quorum)).contains(&"herd_serving 0"));
        let (code, _, body) = get(server(without_quorum).address, "/healthz");
        assert_eq!(
            (code, body.as_str()),
            (
                503,
                "up, but its side of the farm holds no majority of the weight (quorum lost)\n"
            )
        );

        let mut owning_nothing = status();
        owning_nothing.membership.nodes[0].buckets = 0;
        let (code, _, body) = get(server(owning_nothing).address, "/healthz");
        assert_eq!(
            (code, body.as_str()),
            (503, "up, but owns none of the 64 buckets\n")
        );
    }

    #[test]
    fn other_paths_methods_and_garbage_are_refused() {
        let running = server(status());
        let address = running.address;
        let (code, _, body) = get(address, "/nope");
        assert_eq!(code, 404);
        assert_eq!(body, "/nope is not here; try /metrics or /healthz\n");
        let (code, head, body) = send(
            address,
            "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(code, 405);
        assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{head}");
        assert_eq!(body, "POST is not allowed on /metrics; use GET\n");
        assert_eq!(send(address, "hello\r\n\r\n").0, 400);
        // hyper refuses every version but HTTP/1.0 and 1.1 as a bad request (the hand-written
        // server answered 505), and a head too long as too large (it answered 400).
        assert_eq!(send(address, "GET /metrics HTTP/2.0\r\n\r\n").0, 400);
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(send(address, &huge).0, 431);
        // Bare line feeds are accepted.
        assert_eq!(send(address, "GET /healthz HTTP/1.1\n\n").0, 200);
    }

    #[test]
    fn without_a_daemon_everything_is_503() {
        let (requests, incoming) = crossbeam_channel::unbounded::<Incoming>();
        drop(incoming);
        let running = Running::new(requests);
        let address = running.address;
        for path in ["/healthz", "/metrics"] {
            let (code, _, body) = get(address, path);
            assert_eq!((code, body.as_str()), (503, "herd is stopping\n"), "{path}");
        }
    }

    #[test]
    fn a_silent_daemon_is_503_in_time_and_holds_up_no_other_answer() {
        // A daemon that takes every request and never answers.
        let (requests, incoming) = crossbeam_channel::unbounded::<Incoming>();
        let running = Running::new(requests);
        let address = running.address;
        let started = Instant::now();
        let slow = std::thread::spawn(move || get(address, "/healthz"));
        // The other connections are answered meanwhile, the 404 without asking the daemon.
        let (code, _, _) = get(address, "/nope");
        assert_eq!(code, 404);
        assert!(
            started.elapsed() < STATUS_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        let (code, _, body) = slow.join().expect("no panic");
        assert_eq!(
            (code, body.as_str()),
            (503, "herd did not answer in time\n")
        );
        assert!(
            started.elapsed() >= STATUS_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
        drop(incoming);
    }

    #[test]
    fn a_silent_client_neither_blocks_others_nor_stays_forever() {
        let running = server(status());
        let address = running.address;
        let mut silent = TcpStream::connect(address).expect("connect");
        let started = Instant::now();
        assert_eq!(get(address, "/healthz").0, 200);
        assert!(started.elapsed() < HEAD_TIMEOUT, "{:?}", started.elapsed());
        // The silent one is closed, unanswered, once its time is up.
        silent
            .set_read_timeout(Some(HEAD_TIMEOUT * 5))
            .expect("timeout");
        let mut answer = Vec::new();
        let closed = silent.read_to_end(&mut answer);
        assert!(matches!(closed, Ok(0)), "{closed:?} {answer:?}");
        // The server's clock for it started at its accept, a little before `started`, maybe.
        let slack = Duration::from_millis(100);
        assert!(
            started.elapsed() >= HEAD_TIMEOUT - slack,
            "{:?}",
            started.elapsed()
        );
        assert!(
            started.elapsed() < HEAD_TIMEOUT * 5,
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_taken_address_is_a_clear_error() {
        let running = server(status());
        let address = running.address;
        let error = Listener::bind(address, WHAT, KEY)
            .err()
            .expect("the port is taken");
        let shown = format!("{error:#}");
        assert!(
            shown.starts_with(&format!(
                "cannot serve the metrics on {address} ([admin] metrics): "
            )),
            "{shown}"
        );
        // The first server still answers.
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
            .expect("write");
        let mut line = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut line)
            .expect("read");
        assert_eq!(line, "HTTP/1.1 200 OK\r\n");
    }
}
