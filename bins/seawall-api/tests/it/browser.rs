//! The dashboard in a real headless Chromium, against the real service.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup` installs
//! them); without them the test fails and says so. On failure it saves a
//! screenshot and prints the browser's console next to the error, which is
//! why the checks below return errors instead of panicking.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::TestServer;
use crate::webdriver::{self, Driver, Session, wait_for};

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// Fails the scenario with a message, like `assert!`, but as an `Err`.
macro_rules! check {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+).into());
        }
    };
}

/// Where the dashboard keeps the token; see `assets/app.js`.
const TOKEN_KEY: &str = "seawall.adminToken";
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The panel refreshes every 2 s; this leaves room for a slow machine.
const UPDATE_TIMEOUT: Duration = Duration::from_secs(20);
const CONTENT_REQUESTS: u16 = 50;
const REVIEW_REQUESTS: u16 = 5;

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_signs_in_and_shows_live_performance_figures() -> TestResult {
    let server = TestServer::start().await;
    let driver = Driver::start().await?;
    let session = driver.new_session().await?;

    let outcome = sign_in_and_watch(&session, &server).await;
    if let Err(error) = &outcome {
        report_failure(&session, &driver, error).await;
    }
    session.quit().await?;
    outcome?;
    server.stop().await?;
    Ok(())
}

async fn sign_in_and_watch(session: &Session, server: &TestServer) -> TestResult {
    let token = server.admin_token.as_str();
    let nothing_stored = json!({ "session": null, "local": [] });
    session.goto(&format!("{}/", server.base_url)).await?;
    wait_displayed(session, "#token").await?;

    // A wrong token is refused in the page, and not stored.
    let input = session.find("#token").await?;
    input.send_keys("not-the-admin-token").await?;
    session.find("#token-submit").await?.click().await?;
    let refusal = wait_for("the refusal message", PAGE_TIMEOUT, async || {
        let error = session.find("#token-error").await?;
        if !error.is_displayed().await? {
            return Ok(None);
        }
        Ok(Some(error.text().await?))
    })
    .await?;
    check!(
        refusal.contains("not accepted"),
        "refusal message: {refusal:?}"
    );
    let stored = stored_tokens(session, token).await?;
    check!(stored == nothing_stored, "stored after a refusal: {stored}");

    // The right one opens the performance panel.
    input.clear().await?;
    input.send_keys(token).await?;
    session.find("#token-submit").await?.click().await?;
    let before = wait_for("the first figures", PAGE_TIMEOUT, async || {
        figure(session, "perf-requests-total").await
    })
    .await?;
    check!(
        !session.find("#sign-in").await?.is_displayed().await?,
        "the sign-in form stays"
    );
    for testid in [
        "perf-latency-chart",
        "slow-queries",
        "slow-apis",
        "perf-p99",
    ] {
        let shown = session
            .find(&format!("[data-testid={testid}]"))
            .await?
            .is_displayed()
            .await?;
        check!(shown, "{testid} is not displayed");
    }
    // The health badge says what the API says.
    let report: Value = server
        .client
        .get(format!("{}/api/performance?type=health", server.base_url))
        .bearer_auth(token)
        .send()
        .await?
        .json()
        .await?;
    let expected = report["health"].as_str().ok_or("no health in the report")?;
    wait_for(
        &format!("the health badge to show {expected}"),
        PAGE_TIMEOUT,
        async || {
            let badge = session.find("[data-testid=perf-health]").await?;
            Ok((badge.attribute("value").await?.as_deref() == Some(expected)).then_some(()))
        },
    )
    .await?;
    let label = session
        .find("[data-testid=perf-health]")
        .await?
        .text()
        .await?;
    check!(
        label.eq_ignore_ascii_case(expected),
        "health {expected} shows as {label:?}"
    );

    // The token is in this tab's sessionStorage only, and never in the URL.
    let stored = stored_tokens(session, token).await?;
    check!(stored["session"] == token, "sessionStorage: {stored}");
    check!(
        stored["local"] == json!([]),
        "localStorage holds the token: {stored}"
    );
    let url = session.current_url().await?;
    check!(!url.contains(token), "the token is in the URL {url}");

    // Real traffic moves the figures.
    let pages = std::iter::repeat_n("/api/content?page=1", usize::from(CONTENT_REQUESTS)).chain(
        std::iter::repeat_n("/api/review/today?user_id=1", usize::from(REVIEW_REQUESTS)),
    );
    for page in pages {
        let response = server
            .client
            .get(format!("{}{page}", server.base_url))
            .send()
            .await?;
        check!(
            response.status().is_success(),
            "{page}: {}",
            response.status()
        );
    }
    let expected = before + f64::from(CONTENT_REQUESTS + REVIEW_REQUESTS);
    wait_for("the request count to rise", UPDATE_TIMEOUT, async || {
        Ok(figure(session, "perf-requests-total")
            .await?
            .filter(|&total| total >= expected))
    })
    .await?;
    let p50 = wait_for("a p50 latency", UPDATE_TIMEOUT, async || {
        Ok(figure(session, "perf-p50").await?.filter(|&ms| ms > 0.0))
    })
    .await?;
    let p50_text = session.find("[data-testid=perf-p50]").await?.text().await?;
    let in_units = p50_text.ends_with(" ms") || p50_text.ends_with(" s");
    check!(in_units, "p50 of {p50} ms shows as {p50_text:?}");
    wait_for("a throughput", UPDATE_TIMEOUT, async || {
        Ok(figure(session, "perf-throughput")
            .await?
            .filter(|&rate| rate > 0.0))
    })
    .await?;

    // At a phone's width the page reflows instead of scrolling sideways.
    session.set_window_size(390, 844).await?;
    let (scroll_width, client_width) = wait_for("the narrow layout", PAGE_TIMEOUT, async || {
        let widths = session
            .execute(
                "const root = document.documentElement; return [root.scrollWidth, root.clientWidth];",
                json!([]),
            )
            .await?;
        let narrow = widths[1].as_u64().filter(|&width| width < 500);
        Ok(widths[0].as_u64().zip(narrow))
    })
    .await?;
    check!(
        scroll_width <= client_width,
        "the page is {scroll_width} px wide in {client_width} px"
    );

    // Nothing the page does was blocked by its Content-Security-Policy, and
    // no script failed.
    let console = session.browser_log().await?;
    let broken: Vec<&String> = console
        .iter()
        .filter(|line| line.contains("Content Security Policy") || line.contains("Uncaught"))
        .collect();
    check!(broken.is_empty(), "browser console: {broken:#?}");

    // Signing out forgets the token and asks for it again.
    session.find("#sign-out").await?.click().await?;
    wait_displayed(session, "#token").await?;
    let stored = stored_tokens(session, token).await?;
    check!(
        stored == nothing_stored,
        "stored after signing out: {stored}"
    );
    let figures = session
        .find_all("[data-testid=perf-requests-total]")
        .await?;
    check!(figures.is_empty(), "the panel stays after signing out");

    // A stored token the server stops accepting sends the user back to the
    // form with a message, and is forgotten.
    session
        .execute(
            "sessionStorage.setItem(arguments[0], 'a-revoked-token');",
            json!([TOKEN_KEY]),
        )
        .await?;
    session.goto(&format!("{}/", server.base_url)).await?;
    wait_displayed(session, "#token-error").await?;
    let message = session.find("#token-error").await?.text().await?;
    check!(
        message.contains("no longer accepts"),
        "after a 403: {message:?}"
    );
    let stored = stored_tokens(session, token).await?;
    check!(stored == nothing_stored, "stored after a 403: {stored}");
    Ok(())
}

