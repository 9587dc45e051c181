//! The dashboard in a real headless Chromium, driven through fantoccini,
//! against the real service.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup` installs
//! them); without them the test fails and says so. On failure it saves a
//! screenshot and prints the browser's console next to the error, which is
//! why the checks below return errors instead of panicking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::Client;
use fantoccini::Locator::Css;
use fantoccini::error::CmdError;
use reqwest::{Method, StatusCode};
use seawall_queue::fred::prelude::{Builder, Config as RedisConfig};
use seawall_queue::{Job, JobError, Queues};
use seawall_testkit::{RedisServer, wait};
use serde_json::{Value, json};

use crate::chromedriver::{self, ChromeDriver};
use crate::support::{TestServer, recurring_jobs_on};

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
/// The whole scenario, so that a hung browser fails the test instead of
/// stalling it; fantoccini has no per-command timeout. Room for a busy
/// machine's slow waits, and for the clean-up after it within the test
/// runner's ten minutes.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Each clean-up command after the scenario.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const CONTENT_REQUESTS: u16 = 50;
const REVIEW_REQUESTS: u16 = 5;

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_signs_in_and_shows_live_performance_figures() -> TestResult {
    in_browser(TestServer::start().await, sign_in_and_watch).await
}

/// Runs `scenario` in a fresh Chromium session against `server`, within
/// [`SCENARIO_TIMEOUT`]; on failure saves a screenshot and prints the
/// browser's console, then closes the session and stops the server.
async fn in_browser(
    server: TestServer,
    scenario: impl AsyncFnOnce(&Client, &TestServer) -> TestResult,
) -> TestResult {
    let driver = ChromeDriver::start().await?;
    let browser = driver.new_session().await?;

    let outcome = tokio::time::timeout(SCENARIO_TIMEOUT, scenario(&browser, &server))
        .await
        .unwrap_or_else(|_| Err(format!("the scenario took over {SCENARIO_TIMEOUT:?}").into()));
    if let Err(error) = &outcome {
        report_failure(&browser, &driver, error).await;
    }
    tokio::time::timeout(COMMAND_TIMEOUT, browser.close())
        .await
        .map_err(|_| format!("closing the session took over {COMMAND_TIMEOUT:?}"))??;
    // The message, not fantoccini's `Debug` with chromedriver's stack trace.
    outcome.map_err(|error| error.to_string())?;
    server.stop().await?;
    Ok(())
}

