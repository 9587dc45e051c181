//! A minimal W3C WebDriver client for the browser tests: starts
//! `chromedriver` on a free loopback port and drives headless Chromium.
//!
//! Only what the tests use: sessions, navigation, CSS selectors, keys,
//! clicks, text, attributes and properties, scripts, screenshots and the
//! browser's console log. chromedriver runs in its own process group, so
//! dropping the [`Driver`] kills it together with every Chromium process it
//! started, even when a test fails half-way.

use std::fmt;
use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

/// Where Debian's `chromium` package puts the browser.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts the driver.
pub(crate) const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key W3C WebDriver uses for element references.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What went wrong talking to the driver; `code` is the WebDriver error code
/// (`no such element`, `stale element reference`, ...) when there is one.
#[derive(Debug)]
pub(crate) struct Error {
    pub(crate) code: Option<String>,
    pub(crate) message: String,
}

impl Error {
    fn new(message: impl Into<String>) -> Self {
        Self {
            code: None,
            message: message.into(),
        }
    }

    /// Errors that go away by waiting: the element is not there yet, or the
    /// page re-rendered it.
    fn is_transient(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("no such element" | "stale element reference" | "element not interactable")
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "webdriver: {code}: {}", self.message),
            None => write!(f, "webdriver: {}", self.message),
        }
    }
}

impl std::error::Error for Error {}

impl From<reqwest::Error> for Error {
    fn from(error: reqwest::Error) -> Self {
        Self::new(format!("HTTP to chromedriver failed: {error}"))
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

/// A running chromedriver; killed, with its browsers, on drop.
pub(crate) struct Driver {
    child: Child,
    base_url: String,
    http: reqwest::Client,
    /// Holds the driver's log and the browsers' profiles; removed last.
    scratch: TempDir,
}

impl Driver {
    /// Starts chromedriver and waits until it reports ready.
    pub(crate) async fn start() -> Result<Self> {
        for (binary, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            if !Path::new(binary).exists() {
                return Err(Error::new(format!(
                    "{binary} is missing: the browser test needs Debian's `{package}` package; \
                     run scripts/setup to install it"
                )));
            }
        }
        let scratch = tempfile::Builder::new()
            .prefix("seawall-webdriver-")
            .tempdir()
            .map_err(|error| Error::new(format!("cannot create a temp dir: {error}")))?;
        let log_path = scratch.path().join("chromedriver.log");
        let log = File::create(&log_path).map_err(|error| {
            Error::new(format!("cannot create {}: {error}", log_path.display()))
        })?;
        let port = free_port()?;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log_path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so that Drop can kill the browsers too.
            .process_group(0)
            .spawn()
            .map_err(|error| Error::new(format!("cannot start {CHROMEDRIVER}: {error}")))?;
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()?;
        let mut driver = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            http,
            scratch,
        };
        driver.wait_until_ready().await?;
        Ok(driver)
    }

    async fn wait_until_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::new(format!(
                    "chromedriver exited at start ({status}); its log:\n{}",
                    self.log()
                )));
            }
            let last = match self
                .http
                .get(format!("{}/status", self.base_url))
                .send()
                .await
            {
                Ok(response) => match response.json::<Value>().await {
                    Ok(body) if body["value"]["ready"] == true => return Ok(()),
                    Ok(body) => body.to_string(),
                    Err(error) => error.to_string(),
                },
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(Error::new(format!(
                    "chromedriver was not ready after {STARTUP_TIMEOUT:?} (last /status: {last}); its log:\n{}",
                    self.log()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The driver's log so far, for error messages.
    pub(crate) fn log(&self) -> String {
        let path = self.scratch.path().join("chromedriver.log");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|error| format!("({}: {error})", path.display()))
    }

    /// Opens a headless Chromium with a fresh profile.
    pub(crate) async fn new_session(&self) -> Result<Session> {
        let profile = tempfile::Builder::new()
            .prefix("profile-")
            .tempdir_in(self.scratch.path())
            .map_err(|error| Error::new(format!("cannot create a profile dir: {error}")))?;
        // Kept until the driver goes, which kills the browser first.
        let profile = profile.keep();
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
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
                    "timeouts": { "script": 10_000, "pageLoad": 30_000, "implicit": 0 },
                },
            },
        });
        let value = command(
            &self.http,
            reqwest::Method::POST,
            &format!("{}/session", self.base_url),
            Some(capabilities),
        )
        .await
        .map_err(|error| Error {
            message: format!("{}; chromedriver log:\n{}", error.message, self.log()),
            ..error
        })?;
        let id = value["sessionId"]
            .as_str()
            .ok_or_else(|| Error::new(format!("no sessionId in {value}")))?;
        Ok(Session {
            http: self.http.clone(),
            url: format!("{}/session/{id}", self.base_url),
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The negative pid addresses the process group that `process_group(0)`
        // created: chromedriver and the browsers it launched.
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|error| Error::new(format!("cannot find a free port: {error}")))?;
    let port = listener
        .local_addr()
        .map_err(|error| Error::new(format!("cannot find a free port: {error}")))?
        .port();
    Ok(port)
}

