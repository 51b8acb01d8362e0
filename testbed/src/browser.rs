//! A headless chromium in one of the bed's namespaces, driven over WebDriver: chromedriver
//! runs there, in a PID namespace of its own, and the WebDriver client's sockets are made
//! there too, by a runtime that lives on a thread inside the namespace.
//!
//! Killing the PID namespace's first process kills every process in it, so dropping a
//! [`Browser`] takes chromedriver and every chromium process it started, whatever state the
//! test left them in.

use std::fs::{self, File};
use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::marker::PhantomData;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fantoccini::{Client, ClientBuilder};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;

use crate::netns::Netns;

/// Debian's chromium.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver, of the same version.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// chromedriver's port on the namespace's loopback: the namespace is the bed's own, so no
/// other program has it.
pub const DRIVER_PORT: u16 = 9515;
/// How long chromedriver may take to answer that it is ready.
const READY: Duration = Duration::from_secs(20);
/// How often its `/status` is asked meanwhile.
const READY_POLL: Duration = Duration::from_millis(50);
/// How long closing the session may take before chromedriver is killed regardless.
const CLOSE: Duration = Duration::from_secs(5);
/// How long the browser's processes may take to be gone once chromedriver is killed.
const GONE: Duration = Duration::from_secs(5);
/// How often they are looked for meanwhile (a process's death is no event another one can
/// wait on, short of a pidfd each).
const GONE_POLL: Duration = Duration::from_millis(10);
/// How many bytes of chromedriver's log an error shows.
const LOG_TAIL: u64 = 2000;
/// chromium's flags: headless, no sandbox (it runs as root), and nothing that reaches out to
/// the internet by itself (the bed must send no traffic anywhere else).
pub const FLAGS: [&str; 6] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
];
/// The window's size, which a screenshot has.
const WINDOW: &str = "--window-size=1280,1024";

/// A WebDriver session of a headless chromium running in a namespace. It belongs to the
/// thread that started it, which is inside that namespace (it is not `Send`): the client's
/// connections are made by [`Browser::block_on`] on that thread.
pub struct Browser {
    client: Option<Client>,
    runtime: Runtime,
    driver: Child,
    log: PathBuf,
    profile: PathBuf,
    on_this_thread: PhantomData<*const ()>,
}

impl Browser {
    /// Starts chromedriver in `netns`, waits until it says that it is ready, and opens a
    /// session of a chromium whose profile and files are in `dir`'s new subdirectory
    /// `chromium`, and whose log is `dir/chromedriver.log`. The calling thread must be inside
    /// `netns` ([`Netns::run`]).
    pub fn start(netns: &Netns, dir: &Path) -> anyhow::Result<Self> {
        if !netns.holds_this_thread()? {
            bail!(
                "a browser in {} must be started on a thread inside it (Netns::run)",
                netns.name()
            );
        }
        let profile = dir.join("chromium");
        fs::create_dir(&profile)
            .with_context(|| format!("cannot create the profile {}", profile.display()))?;
        let log = dir.join("chromedriver.log");
        let driver = spawn_driver(netns, &profile, &log)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build the WebDriver client's runtime")?;
        let mut browser = Browser {
            client: None,
            runtime,
            driver,
            log,
            profile,
            on_this_thread: PhantomData,
        };
        browser.wait_until_ready()?;
        let client = browser
            .runtime
            .block_on(session(&browser.profile))
            .with_context(|| {
                format!(
                    "chromedriver opened no session; its log ends:\n{}",
                    browser.log_tail()
                )
            })?;
        browser.client = Some(client);
        Ok(browser)
    }

    /// The WebDriver client.
    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a browser has its client until it is dropped")
    }

    /// Runs `future`, such as the client's commands, to its end on this thread.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// chromium's profile directory: every one of its processes names it.
    pub fn profile(&self) -> &Path {
        &self.profile
    }

    /// The end of chromedriver's log, for an error message.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Asks chromedriver's `/status` until it says that it is ready, up to [`READY`]; fails
    /// at once if chromedriver exits.
    fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY;
        let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build::<_, Empty<Bytes>>(HttpConnector::new());
        let uri: hyper::Uri = format!("http://127.0.0.1:{DRIVER_PORT}/status").parse()?;
        loop {
            if let Some(status) = self
                .driver
                .try_wait()
                .context("cannot wait for chromedriver")?
            {
                bail!(
                    "chromedriver exited ({status}) before it was ready; its log ends:\n{}",
                    self.log_tail()
                );
            }
            let ready = self.runtime.block_on(async {
                let response = client.get(uri.clone()).await.ok()?;
                let body = response.into_body().collect().await.ok()?.to_bytes();
                let status: serde_json::Value = serde_json::from_slice(&body).ok()?;
                status["value"]["ready"].as_bool()
            });
            if ready == Some(true) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "chromedriver was not ready within {READY:?}; its log ends:\n{}",
                    self.log_tail()
                );
            }
            // chromedriver tells nobody when it listens: its status is asked again.
            std::thread::sleep(READY_POLL);
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session, which quits chromium; whatever does not end is killed below.
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(CLOSE, client.close()).await });
        }
        // `unshare` is the PID namespace's first process's parent, which dies with it
        // (`--kill-child`); the kernel then kills every other process of the namespace.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // Those deaths are the kernel's to finish, after unshare's; the browser is gone when
        // no process names its profile any more.
        let deadline = Instant::now() + GONE;
        while matches!(processes_naming(&self.profile), Ok(pids) if !pids.is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(GONE_POLL);
        }
    }
}