/// The number behind a figure (the `value` of its `<data>` element), once the
/// panel has shown one.
async fn figure(session: &Session, testid: &str) -> webdriver::Result<Option<f64>> {
    let element = session.find(&format!("[data-testid={testid}]")).await?;
    let value = element.attribute("value").await?.unwrap_or_default();
    Ok(value
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite()))
}

async fn wait_displayed(session: &Session, selector: &str) -> webdriver::Result<()> {
    wait_for(&format!("{selector} to show"), PAGE_TIMEOUT, async || {
        Ok(session
            .find(selector)
            .await?
            .is_displayed()
            .await?
            .then_some(()))
    })
    .await
}

/// What sessionStorage holds under the dashboard's key, and the
/// localStorage keys that are that key or hold `token` or the stored value.
async fn stored_tokens(session: &Session, token: &str) -> webdriver::Result<Value> {
    session
        .execute(
            "const [key, token] = arguments;
             const stored = sessionStorage.getItem(key);
             const local = Object.entries(localStorage)
                 .filter(([k, v]) => k === key || v.includes(token) || (stored !== null && v.includes(stored)))
                 .map(([k]) => k);
             return { session: stored, local };",
            json!([TOKEN_KEY, token]),
        )
        .await
}

async fn report_failure(session: &Session, driver: &Driver, error: &dyn std::fmt::Display) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-failure.png");
    match session.save_screenshot(&path).await {
        Ok(path) => eprintln!(
            "browser test failed: {error}\nscreenshot: {}",
            path.display()
        ),
        Err(shot) => eprintln!("browser test failed: {error}\n(no screenshot: {shot})"),
    }
    match session.browser_log().await {
        Ok(lines) => eprintln!("browser console:\n{}", lines.join("\n")),
        Err(log) => eprintln!("(no browser console: {log})"),
    }
    let log = driver.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    eprintln!("chromedriver log, last lines:\n{tail}");
}
