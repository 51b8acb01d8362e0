//! The console in a browser: a three-node farm on a learning bridge with the console on
//! alpha, and a headless chromium in the client's namespace driven over WebDriver. The
//! browser is sent to the login, refused with a wrong secret, let in with the right one; it
//! sees the three nodes up and the bucket map; it drains bravo with its button and sees
//! bravo's state change on the page, and the test prints how long the page took.
//!
//! With `HERD_CONSOLE_SCREENSHOT=1`, the IPv4 run saves its screenshot of the console after
//! the drain to `docs/console.png`; otherwise it goes to the bed's scratch directory.
//!
//! Needs root (namespaces, XDP) and Debian's chromium and chromium-driver (`scripts/deps`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fantoccini::{Client, Locator};
use herd_config::{DataplaneMode, Protocol};
use herd_testbed::address::Family;
use herd_testbed::browser::Browser;
use herd_testbed::config::{random_hex, FarmToml, KEY};
use herd_testbed::owner::Owners;
use herd_testbed::{FarmBed, FarmPlan, Herd, HerdRun, HubKind, Offload, Uplink};
use serde_json::Value;

/// The nodes, in the plan's order.
const NODES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// The node that serves the console.
const CONSOLE_NODE: usize = 0;
/// The node drained with its button.
const DRAINED: usize = 1;
/// The console's port, on the console node's own address.
const CONSOLE_PORT: u16 = 9480;
/// The farm's buckets: one `div.bucket` each on the page.
const BUCKETS: u32 = 64;
/// How long the farm may take to settle, and the page to show a change.
const SETTLE: Duration = Duration::from_secs(15);
/// How long `herd status` is asked, every [`STATUS_POLL`], for the drained node's new state.
const STATUS_WAIT: Duration = Duration::from_secs(15);
/// How often meanwhile: a node's state change is no event outside the node.
const STATUS_POLL: Duration = Duration::from_millis(10);
/// The states a drained node's row may show: draining while its connections last, then
/// out of the farm, held (a node without connections goes through the drain at once).
const DRAINED_STATES: [&str; 3] = ["draining", "withdrawn", "drained"];

/// Whether the screenshot goes to `docs/console.png`.
const SCREENSHOT_ENV: &str = "HERD_CONSOLE_SCREENSHOT";

/// The farm: three nodes running herd, the console on one of them. Dropped in this order:
/// the herds, then the bed.
struct Farm {
    herds: Vec<Herd>,
    bed: FarmBed,
    /// The console's address.
    console: SocketAddr,
    /// The console's secret.
    secret: String,
    /// Each bucket's owner, in bucket order.
    owners: Vec<&'static str>,
}

