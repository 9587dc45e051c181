//! chromedriver for the browser tests: fantoccini speaks WebDriver but only
//! connects to a driver that is already running, so this starts one on a free
//! loopback port and opens headless Chromium sessions through it.
//!
//! chromedriver runs in its own process group, so dropping the
//! [`ChromeDriver`] kills it together with every Chromium process it started,
//! even when a test fails half-way.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use fantoccini::error::CmdError;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::{Method, Url};
use seawall_testkit::wait;
use serde_json::json;
use tempfile::TempDir;

/// Where Debian's `chromium` package puts the browser.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts the driver.
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Ports tried before giving up.
const STARTS: usize = 3;

pub(crate) type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// A running chromedriver; killed, with its browsers, on drop.
pub(crate) struct ChromeDriver {
    child: Child,
    address: SocketAddr,
    /// Holds the driver's log and the browsers' profiles; removed last.
    scratch: TempDir,
}

impl ChromeDriver {
    /// Starts chromedriver and waits until it takes connections.
    pub(crate) async fn start() -> Result<Self> {
        for (binary, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(binary).exists() {
                return Err(format!(
                    "{binary} is missing: the browser test needs Debian's `{package}` package; \
                     run scripts/setup to install it"
                )
                .into());
            }
        }
        let scratch = tempfile::Builder::new()
            .prefix("seawall-chromedriver-")
            .tempdir()
            .map_err(|error| format!("cannot create a temp dir: {error}"))?;
        // The port is free when chosen but may be taken before chromedriver
        // binds it (tests bind ports in parallel): then it exits, or another
        // server answers there. Either way, start over on another port.
        let mut last_error = String::new();
        for _ in 0..STARTS {
            let log_path = scratch.path().join("chromedriver.log");
            let log = File::create(&log_path)
                .map_err(|error| format!("cannot create {}: {error}", log_path.display()))?;
            let address = free_address()?;
            let mut child = Command::new(CHROMEDRIVER)
                .arg(format!("--port={}", address.port()))
                .arg(format!("--log-path={}", log_path.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                // Its own process group, so that Drop can kill the browsers too.
                .process_group(0)
                .spawn()
                .map_err(|error| format!("cannot start {CHROMEDRIVER}: {error}"))?;
            match wait_until_ready(&mut child, address, &log_path).await {
                Ok(()) => {
                    return Ok(Self {
                        child,
                        address,
                        scratch,
                    });
                }
                Err(error) => {
                    kill_group(&mut child);
                    last_error = error;
                }
            }
        }
        Err(last_error.into())
    }

    /// The driver's log so far, for error messages.
    pub(crate) fn log(&self) -> String {
        let path = self.scratch.path().join("chromedriver.log");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| format!("({}: {error})", path.display()))
    }

    /// Opens a headless Chromium with a fresh profile, over plain HTTP to the
    /// loopback driver.
    pub(crate) async fn new_session(&self) -> Result<Client> {
        let profile = tempfile::Builder::new()
            .prefix("profile-")
            .tempdir_in(self.scratch.path())
            .map_err(|error| format!("cannot create a profile dir: {error}"))?;
        // Kept until the driver goes, which kills the browser first.
        let profile = profile.keep();
        let capabilities: Capabilities = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
            // Generous: a page or a script waits on a busy machine too.
            "timeouts": { "script": 60_000, "pageLoad": 120_000, "implicit": 0 },
        }))?;
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let client = builder
            .connect(&format!("http://{}", self.address))
            .await
            .map_err(|error| {
                format!(
                    "cannot open a Chromium session: {error}; chromedriver log:\n{}",
                    self.log()
                )
            })?;
        Ok(client)
    }
}

/// Kills chromedriver and the browsers it launched: the negative pid
/// addresses the process group that `process_group(0)` created.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Waits until chromedriver itself answers `GET /status` as ready.
async fn wait_until_ready(
    child: &mut Child,
    address: SocketAddr,
    log: &Path,
) -> Result<(), String> {
    let read_log = || {
        std::fs::read_to_string(log).unwrap_or_else(|error| format!("({}: {error})", log.display()))
    };
    let deadline = Instant::now() + wait::patience();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "chromedriver exited at start ({status}); its log:\n{}",
                read_log()
            ));
        }
        let answer = match status(address).await {
            Ok(answer) if answer.contains("\"ready\":true") => return Ok(()),
            Ok(answer) => format!("answered {answer:?}"),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "waited {:?} for chromedriver to be ready on {address} ({answer}); \
                 its log:\n{}",
                wait::patience(),
                read_log()
            ));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// The answer to `GET /status` at `address`, without whitespace, read over
/// one HTTP/1.1 exchange (chromedriver refuses HTTP/1.0).
async fn status(address: SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        // chromedriver may keep the connection open: read until the
        // answer says whether it is ready, or the connection ends.
        let mut answer = Vec::new();
        let mut chunk = [0_u8; 4096];
        loop {
            let read = stream.read(&mut chunk).await?;
            answer.extend_from_slice(&chunk[..read]);
            let text: String = String::from_utf8_lossy(&answer)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if read == 0 || text.contains("\"ready\":true") || text.contains("\"ready\":false") {
                return Ok(text);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer within 2 s")))
}

fn free_address() -> Result<SocketAddr> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|error| format!("cannot find a free port: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot find a free port: {error}"))?;
    Ok(address)
}

/// Console messages and page errors since the last call, as `LEVEL message`
/// lines.
pub(crate) async fn browser_log(browser: &Client) -> Result<Vec<String>, CmdError> {
    let entries = browser.issue_cmd(BrowserLog).await?;
    Ok(entries
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|entry| {
                    format!(
                        "{} {}",
                        entry["level"].as_str().unwrap_or("?"),
                        entry["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default())
}

/// chromedriver's `POST /session/{id}/se/log` extension, which fantoccini
/// does not wrap.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    // `<Url as FromStr>::Err` is `url::ParseError`, named without depending
    // on the `url` crate.
    fn endpoint(
        &self,
        base_url: &Url,
        session_id: Option<&str>,
    ) -> Result<Url, <Url as FromStr>::Err> {
        let session_id = session_id.unwrap_or_default();
        base_url.join(&format!("session/{session_id}/se/log"))
    }

    fn method_and_body(&self, _url: &Url) -> (Method, Option<String>) {
        (Method::POST, Some(json!({ "type": "browser" }).to_string()))
    }
}
