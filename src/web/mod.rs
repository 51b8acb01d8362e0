//! The daemon's web servers: `/metrics` and `/healthz` (`[admin] metrics`) and the console
//! (`[admin] console`), each an axum [`Router`] on a listener of its own, all served by one
//! tokio runtime on the thread that calls [`Web::run`].
//!
//! axum rather than a smaller server such as `tiny_http`: the console needs what those do not
//! have (cookies, forms, JSON, server-sent events, routing with extractors), and hyper under
//! axum gives what the metrics endpoint needs most, a deadline on each request head so that a
//! silent client cannot hold a connection, without a thread per connection.
//!
//! Each listener is bound by [`Listener::bind`] before the serving starts, so that a taken
//! address is an error of `herd run` itself, naming the key.

pub mod console;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::{watch, Semaphore};

/// How long a client has to send its whole request head: far more than a scraper, a load
/// balancer or a browser on a live network needs, and short enough that a silent client holds
/// a connection for seconds only.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest request head (request line and headers) read, the least hyper takes: a
/// scraper's or a load balancer's is a few hundred bytes, a browser's a kilobyte or two.
const MAX_HEAD: usize = 8192;

/// The most connections served at once on each listener; more are closed unanswered, so that a
/// flood of connections costs a bounded amount of memory. Each open console page holds one for
/// its live updates.
const MAX_CONNECTIONS: usize = 64;

/// The most threads that run blocking work for the handlers at once (asking the daemon for its
/// status, which may take seconds when it is busy); more such work waits for one.
const MAX_BLOCKING_THREADS: usize = 8;

/// How long the answers under way at the shutdown have to finish, and the blocking work to
/// end, before they are dropped: a console's live updates never finish by themselves.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How long an accepting task rests after a failed accept, rather than spin on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listening socket for one of the servers, bound before the serving starts.
pub struct Listener {
    socket: std::net::TcpListener,
    /// What it serves, for logs: `the metrics`.
    what: &'static str,
}

impl Listener {
    /// Listens on `address`, whose port the kernel picks when it is 0, for the server that
    /// `what` names (`the metrics`) and whose address is the value of `key` (`[admin]
    /// metrics`), both for the error when it cannot.
    pub fn bind(address: SocketAddr, what: &'static str, key: &str) -> anyhow::Result<Self> {
        let context = || format!("cannot serve {what} on {address} ({key})");
        let socket = std::net::TcpListener::bind(address).with_context(context)?;
        // tokio takes only non-blocking sockets.
        socket.set_nonblocking(true).with_context(context)?;
        Ok(Self { socket, what })
    }