impl Farm {
    /// Builds the farm in `family` and waits until every node has its whole share.
    fn start(family: Family) -> Self {
        let bed = FarmBed::create(&FarmPlan {
            prefix: format!("herd-console-{family}-{}", std::process::id()),
            nodes: &NODES,
            hub: HubKind::Learning,
            uplink: Uplink::Veth,
            sources: 0,
            client_offload: Offload::Default,
        })
        .expect("builds the farm's bed");
        let key = bed.bed().write_private("farm.key", KEY).unwrap();
        let secret = random_hex(16).unwrap();
        let secret_file = bed
            .bed()
            .write_private("console.secret", &format!("{secret}\n"))
            .unwrap();
        let console = SocketAddr::new(family.node(CONSOLE_NODE), CONSOLE_PORT);
        let farm = NODES.iter().enumerate().fold(
            FarmToml::new("console", DataplaneMode::Xdp)
                .vips(&[family.vip()])
                .buckets(BUCKETS),
            |farm, (node, name)| farm.node(name, family.node(node)),
        );
        let farm = farm.key_file(&key).rule(Protocol::Tcp, &[80], None);
        let config = bed.bed().write_private("farm.toml", &farm.text()).unwrap();
        // `[admin]` is the node's own, outside the farm's digest: the console node's file adds
        // it to the farm's.
        let console_config = bed
            .bed()
            .write_private("console.toml", &farm.console(console, &secret_file).text())
            .unwrap();
        let herds: Vec<Herd> = (0..NODES.len())
            .map(|node| {
                let config = if node == CONSOLE_NODE {
                    &console_config
                } else {
                    &config
                };
                let run = HerdRun::echoed(Path::new(env!("CARGO_BIN_EXE_herd")), config);
                bed.start_herd(node, &run).expect("herd runs")
            })
            .collect();
        let table = Owners::load(&config, &[true; NODES.len()]).expect("a valid configuration");
        let shares = table.shares();
        let owners: Vec<&str> = (0..BUCKETS)
            .map(|bucket| NODES[table.owner(bucket)])
            .collect();
        for (node, herd) in herds.iter().enumerate() {
            let whole = format!("all_tcp={0} non_tcp={0}", shares[node]);
            assert!(
                herd.wait_for(0, |line| line.contains(&whole), SETTLE)
                    .is_some(),
                "{} takes its share of {} buckets within {SETTLE:?}",
                NODES[node],
                shares[node]
            );
        }
        assert!(
            herds[CONSOLE_NODE]
                .wait_for(0, |line| line.contains("serving the console"), SETTLE)
                .is_some(),
            "{} serves the console within {SETTLE:?}",
            NODES[CONSOLE_NODE]
        );
        Farm {
            herds,
            bed,
            console,
            secret,
            owners,
        }
    }
}

/// Milliseconds since the Unix epoch, as the browser's `Date.now()` counts them.
fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| {
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    })
}

/// Waits, in the page, until `condition` (a JavaScript function body returning a boolean)
/// holds, re-evaluating it at each change of the page, for up to `timeout`; whether it held.
/// The condition is part of the script WebDriver runs, not compiled by the page: the console's
/// Content-Security-Policy forbids `eval` and `new Function`.
async fn page_holds(client: &Client, condition: &str, timeout: Duration) -> bool {
    let script = format!(
        r#"
        const [ms, done] = arguments;
        const holds = () => {{ try {{ return Boolean((() => {{ {condition} }})()); }} catch (e) {{ return false; }} }};
        if (holds()) {{ done(true); return; }}
        const observer = new MutationObserver(() => {{
            if (holds()) {{ observer.disconnect(); clearTimeout(timer); done(true); }}
        }});
        observer.observe(document, {{ subtree: true, childList: true, characterData: true, attributes: true }});
        const timer = setTimeout(() => {{ observer.disconnect(); done(holds()); }}, ms);
        "#
    );
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    client
        .execute_async(&script, vec![ms.into()])
        .await
        .expect("the page runs the wait")
        .as_bool()
        .unwrap_or(false)
}

/// The JavaScript expression of node `name`'s state word on the page.
fn state_cell(name: &str) -> String {
    format!(
        "(document.querySelector('#farm tr[data-node=\"{name}\"] td.state') || {{}}).textContent"
    )
}

/// Where the screenshot goes: `docs/console.png` when asked for (IPv4 only, one picture), the
/// bed's scratch directory otherwise.
fn screenshot_path(farm: &Farm, family: Family) -> PathBuf {
    if std::env::var(SCREENSHOT_ENV).as_deref() == Ok("1") && family == Family::V4 {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png")
    } else {
        farm.bed.bed().scratch().join("console.png")
    }
}

/// The test, in `family`.
fn the_console_logs_in_shows_the_farm_and_drains_a_node(family: Family) {
    let farm = Farm::start(family);
    let dir = farm.bed.bed().dir("browser").unwrap();
    let client_netns = &farm.bed.client.netns;
    let screenshot = screenshot_path(&farm, family);
    client_netns
        .run(|| {
            let browser = Browser::start(client_netns, &dir).expect("a browser runs");
            browser.block_on(async {
                let client = browser.client();
                the_login_refuses_a_wrong_secret_and_takes_the_right_one(client, &farm).await;
                the_page_shows_the_farm(client, &farm).await;
                drain(client, &farm).await;
                let png = client.screenshot().await.expect("a screenshot");
                std::fs::write(&screenshot, png).unwrap_or_else(|error| {
                    panic!("cannot write {}: {error}", screenshot.display())
                });
                eprintln!("screenshot: {}", screenshot.display());
            });
        })
        .unwrap();
}

