//! A console page as the measurement opens it, from the client's namespace: a logged-in
//! session (its cookie and CSRF token), its stream of `farm` events read on a thread of its
//! own, and the commands its buttons send.

use std::io::BufRead;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use herd_testbed::Netns;
use serde::Deserialize;
use ureq::Agent;

use super::sse::SseReader;

/// How long a request other than the event stream may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The session cookie's name.
const COOKIE: &str = "herd_session";
/// What precedes the CSRF token in the page.
const CSRF_META: &str = "<meta name=\"csrf-token\" content=\"";

/// A logged-in session of the console at `address`.
pub struct Session {
    netns: Netns,
    address: SocketAddr,
    agent: Agent,
    cookie: String,
    csrf: String,
}

/// A `farm` event: each node's name and state word, as the page shows them.
#[derive(Debug)]
pub struct FarmEvent {
    /// When the stream's reader had it.
    pub at: Instant,
    /// The nodes' names, in the configuration's order.
    pub nodes: Vec<String>,
    /// Their state words (`up`, `draining`, ...).
    pub states: Vec<String>,
}

impl FarmEvent {
    /// Node `name`'s state word, if the event has the node.
    pub fn state_of(&self, name: &str) -> Option<&str> {
        let index = self.nodes.iter().position(|node| node == name)?;
        self.states.get(index).map(String::as_str)
    }
}

/// The part of a `farm` event's data the measurement reads.
#[derive(Deserialize)]
struct FarmData {
    report: ReportData,
    states: Vec<String>,
}

#[derive(Deserialize)]
struct ReportData {
    nodes: Vec<NamedData>,
}

#[derive(Deserialize)]
struct NamedData {
    name: String,
}

impl Session {
    /// Logs in to the console at `address` with `secret`, from a thread in `netns`, and reads
    /// the page's CSRF token.
    pub fn login(netns: &Netns, address: SocketAddr, secret: &str) -> anyhow::Result<Self> {
        let agent: Agent = Agent::config_builder()
            .timeout_connect(Some(REQUEST_TIMEOUT))
            .timeout_recv_response(Some(REQUEST_TIMEOUT))
            .max_redirects(0)
            .max_redirects_will_error(false)
            .build()
            .into();
        let url = format!("http://{address}/login");
        let response = netns
            .run(|| agent.post(&url).send_form([("secret", secret)]))?
            .with_context(|| format!("cannot log in at {url}"))?;
        let cookie = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(|value| value.split(';').next()?.strip_prefix(&format!("{COOKIE}=")))
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "the login at {url} answered {} without a session cookie",
                    response.status()
                )
            })?;
        let mut session = Session {
            netns: netns.clone(),
            address,
            agent,
            cookie: format!("{COOKIE}={cookie}"),
            csrf: String::new(),
        };
        let page = session.get("/")?;
        session.csrf = csrf_token(&page)
            .context("the page has no CSRF token")?
            .to_owned();
        Ok(session)
    }

    /// The text of `GET path`.
    fn get(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{}{path}", self.address);
        self.netns
            .run(|| {
                self.agent
                    .get(&url)
                    .header("Cookie", &self.cookie)
                    .call()?
                    .body_mut()
                    .read_to_string()
            })?
            .with_context(|| format!("GET {url}"))
    }

    /// Sends the button `action` (`drain`, `start`, ...) of node `node` and returns once the
    /// node has answered.
    pub fn command(&self, node: &str, action: &str) -> anyhow::Result<()> {
        let url = format!("http://{}/api/nodes/{node}/{action}", self.address);
        self.netns
            .run(|| {
                self.agent
                    .post(&url)
                    .header("Cookie", &self.cookie)
                    .header("X-CSRF-Token", &self.csrf)
                    .send_empty()?
                    .body_mut()
                    .read_to_string()
            })?
            .with_context(|| format!("POST {url}"))
            .map(drop)
    }

    /// Opens the page's event stream; its `farm` events arrive on the returned stream's
    /// channel.
    pub fn events(&self) -> anyhow::Result<EventStream> {
        let url = format!("http://{}/api/events", self.address);
        let response = self
            .netns
            .run(|| {
                self.agent
                    .get(&url)
                    .header("Cookie", &self.cookie)
                    .header("Accept", "text/event-stream")
                    .call()
            })?
            .with_context(|| format!("GET {url}"))?;
        let (sender, events) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let reader = std::thread::Builder::new()
            .name("console-page".to_owned())
            .spawn(move || read_events(response.into_body().into_reader(), &sender, &stopped))
            .context("cannot start a page's reader thread")?;
        Ok(EventStream {
            events,
            stop,
            reader: Some(reader),
        })
    }
}

/// An open event stream. Dropped, it closes at its next line: the next event or the
/// server's keep-alive comment, every 10 s at most.
pub struct EventStream {
    /// The `farm` events, as they come.
    pub events: mpsc::Receiver<anyhow::Result<FarmEvent>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl EventStream {
    /// Waits up to `timeout` for an event that `matches`, skipping the others.
    pub fn wait_for(
        &self,
        timeout: Duration,
        matches: impl Fn(&FarmEvent) -> bool,
    ) -> anyhow::Result<FarmEvent> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    let event = event?;
                    if matches(&event) {
                        return Ok(event);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => bail!("no such event within {timeout:?}"),
                Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the event stream ended"),
            }
        }
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Reads `body` line by line and sends each `farm` event, until `stop` is raised or the
/// stream ends; an error ends it after being sent.
fn read_events(
    body: impl std::io::Read,
    sender: &mpsc::Sender<anyhow::Result<FarmEvent>>,
    stop: &AtomicBool,
) {
    let mut body = std::io::BufReader::new(body);
    let mut reader = SseReader::default();
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        line.clear();
        let event = match body.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => match reader.line(&line) {
                Some(event) if event.name == "farm" => farm_event(&event.data),
                _ => continue,
            },
            Err(error) => Err(anyhow::Error::new(error).context("cannot read the event stream")),
        };
        let failed = event.is_err();
        if sender.send(event).is_err() || failed {
            return;
        }
    }
}

/// The names and state words of a `farm` event's data.
fn farm_event(data: &str) -> anyhow::Result<FarmEvent> {
    let at = Instant::now();
    let farm: FarmData = serde_json::from_str(data).context("a farm event's data")?;
    Ok(FarmEvent {
        at,
        nodes: farm
            .report
            .nodes
            .into_iter()
            .map(|node| node.name)
            .collect(),
        states: farm.states,
    })
}

/// The CSRF token in a page's `<meta>` tag.
fn csrf_token(page: &str) -> Option<&str> {
    let start = page.find(CSRF_META)? + CSRF_META.len();
    let length = page[start..].find('"')?;
    Some(&page[start..start + length])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_is_read_from_its_meta_tag() {
        let page = "<head>\n<meta name=\"csrf-token\" content=\"a1b2\">\n</head>";
        assert_eq!(csrf_token(page), Some("a1b2"));
        assert_eq!(csrf_token("<head></head>"), None);
    }

    #[test]
    fn a_farm_event_gives_each_node_its_state() {
        let data = r#"{"report":{"gathered_by":"alpha","nodes":[{"name":"alpha","x":1},
            {"name":"bravo"}]},"states":["up","draining"],"buckets":{}}"#;
        let event = farm_event(data).unwrap();
        assert_eq!(event.state_of("bravo"), Some("draining"));
        assert_eq!(event.state_of("alpha"), Some("up"));
        assert_eq!(event.state_of("charlie"), None);
        assert!(farm_event("{\"states\":[]}").is_err());
    }
}