/// Starts chromedriver in `netns` and in a new PID namespace, its log in `log`, with its home
/// and chromium's files under `profile`.
fn spawn_driver(netns: &Netns, profile: &Path, log: &Path) -> anyhow::Result<Child> {
    let log_file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns.name()])
        .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(CHROMEDRIVER)
        .arg(format!("--port={DRIVER_PORT}"))
        // chromium keeps its crash reports and caches under the home: the profile's, not
        // root's.
        .env("HOME", profile)
        .env("XDG_CONFIG_HOME", profile)
        .env("XDG_CACHE_HOME", profile)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .process_group(0);
    // Should the starting thread end without dropping the browser, the browser goes with it.
    crate::process::dies_with_its_parent(&mut command);
    command
        .spawn()
        .with_context(|| format!("cannot start {CHROMEDRIVER} in {}", netns.name()))
}

/// Opens a session of a headless chromium with its profile in `profile`.
async fn session(profile: &Path) -> anyhow::Result<Client> {
    let mut args: Vec<String> = FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
    args.push(WINDOW.to_owned());
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        serde_json::json!({ "binary": CHROMIUM, "args": args }),
    );
    // A confirmation dialog stays open until the test accepts or dismisses it.
    capabilities.insert("unhandledPromptBehavior".to_owned(), "ignore".into());
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{DRIVER_PORT}"))
        .await
        .context("cannot open a WebDriver session")
}

/// The last [`LOG_TAIL`] bytes of file `path`, or why they cannot be read.
fn tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let length = file.metadata()?.len();
        file.seek(SeekFrom::Start(length.saturating_sub(LOG_TAIL)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|error| format!("({} cannot be read: {error})", path.display()))
}

/// The processes whose command line names `profile`: chromium's, while it runs.
pub fn processes_naming(profile: &Path) -> anyhow::Result<Vec<u32>> {
    let needle = profile.as_os_str().as_encoded_bytes();
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").context("cannot read /proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse().ok())
        else {
            continue;
        };
        // A process may end while it is looked at.
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.windows(needle.len()).any(|window| window == needle) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bed;
    use fantoccini::Locator;

    #[test]
    fn a_browser_reads_a_page_and_leaves_no_process_behind() {
        let mut bed = Bed::create(&format!("herd-browser-{}", std::process::id())).unwrap();
        let netns = bed.netns("client").unwrap();
        let dir = bed.dir("browser").unwrap();
        assert!(
            Browser::start(&netns, &dir).is_err(),
            "a browser is refused outside its namespace"
        );
        let profile = netns
            .run(|| {
                let browser = Browser::start(&netns, &dir).unwrap();
                let text = browser.block_on(async {
                    let client = browser.client();
                    client
                        .goto("data:text/html,<p id=greeting>hello</p>")
                        .await?;
                    client.find(Locator::Css("#greeting")).await?.text().await
                });
                assert_eq!(text.unwrap(), "hello");
                assert!(!processes_naming(browser.profile()).unwrap().is_empty());
                browser.profile().to_owned()
            })
            .unwrap();
        assert_eq!(processes_naming(&profile).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn a_browser_is_gone_after_a_failed_test() {
        let mut bed = Bed::create(&format!("herd-browser-fail-{}", std::process::id())).unwrap();
        let netns = bed.netns("client").unwrap();
        let dir = bed.dir("browser").unwrap();
        let profile = dir.join("chromium");
        let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            netns.run(|| {
                let browser = Browser::start(&netns, &dir).unwrap();
                browser.block_on(async {
                    browser
                        .client()
                        .goto("data:text/html,<p>a page</p>")
                        .await
                        .unwrap();
                    panic!("a test fails with the browser open");
                })
            })
        }));
        assert!(failed.is_err());
        assert_eq!(processes_naming(&profile).unwrap(), Vec::<u32>::new());
    }
}