/// Goes to the console, is sent to the login, is refused with a wrong secret and let in with
/// the right one.
async fn the_login_refuses_a_wrong_secret_and_takes_the_right_one(client: &Client, farm: &Farm) {
    client
        .goto(&format!("http://{}", farm.console))
        .await
        .expect("the console answers");
    assert_eq!(
        client.current_url().await.unwrap().path(),
        "/login",
        "a browser without a session is sent to the login"
    );
    log_in(client, "not the console's secret").await;
    let error = client
        .wait()
        .at_most(SETTLE)
        .for_element(Locator::Css("#login-error"))
        .await
        .expect("a wrong secret is refused with #login-error");
    let reason = error.text().await.unwrap();
    assert!(!reason.trim().is_empty(), "#login-error says why");
    assert_eq!(client.current_url().await.unwrap().path(), "/login");

    log_in(client, &farm.secret).await;
    client
        .wait()
        .at_most(SETTLE)
        .for_element(Locator::Css("#farm"))
        .await
        .unwrap_or_else(|error| panic!("the right secret shows #farm: {error}"));
    assert_eq!(client.current_url().await.unwrap().path(), "/");
}

/// The owner of every `div.bucket` of the bucket map, in its order.
const BUCKET_OWNERS: &str =
    "return [...document.querySelectorAll('#buckets div.bucket')].map(b => b.dataset.owner);";
/// The node of every row of the farm's table.
const ROWS: &str =
    "return [...document.querySelectorAll('#farm tr[data-node]')].map(r => r.dataset.node);";

/// Waits until the page shows the three nodes up, then checks the rows and the bucket map:
/// every bucket in order, with its owner.
async fn the_page_shows_the_farm(client: &Client, farm: &Farm) {
    let all_up = NODES
        .iter()
        .map(|name| format!("{} === 'up'", state_cell(name)))
        .collect::<Vec<_>>()
        .join(" && ");
    assert!(
        page_holds(client, &format!("return {all_up};"), SETTLE).await,
        "the page shows the three nodes up within {SETTLE:?}"
    );
    let rows: Vec<String> =
        serde_json::from_value(client.execute(ROWS, vec![]).await.unwrap()).unwrap();
    assert_eq!(
        rows, NODES,
        "one row per node, in the configuration's order"
    );
    let owners: Vec<String> =
        serde_json::from_value(client.execute(BUCKET_OWNERS, vec![]).await.unwrap()).unwrap();
    assert_eq!(
        owners, farm.owners,
        "the bucket map shows every bucket's owner"
    );
}

/// Types `secret` into the login form and submits it.
async fn log_in(client: &Client, secret: &str) {
    let field = client
        .wait()
        .at_most(SETTLE)
        .for_element(Locator::Css("input#secret"))
        .await
        .expect("the login has input#secret");
    field.clear().await.unwrap();
    field.send_keys(secret).await.unwrap();
    client
        .find(Locator::Css("button#login"))
        .await
        .expect("the login has button#login")
        .click()
        .await
        .unwrap();
}