/// Sends one command and unwraps the `value` of its answer.
async fn command(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value> {
    let mut request = http.request(method.clone(), url);
    if let Some(body) = body {
        request = request.json(&body);
    } else if method == reqwest::Method::POST {
        request = request.json(&json!({}));
    }
    let response = request.send().await?;
    let status = response.status();
    let mut body: Value = response.json().await.map_err(|error| {
        Error::new(format!(
            "{method} {url}: HTTP {status}, body is not JSON: {error}"
        ))
    })?;
    let value = body["value"].take();
    if status.is_success() {
        return Ok(value);
    }
    Err(Error {
        code: value["error"].as_str().map(str::to_owned),
        message: format!(
            "{method} {url}: HTTP {status}: {}",
            value["message"].as_str().unwrap_or("(no message)")
        ),
    })
}

/// One browser session. [`Session::quit`] closes it; if a test fails before
/// that, dropping the [`Driver`] kills the browser.
pub(crate) struct Session {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    url: String,
}

impl Session {
    async fn get(&self, path: &str) -> Result<Value> {
        command(
            &self.http,
            reqwest::Method::GET,
            &format!("{}{path}", self.url),
            None,
        )
        .await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        command(
            &self.http,
            reqwest::Method::POST,
            &format!("{}{path}", self.url),
            Some(body),
        )
        .await
    }

    /// Navigates and waits for the page to load.
    pub(crate) async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url })).await?;
        Ok(())
    }

    /// The current page's URL.
    pub(crate) async fn current_url(&self) -> Result<String> {
        let value = self.get("/url").await?;
        value
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::new(format!("URL is not a string: {value}")))
    }

    /// The first element matching a CSS selector; `no such element` if none.
    pub(crate) async fn find(&self, selector: &str) -> Result<Element<'_>> {
        let value = self
            .post(
                "/element",
                json!({ "using": "css selector", "value": selector }),
            )
            .await?;
        Element::from_reference(self, &value)
    }

    /// Every element matching a CSS selector.
    pub(crate) async fn find_all(&self, selector: &str) -> Result<Vec<Element<'_>>> {
        let value = self
            .post(
                "/elements",
                json!({ "using": "css selector", "value": selector }),
            )
            .await?;
        value
            .as_array()
            .ok_or_else(|| Error::new(format!("find elements answered {value}")))?
            .iter()
            .map(|reference| Element::from_reference(self, reference))
            .collect()
    }

    /// Resizes the browser window (the viewport is a little smaller).
    pub(crate) async fn set_window_size(&self, width: u32, height: u32) -> Result<()> {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await?;
        Ok(())
    }

    /// Runs a synchronous script (`return ...;`) with `args` and returns its value.
    pub(crate) async fn execute(&self, script: &str, args: Value) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// A PNG of the viewport.
    pub(crate) async fn screenshot(&self) -> Result<Vec<u8>> {
        let value = self.get("/screenshot").await?;
        let encoded = value
            .as_str()
            .ok_or_else(|| Error::new("the screenshot is not a string"))?;
        decode_base64(encoded).ok_or_else(|| Error::new("the screenshot is not valid base64"))
    }

    /// Saves a PNG of the viewport to `path`.
    pub(crate) async fn save_screenshot(&self, path: &Path) -> Result<PathBuf> {
        let png = self.screenshot().await?;
        std::fs::write(path, png)
            .map_err(|error| Error::new(format!("cannot write {}: {error}", path.display())))?;
        Ok(path.to_owned())
    }

    /// Console messages and page errors since the last call, as
    /// `LEVEL message` lines (a chromedriver extension).
    pub(crate) async fn browser_log(&self) -> Result<Vec<String>> {
        let value = self.post("/se/log", json!({ "type": "browser" })).await?;
        Ok(value
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

    /// Ends the session, which closes the browser.
    pub(crate) async fn quit(self) -> Result<()> {
        command(&self.http, reqwest::Method::DELETE, &self.url, None).await?;
        Ok(())
    }
}

/// An element on the page of a [`Session`].
pub(crate) struct Element<'s> {
    session: &'s Session,
    id: String,
}