    /// The address it listens on.
    pub fn address(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// Ends [`Web::run`] when [`Stop::stop`] is called or when it is dropped.
pub struct Stop(watch::Sender<bool>);

impl Stop {
    /// Stops the servers: no new connection is taken, and the answers under way have
    /// [`SHUTDOWN_GRACE`] to finish.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// The servers to run: each listener with the router that answers on it.
pub struct Web {
    sites: Vec<(Listener, Router)>,
    stopped: watch::Receiver<bool>,
}

impl Web {
    /// No server yet, and what stops them once they run.
    pub fn new() -> (Self, Stop) {
        let (stop, stopped) = watch::channel(false);
        let web = Self {
            sites: Vec::new(),
            stopped,
        };
        (web, Stop(stop))
    }

    /// Serves `router` on `listener` once running.
    pub fn serve(&mut self, listener: Listener, router: Router) {
        self.sites.push((listener, router));
    }

    /// Serves every listener on a single-threaded tokio runtime on the calling thread until
    /// the [`Stop`] is used or dropped, then lets the answers under way finish for
    /// [`SHUTDOWN_GRACE`] and drops the rest.
    pub fn run(self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .thread_name("herd-web-block")
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .build()
            .context("cannot start the web servers' runtime")?;
        let served = runtime.block_on(async {
            let mut sites = tokio::task::JoinSet::new();
            for (listener, router) in self.sites {
                let what = listener.what;
                let socket = tokio::net::TcpListener::from_std(listener.socket)
                    .with_context(|| format!("cannot serve {what}"))?;
                sites.spawn(serve_site(what, socket, router, self.stopped.clone()));
            }
            while let Some(site) = sites.join_next().await {
                site.context("a web server failed")?;
            }
            anyhow::Ok(())
        });
        // Connections still open after the grace (a console's live updates) are dropped with
        // the runtime; a status asked for on a blocking thread is given up on.
        runtime.shutdown_timeout(SHUTDOWN_GRACE);
        served
    }
}

/// Serves `router` on `listener` until `stopped`, every connection a task of its own, then
/// waits at most [`SHUTDOWN_GRACE`] for the answers under way.
async fn serve_site(
    what: &'static str,
    listener: tokio::net::TcpListener,
    router: Router,
    mut stopped: watch::Receiver<bool>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    // One request a connection, closed after its answer, as scrapers and load balancers expect
    // of a health endpoint; the head's deadline needs hyper's timer.
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .title_case_headers(true);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|stopped| *stopped) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!("{what}: cannot accept a connection: {error}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!("{what}: {MAX_CONNECTIONS} connections already; one closed");
            continue;
        };
        // The console limits failed logins by the client's address, and logs it.
        let service = TowerToHyperService::new(router.clone().layer(Extension(ConnectInfo(peer))));
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(error) = connection.await {
                tracing::debug!("{what}: {error}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("{what}: answers still under way at the shutdown were dropped");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    use axum::routing::get;

    use super::*;

    /// The answer to `GET path` on `address`, whole.
    fn get_text(address: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(address).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(stream, "GET {path} HTTP/1.1\r\nHost: herd\r\n\r\n").expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        answer
    }

    #[test]
    fn every_listener_is_served_with_its_own_router_until_the_stop() {
        let (mut web, stop) = Web::new();
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("address");
        let mut addresses = Vec::new();
        for name in ["first", "second"] {
            let listener = Listener::bind(loopback, "a test server", "test").expect("bind");
            addresses.push(listener.address().expect("address"));
            web.serve(
                listener,
                Router::new().route("/name", get(move || async move { name })),
            );
        }
        let running = std::thread::spawn(move || web.run());
        for (address, name) in addresses.iter().zip(["first", "second"]) {
            let answer = get_text(*address, "/name");
            assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
            assert!(answer.ends_with(&format!("\r\n\r\n{name}")), "{answer}");
        }
        // A silent client does not hold the shutdown back beyond the grace.
        let _silent = TcpStream::connect(addresses[0]).expect("connect");
        let stopping = Instant::now();
        stop.stop();
        running.join().expect("no panic").expect("served");
        assert!(
            stopping.elapsed() < SHUTDOWN_GRACE * 3,
            "{:?}",
            stopping.elapsed()
        );
        for address in addresses {
            assert!(
                TcpStream::connect(address).is_err(),
                "{address} still listens"
            );
        }
    }

    #[test]
    fn each_request_carries_its_clients_address() {
        let (mut web, stop) = Web::new();
        let address = "127.0.0.1:0".parse().expect("address");
        let listener = Listener::bind(address, "a test server", "test").expect("bind");
        let address = listener.address().expect("address");
        web.serve(
            listener,
            Router::new().route(
                "/peer",
                get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
            ),
        );
        let running = std::thread::spawn(move || web.run());
        let mut stream = TcpStream::connect(address).expect("connect");
        let local = stream.local_addr().expect("local address");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(stream, "GET /peer HTTP/1.1\r\nHost: herd\r\n\r\n").expect("write");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read");
        stop.stop();
        running.join().expect("no panic").expect("served");
        assert!(answer.ends_with(&format!("\r\n\r\n{local}")), "{answer}");
    }

    #[test]
    fn a_client_that_sends_nothing_is_closed_after_the_head_deadline() {
        let (mut web, stop) = Web::new();
        let address = "127.0.0.1:0".parse().expect("address");
        let listener = Listener::bind(address, "a test server", "test").expect("bind");
        let address = listener.address().expect("address");
        web.serve(listener, Router::new());
        let running = std::thread::spawn(move || web.run());
        let mut silent = TcpStream::connect(address).expect("connect");
        silent
            .set_read_timeout(Some(HEAD_TIMEOUT * 5))
            .expect("timeout");
        let connected = Instant::now();
        let mut answer = Vec::new();
        let read = silent.read_to_end(&mut answer);
        let held = connected.elapsed();
        stop.stop();
        running.join().expect("no panic").expect("served");
        assert!(read.is_ok(), "still open after {held:?}: {read:?}");
        assert!(held < HEAD_TIMEOUT * 2, "{held:?}");
    }

    #[test]
    fn dropping_the_stop_stops_the_servers() {
        let (mut web, stop) = Web::new();
        let address = "127.0.0.1:0".parse().expect("address");
        let listener = Listener::bind(address, "a test server", "test").expect("bind");
        web.serve(listener, Router::new());
        drop(stop);
        web.run().expect("served");
    }
}