/// Presses the drained node's drain button, accepts the confirmation, waits until the page
/// shows its new state, and prints how long that took from the click and from the moment
/// `herd status` on the node first reported it.
async fn drain(client: &Client, farm: &Farm) {
    let name = NODES[DRAINED];
    // Notes when the row first shows another state than `up`, at the page's change itself.
    let watch = format!(
        r#"
        window.herdChanged = null;
        const changed = () => {{ const s = {cell}; return s !== undefined && s !== 'up'; }};
        new MutationObserver((_, observer) => {{
            if (window.herdChanged === null && changed()) {{
                window.herdChanged = {{ at: Date.now(), state: {cell} }};
                observer.disconnect();
            }}
        }}).observe(document, {{ subtree: true, childList: true, characterData: true }});
        "#,
        cell = state_cell(name)
    );
    client.execute(&watch, vec![]).await.unwrap();
    let button = client
        .find(Locator::Css(&format!(
            "#farm tr[data-node=\"{name}\"] button[data-action=\"drain\"]"
        )))
        .await
        .expect("the row has a drain button");
    let herd = &farm.herds[DRAINED];
    let mark = herd.logged();
    let status = StatusOf::new(farm, DRAINED);
    let poller = std::thread::spawn(move || status.first_change());
    let clicked = SystemTime::now();
    button.click().await.unwrap();
    let question = client
        .get_alert_text()
        .await
        .expect("the drain button asks for confirmation");
    assert!(!question.is_empty(), "the confirmation says what it asks");
    client.accept_alert().await.unwrap();
    if !page_holds(client, "return window.herdChanged !== null;", SETTLE).await {
        let shown = client
            .execute(
                &format!(
                    "return [{}, document.querySelector('#updated').textContent];",
                    state_cell(name)
                ),
                vec![],
            )
            .await
            .unwrap();
        panic!("the page shows {name}'s new state within {SETTLE:?}: it shows {shown}");
    }
    let changed = client
        .execute("return window.herdChanged;", vec![])
        .await
        .unwrap();
    let state = changed["state"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(
        DRAINED_STATES.contains(&state.as_str()),
        "{name}'s row shows {state:?}, not one of {DRAINED_STATES:?}"
    );
    let shown_ms = changed["at"].as_i64().expect("the page noted when");
    let (reported, took) = poller
        .join()
        .expect("the status poller ends")
        .unwrap_or_else(|error| panic!("{error:#}"));
    assert!(
        herd.has_logged(mark, |line| line
            .contains("draining on an operator's request")),
        "{name}'s herd logs the drain"
    );
    eprintln!(
        "console {} update latency ({name} {state}): {} ms from the click, {} ms from the start of \
         the `herd status` call on {name} that first reported it (a call of {} ms)",
        farm.console,
        shown_ms - epoch_ms(clicked),
        shown_ms - epoch_ms(reported),
        took.as_millis()
    );
}

/// How to ask a node's herd for its status from another thread.
struct StatusOf {
    exe: PathBuf,
    node: String,
    control_dir: PathBuf,
}

impl StatusOf {
    fn new(farm: &Farm, node: usize) -> Self {
        StatusOf {
            exe: PathBuf::from(env!("CARGO_BIN_EXE_herd")),
            node: NODES[node].to_owned(),
            control_dir: farm.bed.state_dir(node).unwrap(),
        }
    }

    /// Asks `herd status --json` every [`STATUS_POLL`] until the node's state is no longer
    /// `up`; returns when the call that first said so started, and how long it took (the
    /// resolution of that moment).
    fn first_change(&self) -> anyhow::Result<(SystemTime, Duration)> {
        let deadline = std::time::Instant::now() + STATUS_WAIT;
        loop {
            let started = SystemTime::now();
            let output = Command::new(&self.exe)
                .args(["status", "--json", "--node", &self.node, "--control-dir"])
                .arg(&self.control_dir)
                .output()?;
            let took = started.elapsed().unwrap_or_default();
            let status: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
            if status["state"].as_str().is_some_and(|state| state != "up") {
                return Ok((started, took));
            }
            if std::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "herd status on {} still says up after {STATUS_WAIT:?}",
                    self.node
                );
            }
            std::thread::sleep(STATUS_POLL);
        }
    }
}

mod v4 {
    #[test]
    fn the_console_logs_in_shows_the_farm_and_drains_a_node() {
        super::the_console_logs_in_shows_the_farm_and_drains_a_node(super::Family::V4);
    }
}

mod v6 {
    #[test]
    fn the_console_logs_in_shows_the_farm_and_drains_a_node() {
        super::the_console_logs_in_shows_the_farm_and_drains_a_node(super::Family::V6);
    }
}