impl<'s> Element<'s> {
    fn from_reference(session: &'s Session, reference: &Value) -> Result<Self> {
        let id = reference[ELEMENT_KEY]
            .as_str()
            .ok_or_else(|| Error::new(format!("not an element reference: {reference}")))?;
        Ok(Self {
            session,
            id: id.to_owned(),
        })
    }

    fn path(&self, command: &str) -> String {
        format!("/element/{}/{command}", self.id)
    }

    /// Types `text` into the element.
    pub(crate) async fn send_keys(&self, text: &str) -> Result<()> {
        self.session
            .post(&self.path("value"), json!({ "text": text }))
            .await?;
        Ok(())
    }

    /// Empties an input.
    pub(crate) async fn clear(&self) -> Result<()> {
        self.session.post(&self.path("clear"), json!({})).await?;
        Ok(())
    }

    /// Clicks the element's centre.
    pub(crate) async fn click(&self) -> Result<()> {
        self.session.post(&self.path("click"), json!({})).await?;
        Ok(())
    }

    /// The rendered text, as a user sees it (empty when hidden).
    pub(crate) async fn text(&self) -> Result<String> {
        let value = self.session.get(&self.path("text")).await?;
        Ok(value.as_str().unwrap_or_default().to_owned())
    }

    /// An HTML attribute, `None` when absent.
    pub(crate) async fn attribute(&self, name: &str) -> Result<Option<String>> {
        let value = self
            .session
            .get(&self.path(&format!("attribute/{name}")))
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// Whether the element is rendered visibly.
    pub(crate) async fn is_displayed(&self) -> Result<bool> {
        let value = self.session.get(&self.path("displayed")).await?;
        Ok(value == true)
    }
}

/// Polls `probe` every 100 ms until it gives `Some`, for at most `timeout`.
///
/// Transient WebDriver errors (the element is not there yet, or was
/// re-rendered) count as "not yet"; others end the wait. On timeout the error
/// names `what` and the last transient error, if any.
pub(crate) async fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error) if error.is_transient() => last = Some(error),
            Err(error) => return Err(error),
        }
        if Instant::now() >= deadline {
            let last = last
                .map(|error| format!(" (last: {error})"))
                .unwrap_or_default();
            return Err(Error::new(format!(
                "timed out after {timeout:?} waiting for {what}{last}"
            )));
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Standard base64 with padding, as WebDriver screenshots are; `None` if malformed.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let sextet = |byte: u8| -> Option<u32> {
        Some(u32::from(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let padding = chunk.iter().rev().take_while(|&&byte| byte == b'=').count();
        if padding > 2 {
            return None;
        }
        let mut word = 0u32;
        for &byte in &chunk[..4 - padding] {
            word = (word << 6) | sextet(byte)?;
        }
        word <<= 6 * padding;
        let decoded = word.to_be_bytes();
        out.extend_from_slice(&decoded[1..4 - padding]);
    }
    Some(out)
}

#[test]
fn base64_decodes_with_and_without_padding() {
    assert_eq!(decode_base64("aGVsbG8="), Some(b"hello".to_vec()));
    assert_eq!(decode_base64("aGk="), Some(b"hi".to_vec()));
    assert_eq!(decode_base64("aGk"), None);
    assert_eq!(decode_base64("YWJj"), Some(b"abc".to_vec()));
    assert_eq!(
        decode_base64("iVBORw0K\nGgo="),
        Some(b"\x89PNG\r\n\x1a\n".to_vec())
    );
    assert_eq!(decode_base64("a*=="), None);
}