async fn sign_in_and_watch(browser: &Client, server: &TestServer) -> TestResult {
    let token = server.admin_token.as_str();
    let nothing_stored = json!({ "session": null, "local": [] });
    browser.goto(&format!("{}/", server.base_url)).await?;
    wait_displayed(browser, "#token").await?;

    // A wrong token is refused in the page, and not stored.
    let input = browser.find(Css("#token")).await?;
    input.send_keys("not-the-admin-token").await?;
    click(browser, "#token-submit").await?;
    let refusal = wait_for("the refusal message", async || {
        let error = browser.find(Css("#token-error")).await?;
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
    let stored = stored_tokens(browser, token).await?;
    check!(stored == nothing_stored, "stored after a refusal: {stored}");

    // The right one opens the performance panel.
    input.clear().await?;
    input.send_keys(token).await?;
    click(browser, "#token-submit").await?;
    let before = wait_for("the first figures", async || {
        figure(browser, "perf-requests-total").await
    })
    .await?;
    check!(
        !browser.find(Css("#sign-in")).await?.is_displayed().await?,
        "the sign-in form stays"
    );
    for testid in [
        "perf-latency-chart",
        "slow-queries",
        "slow-apis",
        "perf-p99",
    ] {
        let shown = browser
            .find(Css(&format!("[data-testid={testid}]")))
            .await?
            .is_displayed()
            .await?;
        check!(shown, "{testid} is not displayed");
    }
    // The health badge says what the API says.
    let report: Value = server
        .admin(Method::GET, "/api/performance?type=health")
        .send()
        .await?
        .json()
        .await?;
    let expected = report["health"].as_str().ok_or("no health in the report")?;
    wait_for(
        &format!("the health badge to show {expected}"),
        async || {
            let badge = browser.find(Css("[data-testid=perf-health]")).await?;
            Ok((badge.attr("value").await?.as_deref() == Some(expected)).then_some(()))
        },
    )
    .await?;
    let label = browser
        .find(Css("[data-testid=perf-health]"))
        .await?
        .text()
        .await?;
    check!(
        label.eq_ignore_ascii_case(expected),
        "health {expected} shows as {label:?}"
    );

    // The token is in this tab's sessionStorage only, and never in the URL.
    let stored = stored_tokens(browser, token).await?;
    check!(stored["session"] == token, "sessionStorage: {stored}");
    check!(
        stored["local"] == json!([]),
        "localStorage holds the token: {stored}"
    );
    let url = browser.current_url().await?;
    check!(
        !url.as_str().contains(token),
        "the token is in the URL {url}"
    );

    // Real traffic moves the figures.
    let pages = std::iter::repeat_n("/api/content?page=1", usize::from(CONTENT_REQUESTS)).chain(
        std::iter::repeat_n("/api/review/today?user_id=1", usize::from(REVIEW_REQUESTS)),
    );
    for page in pages {
        let response = server.request(Method::GET, page).send().await?;
        check!(
            response.status().is_success(),
            "{page}: {}",
            response.status()
        );
    }
    let expected = before + f64::from(CONTENT_REQUESTS + REVIEW_REQUESTS);
    wait_for("the request count to rise", async || {
        Ok(figure(browser, "perf-requests-total")
            .await?
            .filter(|&total| total >= expected))
    })
    .await?;
    let p50 = wait_for("a p50 latency", async || {
        Ok(figure(browser, "perf-p50").await?.filter(|&ms| ms > 0.0))
    })
    .await?;
    let p50_text = browser
        .find(Css("[data-testid=perf-p50]"))
        .await?
        .text()
        .await?;
    let in_units = p50_text.ends_with(" ms") || p50_text.ends_with(" s");
    check!(in_units, "p50 of {p50} ms shows as {p50_text:?}");
    wait_for("a throughput", async || {
        Ok(figure(browser, "perf-throughput")
            .await?
            .filter(|&rate| rate > 0.0))
    })
    .await?;
    // The forecasts an hour ahead: the request rate (still learning: the
    // latest minute's mean, as the report says), and no Redis to read.
    let report: Value = server
        .admin(Method::GET, "/api/performance")
        .send()
        .await?
        .json()
        .await?;
    let ahead = &report["capacity"]["requests_per_second_in_an_hour"];
    check!(
        ahead["learning"] == json!(true) && ahead["value"].as_f64().is_some(),
        "the report's rate forecast: {ahead}"
    );
    check!(
        report["capacity"]["redis"] == json!([]),
        "no Redis, yet nodes: {}",
        report["capacity"]
    );
    wait_for("the rate forecast", async || {
        Ok(figure(browser, "perf-rate-forecast")
            .await?
            .filter(|&rate| rate >= 0.0))
    })
    .await?;
    let note = shown_text(browser, "perf-rate-forecast-note").await?;
    check!(
        note.as_deref()
            .is_some_and(|note| note.starts_with("learning")),
        "the rate forecast's note: {note:?}"
    );
    let redis = shown_text(browser, "perf-redis-runs-out").await?;
    let redis_note = shown_text(browser, "perf-redis-runs-out-note").await?;
    check!(
        redis.as_deref() == Some("—") && redis_note.as_deref() == Some("no Redis read"),
        "the Redis tile without Redis: {redis:?}, {redis_note:?}"
    );
    // The route classes' objectives: the report counts the dashboard's
    // own admin requests, and the table shows each class's two objectives
    // with a burn rate per window; none burns (no request failed).
    let slo = &report["slo"];
    check!(
        slo.as_array().map(Vec::len) == Some(3)
            && slo[0]["class"] == json!("public")
            && slo[2]["class"] == json!("admin")
            && slo[2]["availability"]["windows"][0]["requests"]
                .as_u64()
                .is_some_and(|requests| requests > 0),
        "the report's objectives: {slo}"
    );
    let rows = wait_for("the objectives' rows", async || {
        let rows = browser
            .execute(
                "return [...document.querySelectorAll('[data-testid=slo-row]')]
                   .map((row) => [row.dataset.class, row.dataset.objective,
                     row.querySelector('[data-testid=slo-burn-5]').getAttribute('value'),
                     row.querySelector('[data-testid=slo-burning]').getAttribute('value')]);",
                vec![],
            )
            .await?;
        Ok(rows.as_array().filter(|rows| rows.len() == 6).cloned())
    })
    .await?;
    check!(
        rows[0][0] == json!("public")
            && rows[0][1] == json!("availability")
            && rows[5][0] == json!("admin")
            && rows[5][1] == json!("latency")
            && rows.iter().all(|row| row[3] == json!("no")
                && row[2]
                    .as_str()
                    .and_then(|burn| burn.parse::<f64>().ok())
                    .is_some()),
        "the objectives' rows: {rows:?}"
    );
    // The request rate beside its baseline: a fresh server has at most a
    // minute or two, and its baseline is still learning.
    let chart = browser
        .execute(
            "return document.querySelector('[data-testid=perf-rate-baseline-chart]').getAttribute('aria-label');",
            vec![],
        )
        .await?;
    check!(
        chart
            .as_str()
            .is_some_and(|label| label.starts_with("Request rate chart: no minute")
                || label.ends_with("the baseline is still learning")),
        "the baseline chart: {chart}"
    );

    // At a phone's width the page reflows instead of scrolling sideways.
    browser.set_window_size(390, 844).await?;
    let (scroll_width, client_width) = wait_for("the narrow layout", async || {
        let widths = browser
            .execute(
                "const root = document.documentElement; return [root.scrollWidth, root.clientWidth];",
                vec![],
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
    console_is_clean(browser).await?;

    // Signing out forgets the token and asks for it again.
    click(browser, "#sign-out").await?;
    wait_displayed(browser, "#token").await?;
    let stored = stored_tokens(browser, token).await?;
    check!(
        stored == nothing_stored,
        "stored after signing out: {stored}"
    );
    let figures = browser
        .find_all(Css("[data-testid=perf-requests-total]"))
        .await?;
    check!(figures.is_empty(), "the panel stays after signing out");

    // A stored token the server stops accepting sends the user back to the
    // form with a message, and is forgotten.
    browser
        .execute(
            "sessionStorage.setItem(arguments[0], 'a-revoked-token');",
            vec![json!(TOKEN_KEY)],
        )
        .await?;
    browser.goto(&format!("{}/", server.base_url)).await?;
    wait_displayed(browser, "#token-error").await?;
    let message = browser.find(Css("#token-error")).await?.text().await?;
    check!(
        message.contains("no longer accepts"),
        "after a 403: {message:?}"
    );
    let stored = stored_tokens(browser, token).await?;
    check!(stored == nothing_stored, "stored after a 403: {stored}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rate_limit_panel_issues_a_key_tries_the_limit_unblocks_changes_a_tier_and_revokes()
-> TestResult {
    let server = TestServer::start_with(|config| {
        config.ratelimit.api = "5/1m block 1m".parse().expect("profile");
    })
    .await;
    in_browser(server, use_rate_limit_panel).await
}

async fn use_rate_limit_panel(browser: &Client, server: &TestServer) -> TestResult {
    sign_in(browser, server).await?;
    wait_displayed(browser, "[data-testid=rl-row-api]").await?;
    wait_displayed(browser, "[data-testid=rl-allowed-chart]").await?;

    // The in-flight limit (64 to start, between 4 and 512) and the level
    // the health-scaled limits are set for.
    wait_displayed(browser, "[data-testid=rl-admission-limit]").await?;
    let limit = figure(browser, "rl-admission-limit").await?;
    check!(
        limit.is_some_and(|limit| (4.0..=512.0).contains(&limit)),
        "the in-flight limit shown: {limit:?}"
    );
    let level = browser
        .find(Css("[data-testid=rl-health-level]"))
        .await?
        .attr("value")
        .await?
        .unwrap_or_default();
    check!(
        ["healthy", "degraded", "unhealthy"].contains(&level.as_str()),
        "the health level shown: {level:?}"
    );

    // Four hundred requests from this address to a path the API limit
    // leaves alone: the DDoS limiter checks each, and the panel ranks the
    // address among its heaviest callers.
    for _ in 0..400 {
        let status = server
            .request(Method::GET, "/nowhere")
            .send()
            .await?
            .status();
        check!(status == StatusCode::NOT_FOUND, "GET /nowhere: {status}");
    }
    wait_for("this address among the heaviest callers", async || {
        for row in browser.find_all(Css("[data-testid=rl-caller-row]")).await? {
            if row.attr("data-limiter").await?.as_deref() == Some("ddos")
                && row.attr("data-key").await?.as_deref() == Some("127.0.0.1")
            {
                return Ok(Some(()));
            }
        }
        Ok(None)
    })
    .await?;

    // An API key issued to a tenant, shown once and put in the try form.
    wait_for("the tenants", async || {
        let options = browser
            .find_all(Css("[data-testid=key-tenant] option"))
            .await?;
        Ok((!options.is_empty()).then_some(()))
    })
    .await?;
    // Its options are drawn again every 2 s: chosen in one script.
    browser
        .execute(
            "document.querySelector('[data-testid=key-tenant]').value = 'demo-free';",
            vec![],
        )
        .await?;
    click(browser, "[data-testid=key-issue]").await?;
    let issued = wait_for("the issued key", async || {
        let text = browser
            .find(Css("[data-testid=key-issued]"))
            .await?
            .text()
            .await?;
        Ok((!text.is_empty()).then_some(text))
    })
    .await?;
    check!(
        issued.starts_with("swk_") && issued.len() == 68,
        "issued: {issued:?}"
    );
    let in_form = browser
        .find(Css("[data-testid=rl-try-key]"))
        .await?
        .prop("value")
        .await?;
    check!(
        in_form.as_deref() == Some(issued.as_str()),
        "try key: {in_form:?}"
    );
    let listed: Value = server
        .admin(Method::GET, "/api/keys")
        .send()
        .await?
        .json()
        .await?;
    let id = listed["keys"][0]["id"]
        .as_str()
        .ok_or("no key listed")?
        .to_owned();
    check!(listed["keys"][0]["tenant_id"] == "demo-free", "{listed}");
    check!(
        !listed.to_string().contains(&issued),
        "the key is listed: {listed}"
    );

    // Eight requests as one API client against a limit of five a minute.
    let count = browser.find(Css("[data-testid=rl-try-count]")).await?;
    count.clear().await?;
    count.send_keys("8").await?;
    click(browser, "[data-testid=rl-try-send]").await?;
    let passed = wait_for("the try result", async || {
        figure(browser, "rl-try-passed").await
    })
    .await?;
    check!(passed == 5.0, "{passed} of 8 passed");
    let result = browser
        .find(Css("[data-testid=rl-try-result]"))
        .await?
        .text()
        .await?;
    check!(result.contains("3 rejected"), "try result: {result:?}");
    wait_for("the API limiter's rejections", async || {
        Ok(figure(browser, "rl-rejected-api")
            .await?
            .filter(|&rejected| rejected >= 3.0))
    })
    .await?;

    // Exceeding the limit blocked the key; the panel lists it and lifts it.
    let key = format!("key:{id}");
    let key = key.as_str();
    // Found and clicked in one probe: a button the list has drawn again
    // since it was found is stale, and is looked for again.
    wait_for("the blocked key", async || {
        for button in browser.find_all(Css("[data-testid=rl-unblock]")).await? {
            if button.attr("data-key").await?.as_deref() == Some(key) {
                button.click().await?;
                return Ok(Some(()));
            }
        }
        Ok(None)
    })
    .await?;
    wait_for("the key to leave the blocked list", async || {
        for button in browser.find_all(Css("[data-testid=rl-unblock]")).await? {
            if button.attr("data-key").await?.as_deref() == Some(key) {
                return Ok(None);
            }
        }
        Ok(Some(()))
    })
    .await?;
    let stats: Value = server
        .admin(Method::GET, "/api/rate-limit")
        .send()
        .await?
        .json()
        .await?;
    let api_blocked = stats["limiters"]
        .as_array()
        .and_then(|limiters| limiters.iter().find(|l| l["name"] == "api"))
        .map(|api| api["blocked"].clone())
        .ok_or("no api limiter")?;
    check!(api_blocked == json!([]), "still blocked: {api_blocked}");

    // The tier editor moves a tenant. Its options are drawn again every 2 s
    // (an option found a moment ago may be gone): both are chosen in one
    // script, again until both choices hold.
    let choose = "const tenant = document.querySelector('[data-testid=rl-tenant]'); \
         const tier = document.querySelector('[data-testid=rl-tier]'); \
         if (!tenant || !tier) return false; \
         tenant.value = 'demo-free'; tier.value = 'premium'; \
         return tenant.value === 'demo-free' && tier.value === 'premium';";
    wait_for("the tenant and tier options", async || {
        let chosen = browser.execute(choose, vec![]).await?;
        Ok(chosen.as_bool().filter(|&chosen| chosen))
    })
    .await?;
    click(browser, "[data-testid=rl-tier-apply]").await?;
    let message = wait_for("the tier change", async || {
        let text = browser
            .find(Css("[data-testid=rl-tier-result]"))
            .await?
            .text()
            .await?;
        Ok((!text.is_empty()).then_some(text))
    })
    .await?;
    check!(message.contains("premium"), "tier change: {message:?}");
    let stats: Value = server
        .admin(Method::GET, "/api/rate-limit")
        .send()
        .await?
        .json()
        .await?;
    let tenants = &stats["tenants"];
    let demo = tenants
        .as_array()
        .and_then(|all| all.iter().find(|t| t["tenantId"] == "demo-free"))
        .ok_or("no demo-free tenant")?;
    check!(demo["tier"] == "premium", "demo-free: {demo}");

    // Revoked in the panel, the key is refused at once. The table is drawn
    // again every 2 s, so the button is found and clicked in one script.
    let click_revoke = format!(
        "const button = document.querySelector('[data-testid=key-revoke][data-id=\"{id}\"]'); \
         if (button) button.click(); return button !== null;"
    );
    wait_for("the revoke button", async || {
        let clicked = browser.execute(&click_revoke, vec![]).await?;
        Ok(clicked.as_bool().filter(|&clicked| clicked))
    })
    .await?;
    let state = format!(
        "const cell = document.querySelector('[data-testid=key-row][data-id=\"{id}\"] \
         [data-testid=key-state]'); return cell ? cell.textContent : null;"
    );
    wait_for("the key to be revoked", async || {
        let text = browser.execute(&state, vec![]).await?;
        Ok((text.as_str() == Some("revoked")).then_some(()))
    })
    .await?;
    count.clear().await?;
    count.send_keys("1").await?;
    click(browser, "[data-testid=rl-try-send]").await?;
    let result = wait_for("the try after revoking", async || {
        let text = browser
            .find(Css("[data-testid=rl-try-result]"))
            .await?
            .text()
            .await?;
        Ok(text.contains("other").then_some(text))
    })
    .await?;
    check!(result.contains("1 other (401)"), "try result: {result:?}");
    console_is_clean(browser).await?;
    Ok(())
}

/// With the abuse watch acting, the rate-limit panel lists what it did to
/// a client walking the catalogue and why, and pardons it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_panel_lists_the_abuse_watchs_actions_and_pardons_one() -> TestResult {
    let server = TestServer::start_with(|config| {
        config.ratelimit.abuse = seawall_app::config::AbuseMode::Act;
        config.ratelimit.abuse_interval = Duration::from_secs(1);
        config.ratelimit.abuse_min_requests = 20;
        config.ratelimit.api = "100000/1m".parse().expect("profile");
    })
    .await;
    in_browser(server, use_abuse_section).await
}

async fn use_abuse_section(browser: &Client, server: &TestServer) -> TestResult {
    sign_in(browser, server).await?;
    wait_displayed(browser, "[data-testid=abuse-actions]").await?;
    // A walker from an address of its own (127.0.0.2; the browser, the
    // operator, is 127.0.0.1) walks the catalogue page by page until the
    // panel shows it tightened. Should it walk on into a block, the block
    // is its own: the operator's pardon still gets through.
    let walker = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()?;
    let rows = "[data-testid=abuse-action-row][data-key='127.0.0.2']";
    let mut page = 0;
    wait_for("the walker to be acted on", async || {
        for _ in 0..30 {
            page += 1;
            let _ = walker
                .get(format!("{}/api/content?page={page}", server.base_url))
                .send()
                .await;
        }
        let found = browser.find_all(Css(rows)).await?;
        Ok((!found.is_empty()).then_some(()))
    })
    .await?;
    let action = browser.find(Css(rows)).await?.attr("data-action").await?;
    // Tightened, or already blocked if it kept walking while tightened.
    check!(
        matches!(action.as_deref(), Some("tighten" | "block")),
        "the action shown: {action:?}"
    );
    let mode = browser
        .find(Css("[data-testid=abuse-mode]"))
        .await?
        .text()
        .await?;
    check!(mode == "acting", "the mode shown: {mode:?}");
    wait_displayed(
        browser,
        "[data-testid=abuse-finding-row][data-key='127.0.0.2'][data-signal=paths]",
    )
    .await?;
    click(browser, "[data-testid=abuse-pardon][data-key='127.0.0.2']").await?;
    wait_for("the walker to leave the actions", async || {
        Ok(browser.find_all(Css(rows)).await?.is_empty().then_some(()))
    })
    .await?;
    console_is_clean(browser).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_panel_warms_up_invalidates_and_charts_hit_ratios() -> TestResult {
    // The hot keys need a page read more often than one client may read.
    let server = TestServer::start_with(|config| config.ratelimit.enabled = false).await;
    in_browser(server, use_cache_panel).await
}

async fn use_cache_panel(browser: &Client, server: &TestServer) -> TestResult {
    // Some reads, so the classes have counts.
    for _ in 0..3 {
        for path in [
            "/api/review/today?user_id=2",
            "/api/analytics/stats?user_id=2",
            "/api/content",
        ] {
            let status = server.request(Method::GET, path).send().await?.status();
            check!(status == 200, "{path}: {status}");
        }
    }
    sign_in(browser, server).await?;
    wait_displayed(browser, "[data-testid=cache-row-schedule]").await?;
    wait_displayed(browser, "[data-testid=cache-ratio-chart]").await?;
    let hits = wait_for("the schedule class's hits", async || {
        figure(browser, "cache-l1-hits-schedule").await
    })
    .await?;
    check!(hits == 2.0, "schedule L1 hits: {hits}");
    let entries = wait_for("the L1 size", async || {
        figure(browser, "cache-l1-entries").await
    })
    .await?;
    check!(entries.total_cmp(&1.0).is_ge(), "L1 entries: {entries}");

    // Hot keys: a page read often (one read in 8 is counted, at random,
    // so often enough that it is whatever the draw) is listed under its
    // family, and the learned warm-up at the start is told.
    for _ in 0..120 {
        let status = server
            .request(Method::GET, "/api/content?page=4")
            .send()
            .await?
            .status();
        check!(status == 200, "page 4: {status}");
    }
    wait_displayed(
        browser,
        "[data-testid=cache-hot-row][data-family=content][data-key^='content:4:']",
    )
    .await?;
    wait_for("the learned warm-up at the start", async || {
        let learned = browser.find(Css("[data-testid=cache-learned]")).await?;
        Ok((learned.attr("data-reason").await?.as_deref() == Some("start")).then_some(()))
    })
    .await?;

    // Warm-up: the progress bar fills and the text says done.
    let users = browser.find(Css("#cache-warm-users")).await?;
    users.clear().await?;
    users.send_keys("10").await?;
    click(browser, "[data-testid=cache-warm]").await?;
    wait_for("the warm-up to finish", async || {
        let element = browser.find(Css("[data-testid=cache-warm-text]")).await?;
        Ok((element.attr("data-state").await?.as_deref() == Some("done")).then_some(()))
    })
    .await?;
    let bar = browser
        .find(Css("[data-testid=cache-warm-progress]"))
        .await?;
    let (value, max) = (bar.attr("value").await?, bar.attr("max").await?);
    check!(
        value.is_some() && value == max,
        "progress {value:?} of {max:?}"
    );

    // Invalidating the schedule class makes the next read load again.
    let loads_before = figure(browser, "cache-loads-schedule")
        .await?
        .unwrap_or(0.0);
    browser
        .find(Css("[data-testid=cache-type]"))
        .await?
        .select_by_value("schedule")
        .await?;
    let pattern = browser.find(Css("[data-testid=cache-pattern]")).await?;
    pattern.clear().await?;
    pattern.send_keys("2:*").await?;
    click(browser, "[data-testid=cache-drop]").await?;
    let message = wait_for("the invalidation", async || {
        let text = browser
            .find(Css("[data-testid=cache-drop-result]"))
            .await?
            .text()
            .await?;
        Ok((!text.is_empty()).then_some(text))
    })
    .await?;
    check!(message.contains("today:2:*"), "invalidation: {message:?}");
    server
        .request(Method::GET, "/api/review/today?user_id=2")
        .send()
        .await?;
    wait_for("a reload after the invalidation", async || {
        Ok(figure(browser, "cache-loads-schedule")
            .await?
            .filter(|&loads| loads > loads_before))
    })
    .await?;

    // On embedded defaults the queue panel shows the in-process processors
    // at work.
    let status = server
        .admin(Method::POST, "/api/queue/analytics")
        .json(&json!({ "days": 7 }))
        .send()
        .await?
        .status();
    check!(status == 202, "enqueue analytics: {status}");
    wait_for("the analytics job to complete", async || {
        Ok(figure(browser, "queue-completed-analytics")
            .await?
            .filter(|&completed| completed == 1.0))
    })
    .await?;
    let backend = browser
        .find(Css("[data-testid=queue-backend]"))
        .await?
        .text()
        .await?;
    check!(
        backend.contains("in this process"),
        "processors: {backend:?}"
    );
    // The process that runs them, announced like any worker of a fleet,
    // with the job it completed.
    let pid = std::process::id();
    wait_for("this process among the worker processes", async || {
        Ok(figure(browser, &format!("queue-process-completed-{pid}"))
            .await?
            .filter(|&completed| completed >= 1.0))
    })
    .await?;
    let row = browser
        .find(Css(&format!("[data-testid=queue-process-{pid}]")))
        .await?
        .text()
        .await?;
    check!(row.contains("alive"), "process row: {row:?}");

    console_is_clean(browser).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queue_panel_shows_progress_and_failures_and_retries_cancels_and_pauses() -> TestResult
{
    // Queues on Redis: the API only enqueues, and this test is the worker,
    // so that it decides when a job fails and how long it runs.
    let url = RedisServer::shared().url();
    let prefix = format!("dash{}", std::process::id());
    let server = TestServer::start_with(|config| {
        config.queue.redis_url = Some(url.clone());
        config.queue.prefix.clone_from(&prefix);
        config.queue.email.attempts = 1;
        config.queue.email.backlog = 500;
    })
    .await;
    let queues = Queues::redis(Builder::from_config(RedisConfig::from_url(&url)?))
        .prefix(prefix)
        .connect()
        .await?;
    in_browser(server, async |browser, server| {
        use_queue_panel(browser, server, &queues).await
    })
    .await
}

async fn use_queue_panel(browser: &Client, server: &TestServer, queues: &Queues) -> TestResult {
    // Report jobs run until cancelled, after saying how far they got; an
    // email job fails its first run, so it dies (one attempt) until retried.
    // A lease a late renewal on a busy machine does not lose (which would
    // run the job again); the cancellation reaches the run with a renewal,
    // every 5 s.
    let reports = queues
        .worker("report")?
        .lease(Duration::from_secs(15))?
        .start(|job: Job<Value>| async move {
            job.progress(40, "halfway through the history").await;
            job.cancellation().cancelled().await;
            Err::<(), _>(JobError::permanent("cancelled"))
        });
    let failed_once = Arc::new(AtomicBool::new(false));
    let emails = queues.worker("email")?.start(move |_job: Job<Value>| {
        let failed_once = Arc::clone(&failed_once);
        async move {
            if failed_once.swap(true, Ordering::SeqCst) {
                Ok(())
            } else {
                Err(JobError::new("the mail relay refused the message"))
            }
        }
    });
    let enqueue = async |queue: &str, body: Value| -> TestResult<String> {
        let response = server
            .admin(Method::POST, &format!("/api/queue/{queue}"))
            .json(&body)
            .send()
            .await?;
        check!(
            response.status() == 202,
            "enqueue {queue}: {}",
            response.status()
        );
        let body: Value = response.json().await?;
        Ok(body["id"].as_str().unwrap_or_default().to_owned())
    };
    let report = enqueue("report", json!({ "user_id": 2, "days": 30 })).await?;
    let email = enqueue("email", json!({ "user_id": 2, "template": "welcome" })).await?;

    sign_in(browser, server).await?;
    wait_displayed(browser, "[data-testid=queue-row-email]").await?;
    let backend = browser
        .find(Css("[data-testid=queue-backend]"))
        .await?
        .text()
        .await?;
    check!(
        backend.contains("seawall-worker"),
        "processors: {backend:?}"
    );

    // Each queue's waiting jobs an hour ahead, forecast by the API from
    // the backlog it reads (the workers here are this test's): learning
    // from its first reading, so the latest minute's mean, against the
    // queue's own bound, and nothing runs out.
    let note = wait_for("the email queue's forecast", async || {
        shown_text(browser, "queue-forecast-note-email").await
    })
    .await?;
    check!(note == "learning (50 min)", "forecast note {note:?}");
    let ahead = figure(browser, "queue-forecast-email").await?;
    check!(
        ahead.is_some_and(|jobs| jobs >= 0.0),
        "waiting in an hour: {ahead:?}"
    );
    let overview: Value = server
        .admin(Method::GET, "/api/queue")
        .send()
        .await?
        .json()
        .await?;
    let forecast = overview["queues"]
        .as_array()
        .and_then(|rows| rows.iter().find(|row| row["name"] == "email"))
        .map(|row| row["backlog_forecast"].clone())
        .unwrap_or_default();
    check!(
        forecast["bound"] == json!(500)
            && forecast["in_an_hour"]["learning"] == json!(true)
            && forecast["runs_out_seconds"].is_null(),
        "the email queue's forecast: {forecast}"
    );

    // The running report job, with its progress.
    let bar = format!("[data-testid=queue-progress-report-{report}]");
    let percent = wait_for("the report job's progress", async || {
        browser.find(Css(&bar)).await?.attr("value").await
    })
    .await?;
    check!(percent == "40", "progress {percent}");
    let text = browser
        .find(Css(&format!(
            "[data-testid=queue-progress-text-report-{report}]"
        )))
        .await?
        .text()
        .await?;
    check!(
        text.contains("halfway through the history"),
        "progress text {text:?}"
    );
    let running = figure(browser, "queue-active-report").await?;
    check!(running == Some(1.0), "running report jobs: {running:?}");

    // The dead email job, with its error; retried, it completes.
    let dead = format!("[data-testid=queue-failed-email-{email}]");
    let error = wait_for("the dead email job", async || {
        let row = browser.find(Css(&dead)).await?;
        if row.attr("data-state").await?.as_deref() != Some("dead") {
            return Ok(None);
        }
        Ok(Some(
            browser
                .find(Css(&format!("[data-testid=queue-error-email-{email}]")))
                .await?
                .text()
                .await?,
        ))
    })
    .await?;
    check!(error.contains("the mail relay refused"), "error {error:?}");
    click(browser, &format!("[data-testid=queue-retry-email-{email}]")).await?;
    wait_for("the retried email job to complete", async || {
        let gone = browser.find_all(Css(&dead)).await?.is_empty();
        let completed = figure(browser, "queue-completed-email").await?;
        Ok((gone && completed == Some(1.0)).then_some(()))
    })
    .await?;

    // Cancelled, the running job stops and leaves the list.
    click(
        browser,
        &format!("[data-testid=queue-cancel-report-{report}]"),
    )
    .await?;
    wait_for("the cancelled job to stop", async || {
        Ok(browser.find_all(Css(&bar)).await?.is_empty().then_some(()))
    })
    .await?;
    let job = server
        .admin(Method::GET, &format!("/api/queue/report/jobs/{report}"))
        .send()
        .await?
        .status();
    check!(job == 404, "the cancelled job: {job}");

    // Pause and resume, as the API reports them.
    for (label, paused) in [("paused", true), ("running", false)] {
        click(browser, "[data-testid=queue-toggle-export]").await?;
        wait_for(&format!("export to show {label}"), async || {
            let text = browser
                .find(Css("[data-testid=queue-state-export]"))
                .await?
                .text()
                .await?;
            Ok((text == label).then_some(()))
        })
        .await?;
        let overview: Value = server
            .admin(Method::GET, "/api/queue")
            .send()
            .await?
            .json()
            .await?;
        check!(
            overview["queues"][6]["name"] == "export" && overview["queues"][6]["paused"] == paused,
            "export after {label}: {}",
            overview["queues"][6]
        );
    }

    // Throughput, read from the event stream by the service every 5 s.
    let done = wait_for("a completion in the last minute", async || {
        Ok(figure(browser, "queue-done-email")
            .await?
            .filter(|&done| done >= 1.0))
    })
    .await?;
    check!(done == 1.0, "email jobs done in the last minute: {done}");
    let failures = figure(browser, "queue-failures-email").await?;
    check!(failures == Some(1.0), "email failures: {failures:?}");
    let rate = figure(browser, "queue-completed-rate").await?;
    check!(rate == Some(1.0), "completed in the last minute: {rate:?}");

    reports.shutdown(Duration::from_secs(5)).await;
    emails.shutdown(Duration::from_secs(5)).await;
    console_is_clean(browser).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_queue_panel_shows_the_recurring_jobs_and_pauses_one_and_sets_a_rate_limit()
-> TestResult {
    // On embedded defaults the API keeps the recurring jobs' schedulers.
    in_browser(
        TestServer::start_with(recurring_jobs_on).await,
        use_recurring_jobs,
    )
    .await
}

async fn use_recurring_jobs(browser: &Client, server: &TestServer) -> TestResult {
    sign_in(browser, server).await?;
    // Found and read in one script: the panel draws its rows again every
    // few seconds, and a row read after it was replaced is stale. Absent,
    // it reads as empty, which every check below refuses.
    let text = async |testid: &str| -> Result<String, CmdError> {
        Ok(shown_text(browser, testid).await?.unwrap_or_default())
    };
    let now = now_timestamp();
    for (queue, id, schedule) in [
        ("backup", "nightly-backup", r#"cron "0 3 * * *" in UTC"#),
        ("analytics", "hourly-analytics", "every 1h"),
        ("report", "daily-report", r#"cron "0 6 * * *" in UTC"#),
    ] {
        let key = format!("{queue}-{id}");
        // Upserted by a task of the processors: shown once it has run.
        let next = wait_for(&format!("the next run of {id}"), async || {
            browser
                .find(Css(&format!("[data-testid=queue-scheduler-next-{key}]")))
                .await?
                .attr("datetime")
                .await
        })
        .await?;
        check!(
            next.len() == 24 && next.ends_with('Z') && next.as_str() > now.as_str(),
            "the next run of {id}: {next:?}, now {now}"
        );
        let relative = text(&format!("queue-scheduler-next-{key}")).await?;
        check!(relative.starts_with("in "), "{id}: {relative:?}");
        let shown = text(&format!("queue-scheduler-schedule-{key}")).await?;
        check!(shown == schedule, "the schedule of {id}: {shown:?}");
        let state = text(&format!("queue-scheduler-state-{key}")).await?;
        check!(state == "active", "{id}: {state:?}");
    }

    // Paused and resumed with its button, as the API reports it.
    for (label, paused) in [("paused", true), ("active", false)] {
        click(
            browser,
            "[data-testid=queue-scheduler-toggle-analytics-hourly-analytics]",
        )
        .await?;
        wait_for(&format!("hourly-analytics to show {label}"), async || {
            let state = text("queue-scheduler-state-analytics-hourly-analytics").await?;
            Ok((state == label).then_some(()))
        })
        .await?;
        let listed: Value = server
            .admin(Method::GET, "/api/queue/analytics/schedulers")
            .send()
            .await?
            .json()
            .await?;
        let scheduler = &listed["schedulers"][0];
        check!(
            scheduler["id"] == "hourly-analytics" && scheduler["paused"] == paused,
            "hourly-analytics after {label}: {scheduler}"
        );
        let next = browser
            .find_all(Css(
                "[data-testid=queue-scheduler-next-analytics-hourly-analytics]",
            ))
            .await?;
        check!(
            next.is_empty() == paused,
            "a next run is shown exactly while it is not paused ({label})"
        );
    }

    // A rate limit set with the form shows in its table, as the API has
    // it, and goes with its button.
    browser
        .find(Css("[data-testid=queue-limit-queue]"))
        .await?
        .select_by_value("email")
        .await?;
    for (testid, value) in [("queue-limit-max", "2"), ("queue-limit-per", "60000")] {
        let input = browser
            .find(Css(&format!("[data-testid={testid}]")))
            .await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    click(browser, "[data-testid=queue-limit-set]").await?;
    let shown = wait_for("the email queue's rate limit", async || {
        match browser
            .find(Css("[data-testid=queue-limit-rate-email]"))
            .await
        {
            Ok(cell) => Ok(Some(cell.text().await?)),
            Err(_) => Ok(None),
        }
    })
    .await?;
    check!(shown == "2 per 1 min", "the rate limit shown: {shown:?}");
    let limits: Value = server
        .admin(Method::GET, "/api/queue/email/limits")
        .send()
        .await?
        .json()
        .await?;
    check!(
        limits["rate_limit"] == serde_json::json!({"max": 2, "per_ms": 60_000}),
        "the email queue's limits: {limits}"
    );
    click(browser, "[data-testid=queue-limit-clear-email]").await?;
    wait_for("the rate limit to go", async || {
        let rows = browser
            .find_all(Css("[data-testid=queue-limit-email]"))
            .await?;
        Ok(rows.is_empty().then_some(()))
    })
    .await?;

    // A flow's parent waits for its child, paused in its queue: the report
    // queue's row counts it as awaiting children.
    let status = server
        .admin(Method::POST, "/api/queue/analytics/pause")
        .send()
        .await?
        .status();
    check!(status == 200, "pausing analytics: {status}");
    let status = server
        .admin(Method::POST, "/api/queue/flows")
        .json(&json!({
            "queue": "report",
            "payload": {"user_id": 2, "days": 7},
            "children": [{"queue": "analytics", "payload": {"days": 7}}],
        }))
        .send()
        .await?
        .status();
    check!(status == 202, "enqueueing a flow: {status}");
    wait_for("the report awaiting its child", async || {
        let awaiting = figure(browser, "queue-waiting_children-report").await?;
        Ok((awaiting == Some(1.0)).then_some(()))
    })
    .await?;

    console_is_clean(browser).await?;
    Ok(())
}

/// Now as the API writes times (RFC 3339, UTC, milliseconds).
fn now_timestamp() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_millis());
    seawall_app::time::timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Opens the dashboard and signs in with the admin token.
#[tokio::test(flavor = "multi_thread")]
async fn the_promotions_panel_creates_a_campaign_and_a_sale_and_runs_a_scenario() -> TestResult {
    in_browser(TestServer::start().await, use_promotions_panel).await
}

async fn use_promotions_panel(browser: &Client, server: &TestServer) -> TestResult {
    sign_in(browser, server).await?;
    wait_displayed(browser, "[data-testid=promo-campaigns]").await?;

    // A campaign of five coupons, created through the form.
    let campaign_id =
        create_in_panel(browser, server, "promo-campaign", "browser campaign", 5).await?;
    wait_for_figure(browser, &format!("promo-remaining-{campaign_id}"), 5.0).await?;

    // Three coupons issued through the public API show up live.
    for user_id in 1..=3 {
        let status = server
            .request(Method::POST, &format!("/api/coupons/{campaign_id}/issue"))
            .json(&json!({ "user_id": user_id }))
            .send()
            .await?
            .status();
        check!(status == 201, "issuing to user {user_id}: {status}");
    }
    wait_for_figure(browser, &format!("promo-issued-{campaign_id}"), 3.0).await?;
    wait_for_figure(browser, &format!("promo-remaining-{campaign_id}"), 2.0).await?;
    wait_for_figure(browser, &format!("promo-written-{campaign_id}"), 3.0).await?;

    // A sale of seven units, created through the form.
    let sale_id = create_in_panel(browser, server, "promo-sale", "browser sale", 7).await?;
    wait_for_figure(browser, &format!("promo-sale-remaining-{sale_id}"), 7.0).await?;

    // The full journey: 4 virtual users × 5 rounds, each round a coupon,
    // an earning and an order.
    browser
        .find(Css("[data-testid=promo-scenario]"))
        .await?
        .select_by_value("journey")
        .await?;
    for (testid, value) in [("promo-users", "4"), ("promo-rounds", "5")] {
        let input = browser
            .find(Css(&format!("[data-testid={testid}]")))
            .await?;
        input.clear().await?;
        input.send_keys(value).await?;
    }
    click(browser, "[data-testid=promo-run]").await?;
    wait_for("the run to finish", async || {
        let state = browser
            .find(Css("[data-testid=promo-run-state]"))
            .await?
            .attr("value")
            .await?;
        Ok((state.as_deref() == Some("finished")).then_some(()))
    })
    .await?;
    for (testid, expected) in [
        ("promo-run-operations", 60.0),
        ("promo-run-succeeded", 60.0),
        ("promo-run-refused", 0.0),
        ("promo-run-failed", 0.0),
    ] {
        let shown = figure(browser, testid).await?;
        check!(
            shown == Some(expected),
            "{testid}: {shown:?}, not {expected}"
        );
    }
    let p95 = figure(browser, "promo-run-p95").await?;
    check!(p95.is_some_and(|ms| ms > 0.0), "p95: {p95:?}");
    // Read in one script: the panel draws its figures again while they are
    // read, and an element read after it was replaced is stale.
    let faults = browser
        .execute(
            "return Array.from(document.querySelectorAll('[data-testid=promo-run-audit] data'),
                 (data) => data.getAttribute('value'));",
            vec![],
        )
        .await?;
    let faults = faults.as_array().cloned().unwrap_or_default();
    check!(faults.len() == 8, "{} invariants shown", faults.len());
    for value in faults {
        check!(value == json!("0"), "a fault counts {value}");
    }

    // The run's own campaign and sale show what it took.
    let runs: Value = server
        .admin(Method::GET, "/api/promotions/scenarios")
        .send()
        .await?
        .json()
        .await?;
    let run = &runs[0];
    check!(run["state"] == "finished", "the run: {run}");
    let (run_campaign, run_sale) = (&run["campaign_id"], &run["sale_id"]);
    wait_for_figure(browser, &format!("promo-issued-{run_campaign}"), 20.0).await?;
    wait_for_figure(browser, &format!("promo-sold-{run_sale}"), 20.0).await?;

    console_is_clean(browser).await?;
    Ok(())
}

/// Fills the campaign or sale form (`prefix`), submits it, and answers the
/// id the admin API lists it under.
async fn create_in_panel(
    browser: &Client,
    server: &TestServer,
    prefix: &str,
    name: &str,
    amount: u32,
) -> TestResult<i64> {
    for (field, value) in [("name", name.to_owned()), ("amount", amount.to_string())] {
        let input = browser
            .find(Css(&format!("[data-testid={prefix}-{field}]")))
            .await?;
        input.clear().await?;
        input.send_keys(&value).await?;
    }
    click(browser, &format!("[data-testid={prefix}-create]")).await?;
    let message = wait_for("the form's answer", async || {
        let text = browser
            .find(Css(&format!("[data-testid={prefix}-result]")))
            .await?
            .text()
            .await?;
        Ok((!text.is_empty()).then_some(text))
    })
    .await?;
    check!(message.starts_with("Created"), "{prefix}: {message:?}");
    let overview: Value = server
        .admin(Method::GET, "/api/promotions")
        .send()
        .await?
        .json()
        .await?;
    let list = if prefix == "promo-sale" {
        "sales"
    } else {
        "campaigns"
    };
    let id = overview[list]
        .as_array()
        .and_then(|items| items.iter().find(|item| item["name"] == name))
        .and_then(|item| item["id"].as_i64())
        .ok_or_else(|| format!("{name} is not among the {list}: {overview}"))?;
    Ok(id)
}

/// Waits for the figure `testid` to show `expected`.
async fn wait_for_figure(browser: &Client, testid: &str, expected: f64) -> TestResult {
    wait_for(&format!("{testid} to show {expected}"), async || {
        Ok(figure(browser, testid)
            .await?
            .filter(|&shown| (shown - expected).abs() < f64::EPSILON)
            .map(|_| ()))
    })
    .await
}

async fn sign_in(browser: &Client, server: &TestServer) -> TestResult {
    browser.goto(&format!("{}/", server.base_url)).await?;
    wait_displayed(browser, "#token").await?;
    browser
        .find(Css("#token"))
        .await?
        .send_keys(&server.admin_token)
        .await?;
    click(browser, "#token-submit").await?;
    Ok(())
}

/// Fails if the page's Content-Security-Policy blocked anything or a script
/// threw.
async fn console_is_clean(browser: &Client) -> TestResult {
    let console = chromedriver::browser_log(browser).await?;
    let broken: Vec<&String> = console
        .iter()
        .filter(|line| line.contains("Content Security Policy") || line.contains("Uncaught"))
        .collect();
    check!(broken.is_empty(), "browser console: {broken:#?}");
    Ok(())
}

/// The number behind a figure (the `value` of its `<data>` element), once the
/// panel has shown one; `None` while it is absent or shows none. Found and
/// read in one script, since the panels draw their figures again every few
/// seconds: an element found, then read after it was replaced, is stale.
async fn figure(browser: &Client, testid: &str) -> Result<Option<f64>, CmdError> {
    let value = browser
        .execute(
            "const element = document.querySelector(arguments[0]);
             return element ? element.getAttribute('value') : null;",
            vec![json!(format!("[data-testid={testid}]"))],
        )
        .await?;
    Ok(value
        .as_str()
        .and_then(|value| value.parse::<f64>().ok())
        .filter(|number| number.is_finite()))
}

/// The text an element shows, trimmed, as WebDriver reads it; `None` while
/// it is absent. Found and read in one script, as [`figure`] is.
async fn shown_text(browser: &Client, testid: &str) -> Result<Option<String>, CmdError> {
    let value = browser
        .execute(
            "const element = document.querySelector(arguments[0]);
             return element ? element.innerText.trim() : null;",
            vec![json!(format!("[data-testid={testid}]"))],
        )
        .await?;
    Ok(value.as_str().map(str::to_owned))
}

async fn wait_displayed(browser: &Client, selector: &str) -> TestResult {
    wait_for(&format!("{selector} to show"), async || {
        Ok(browser
            .find(Css(selector))
            .await?
            .is_displayed()
            .await?
            .then_some(()))
    })
    .await
}

/// What sessionStorage holds under the dashboard's key, and the
/// localStorage keys that are that key or hold `token` or the stored value.
async fn stored_tokens(browser: &Client, token: &str) -> Result<Value, CmdError> {
    browser
        .execute(
            "const [key, token] = arguments;
             const stored = sessionStorage.getItem(key);
             const local = Object.entries(localStorage)
                 .filter(([k, v]) => k === key || v.includes(token) || (stored !== null && v.includes(stored)))
                 .map(([k]) => k);
             return { session: stored, local };",
            vec![json!(TOKEN_KEY), json!(token)],
        )
        .await
}

/// Clicks what `selector` finds, once it is there: a panel drawn again
/// between finding the element and clicking it (every 2 s, and later on a
/// busy machine) leaves a stale element, which is found again and clicked.
async fn click(browser: &Client, selector: &str) -> TestResult {
    wait_for(&format!("{selector} to be clicked"), async || {
        browser.find(Css(selector)).await?.click().await?;
        Ok(Some(()))
    })
    .await
}

/// Polls `probe` every 100 ms until it gives `Some`, for at most
/// [`wait::patience`].
///
/// Transient WebDriver errors (the element is not there yet, or was
/// re-rendered) count as "not yet"; others end the wait. On timeout the error
/// names `what` and the last transient error, if any.
async fn wait_for<T>(
    what: &str,
    mut probe: impl AsyncFnMut() -> Result<Option<T>, CmdError>,
) -> TestResult<T> {
    let timeout = wait::patience();
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match probe().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(error)
                if error.is_no_such_element()
                    || error.is_stale_element_reference()
                    || error.is_element_not_interactable() =>
            {
                last = Some(error);
            }
            Err(error) => return Err(error.into()),
        }
        if Instant::now() >= deadline {
            let last = last
                .map(|error| format!(" (last: {error})"))
                .unwrap_or_default();
            return Err(format!("waited {timeout:?} for {what}{last}").into());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

async fn report_failure(browser: &Client, driver: &ChromeDriver, error: &dyn std::fmt::Display) {
    eprintln!("browser test failed: {error}");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-failure.png");
    match tokio::time::timeout(COMMAND_TIMEOUT, browser.screenshot()).await {
        Ok(Ok(png)) => match std::fs::write(&path, png) {
            Ok(()) => eprintln!("screenshot: {}", path.display()),
            Err(write) => eprintln!("(no screenshot: cannot write {}: {write})", path.display()),
        },
        Ok(Err(shot)) => eprintln!("(no screenshot: {shot})"),
        Err(_) => eprintln!("(no screenshot: no answer in {COMMAND_TIMEOUT:?})"),
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, chromedriver::browser_log(browser)).await {
        Ok(Ok(lines)) => eprintln!("browser console:\n{}", lines.join("\n")),
        Ok(Err(log)) => eprintln!("(no browser console: {log})"),
        Err(_) => eprintln!("(no browser console: no answer in {COMMAND_TIMEOUT:?})"),
    }
    let log = driver.log();
    let lines: Vec<&str> = log.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    eprintln!("chromedriver log, last lines:\n{tail}");
}
