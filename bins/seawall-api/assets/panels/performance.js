/**
 * Performance panel: throughput, error rate and latency quantiles over the
 * last minute, a latency chart over the last 15 minutes, health, the route
 * classes' objectives (burn rates and budget), the request rate beside its
 * baseline over the last two hours, and the slow-query and slow-API logs. Reads `GET /api/performance` and
 * `GET /api/performance?type=health` every 2 s.
 */

import { LineChart, decimalsForStep } from "../chart.js";

const REFRESH_MS = 2000;
/** The perfmon layer's histogram; a configured prefix may come before it. */
const HTTP_METRIC = "http_server_request_duration_seconds";
const SLOW_ROWS = 20;

const HEALTH = {
  healthy: { label: "Healthy", tone: "is-ok" },
  degraded: { label: "Degraded", tone: "is-warn" },
  unhealthy: { label: "Unhealthy", tone: "is-bad" },
};

const CHECK_TONES = { pass: "is-ok", warn: "is-warn", fail: "is-bad" };

/** The request rate per minute beside its baseline (what was expected of each minute). */
const BASELINE = [
  { key: "observed", label: "observed", color: "--series-1" },
  { key: "expected", label: "baseline", color: "--series-2", dash: [7, 4] },
  { key: "low", label: "90 % interval", color: "--series-3", dash: [2, 4] },
  { key: "high", label: "", color: "--series-3", dash: [2, 4] },
];

/** The burn-rate windows the SLO table shows, in minutes, and their headings. */
const SLO_WINDOWS = [
  [5, "5 min"],
  [60, "1 h"],
  [360, "6 h"],
  [4320, "3 days"],
];

const BURNING = {
  no: { label: "within budget", tone: "is-ok" },
  steady: { label: "burning steadily", tone: "is-warn" },
  fast: { label: "burning fast", tone: "is-bad" },
};

const QUANTILES = [
  { key: "p50_us", label: "p50", color: "--series-1" },
  { key: "p95_us", label: "p95", color: "--series-2", dash: [7, 4] },
  { key: "p99_us", label: "p99", color: "--series-3", dash: [2, 4] },
];

/** Requests since start: the lifetime counts of every HTTP series. */
function lifetimeRequests(snapshot) {
  const histograms = (snapshot.histograms ?? []).filter((histogram) => histogram.name?.endsWith(HTTP_METRIC));
  if (histograms.length === 0) return null;
  return histograms
    .flatMap((histogram) => histogram.series ?? [])
    .reduce((total, series) => total + (series.lifetime?.count ?? 0), 0);
}

/** A span of seconds as a person reads it: "45 min", "3.2 h", "2.5 days". */
function span(seconds) {
  if (seconds < 3600) return `${Math.max(1, Math.round(seconds / 60))} min`;
  if (seconds < 2 * 86_400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} days`;
}

/** Bytes in MiB, e.g. "212.4 MiB". */
function mib(bytes) {
  return `${(bytes / 1_048_576).toFixed(1)} MiB`;
}

/** A health check's observed value with its unit, e.g. "2.58 ms" or "0 %". */
function observed(result, format) {
  const value = result.observedValue;
  if (typeof value !== "number") return result.status ?? "?";
  switch (result.observedUnit) {
    case "ms":
      return format.ms(value);
    case "percent":
      return format.percent(value / 100);
    default:
      return `${format.count(value)} ${result.observedUnit ?? ""}`.trim();
  }
}

export default {
  id: "performance",
  title: "Performance",
  order: 10,

  mount(container, ctx) {
    const { h, format } = ctx;

    /** A stat tile: a <data> element for the number and a note under it. */
    const tile = (testid, label, note) => {
      const value = h("data", { class: "stat-value", "data-testid": testid, value: "" }, "—");
      const detail = h("span", { class: "stat-note", "data-testid": `${testid}-note` }, note);
      const item = h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, value, detail));
      return { item, value, detail };
    };
    const show = (element, raw, text) => {
      element.value = raw === null || raw === undefined || Number.isNaN(raw) ? "" : String(raw);
      element.textContent = text;
    };

    const throughput = tile("perf-throughput", "Throughput", "last minute");
    const requests = tile("perf-requests-total", "Requests since start", "");
    const errors = tile("perf-error-rate", "Error rate", "last minute");
    const p50 = tile("perf-p50", "Latency p50", "median, last minute");
    const p95 = tile("perf-p95", "Latency p95", "last minute");
    const p99 = tile("perf-p99", "Latency p99", "last minute");
    const rateAhead = tile("perf-rate-forecast", "Requests in an hour", "forecast");
    const redisRunsOut = tile("perf-redis-runs-out", "Redis memory runs out", "forecast");

    const healthBadge = h("data", { class: "badge", "data-testid": "perf-health", value: "" }, "—");
    const healthReason = h("span", { class: "health-reason", "data-testid": "perf-health-reason" });
    const healthChecks = h("ul", { class: "checks", "aria-label": "Health checks" });
    const health = h(
      "div",
      { class: "health", role: "group", "aria-labelledby": "perf-health-label" },
      h("span", { class: "health-label", id: "perf-health-label" }, "Health"),
      healthBadge,
      healthReason,
      healthChecks,
    );

    const stats = h(
      "dl",
      { class: "stats" },
      throughput.item,
      requests.item,
      errors.item,
      p50.item,
      p95.item,
      p99.item,
      rateAhead.item,
      redisRunsOut.item,
    );

    const canvas = h("canvas", {
      role: "img",
      "data-testid": "perf-latency-chart",
      "aria-label": "Latency chart: no data yet",
    });
    const legend = h(
      "ul",
      { class: "legend", "aria-hidden": "true" },
      QUANTILES.map((q, index) => h("li", {}, h("span", { class: `swatch swatch-${index + 1}` }), q.label)),
    );
    const chartSection = h(
      "section",
      { class: "panel-section", "aria-labelledby": "perf-chart-title" },
      h("h3", { id: "perf-chart-title" }, "Latency ", h("span", { class: "section-note" }, "per 5 s, last 15 minutes")),
      h("div", { class: "chart" }, canvas),
      legend,
    );

    const baselineCanvas = h("canvas", {
      role: "img",
      "data-testid": "perf-rate-baseline-chart",
      "aria-label": "Request rate chart: no minute closed yet",
    });
    const baselineSection = h(
      "section",
      { class: "panel-section", "aria-labelledby": "perf-baseline-title" },
      h(
        "h3",
        { id: "perf-baseline-title" },
        "Request rate and its baseline ",
        h("span", { class: "section-note" }, "requests/s per minute, last 2 hours; the baseline is the forecast of each minute made a minute before"),
      ),
      h("div", { class: "chart" }, baselineCanvas),
      h(
        "ul",
        { class: "legend", "aria-hidden": "true" },
        BASELINE.filter((series) => series.label).map((series, index) =>
          h("li", {}, h("span", { class: `swatch swatch-${index + 1}` }), series.label),
        ),
      ),
    );

    const sloBody = h("tbody");
    const sloTable = h(
      "table",
      { "data-testid": "slo-table" },
      h(
        "caption",
        {},
        "Service level objectives ",
        h("span", { class: "section-note" }, "this instance's requests: burn rate per window (1 spends 30 days' budget in 30 days), and the budget the last 3 days spent"),
      ),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          h("th", { scope: "col" }, "Class"),
          h("th", { scope: "col" }, "Objective"),
          SLO_WINDOWS.map(([, heading]) => h("th", { scope: "col", class: "num" }, heading)),
          h("th", { scope: "col", class: "num" }, "Budget spent"),
          h("th", { scope: "col" }, "State"),
        ),
      ),
      sloBody,
    );

    const slowTable = (testid, title, textHeading) => {
      const note = h("span", { class: "section-note" });
      const body = h("tbody");
      const table = h(
        "table",
        { "data-testid": testid },
        h("caption", {}, `${title} `, note),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col", class: "num" }, "Duration"),
            h("th", { scope: "col" }, textHeading),
            h("th", { scope: "col" }, "When"),
          ),
        ),
        body,
      );
      return { element: h("div", { class: "table-wrap" }, table), note, body };
    };
    const slowQueries = slowTable("slow-queries", "Slow queries", "Query");
    const slowApis = slowTable("slow-apis", "Slow API calls", "Request");

    container.append(
      health,
      stats,
      chartSection,
      h("section", { class: "panel-section", "aria-label": "Service level objectives" }, h("div", { class: "table-wrap" }, sloTable)),
      baselineSection,
      h("section", { class: "panel-section two-columns", "aria-label": "Slow logs" }, slowQueries.element, slowApis.element),
    );

    const baselineChart = new LineChart(baselineCanvas, {
      series: BASELINE,
      formatY: (value, step) => `${value.toFixed(decimalsForStep(step))}/s`,
      emptyText: "No minute closed yet",
      minSpanMs: 30 * 60_000,
    });

    const chart = new LineChart(canvas, {
      series: QUANTILES,
      formatY: (value, step) => `${value.toFixed(decimalsForStep(step))} ms`,
      emptyText: "No requests in the last 15 minutes",
      minSpanMs: 5 * 60_000,
    });

    const renderSlowLog = (table, log) => {
      const entries = log?.entries ?? [];
      const threshold = log?.threshold_ms;
      table.note.textContent = `over ${format.ms(threshold)} · ${format.count(log?.total ?? 0)} since start, slowest first`;
      if (entries.length === 0) {
        table.body.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 3 }, "None recorded")));
        return;
      }
      table.body.replaceChildren(
        ...entries.slice(0, SLOW_ROWS).map((entry) =>
          h(
            "tr",
            {},
            h("td", { class: "num" }, h("data", { value: entry.duration_ms }, format.ms(entry.duration_ms))),
            h("td", { class: "text" }, entry.text ?? ""),
            h("td", { class: "when" }, h("time", { datetime: entry.at, title: format.dateTime(entry.at) }, format.time(entry.at))),
          ),
        ),
      );
    };

    const renderHealth = (report) => {
      if (report instanceof Error) {
        healthBadge.className = "badge";
        show(healthBadge, "", "Unknown");
        healthReason.textContent = report.message;
        healthChecks.replaceChildren();
        return;
      }
      const known = HEALTH[report?.health] ?? { label: report?.health ?? "Unknown", tone: "" };
      healthBadge.className = `badge ${known.tone}`.trim();
      show(healthBadge, report?.health ?? "", known.label);
      healthReason.textContent = report?.output || (report?.status === "pass" ? "All checks pass" : "");
      healthChecks.replaceChildren(
        ...Object.entries(report?.checks ?? {}).flatMap(([name, results]) =>
          (Array.isArray(results) ? results : []).map((result) =>
            h(
              "li",
              { class: `check ${CHECK_TONES[result.status] ?? ""}`.trim(), title: `${name}: ${result.status ?? "unknown"}` },
              `${name} `,
              h("strong", {}, observed(result, format)),
            ),
          ),
        ),
      );
    };

    /** The forecasts an hour ahead: the request rate, and the Redis node that reaches its limit soonest. */
    const renderCapacity = (capacity) => {
      const rate = capacity?.requests_per_second_in_an_hour;
      show(rateAhead.value, rate?.value, format.rate(rate?.value));
      rateAhead.detail.textContent = !rate
        ? "forecast"
        : rate.learning
          ? "learning (50 min): the latest minute"
          : `90 %: ${format.rate(rate.low)} to ${format.rate(rate.high)}`;
      const nodes = Array.isArray(capacity?.redis) ? capacity.redis : [];
      if (nodes.length === 0) {
        show(redisRunsOut.value, null, "—");
        redisRunsOut.detail.textContent = "no Redis read";
        return;
      }
      const soonest = nodes
        .filter((node) => typeof node.runs_out_seconds === "number")
        .sort((a, b) => a.runs_out_seconds - b.runs_out_seconds)[0];
      const shown = soonest ?? nodes[0];
      show(
        redisRunsOut.value,
        soonest ? soonest.runs_out_seconds : "",
        soonest ? (soonest.runs_out_seconds === 0 ? "now" : `in ${span(soonest.runs_out_seconds)}`) : "not within a week",
      );
      redisRunsOut.value.classList.toggle("is-bad-text", Boolean(soonest) && soonest.runs_out_seconds < 6 * 3600);
      const limit = shown.max_bytes > 0 ? `of ${mib(shown.max_bytes)}` : "no maxmemory";
      redisRunsOut.detail.textContent = `${shown.node}: ${mib(shown.used_bytes)} ${limit}`;
    };

    /** Each route class's two objectives: burn rates per window, budget spent, and whether an alert's condition holds. */
    const renderSlo = (classes) => {
      const rows = (Array.isArray(classes) ? classes : []).flatMap((entry) =>
        [
          ["availability", `${format.percent(entry.availability?.objective)} without a 5xx`],
          ["latency", `${format.percent(entry.latency?.objective)} within ${format.ms(entry.latency_bound_ms)}`],
        ].map(([objective, text]) => {
          const judged = entry[objective] ?? {};
          const windows = Array.isArray(judged.windows) ? judged.windows : [];
          const state = BURNING[judged.burning] ?? { label: judged.burning ?? "?", tone: "" };
          return h(
            "tr",
            { "data-testid": "slo-row", "data-class": entry.class, "data-objective": objective },
            h("th", { scope: "row" }, entry.class),
            h("td", {}, text),
            SLO_WINDOWS.map(([minutes]) => {
              const window = windows.find((candidate) => candidate.minutes === minutes);
              const title = window ? `${format.count(window.bad)} of ${format.count(window.requests)} requests broke it` : "";
              return h(
                "td",
                { class: "num", title },
                h("data", { "data-testid": `slo-burn-${minutes}`, value: window?.burn_rate ?? "" }, window ? window.burn_rate.toFixed(2) : "—"),
              );
            }),
            h("td", { class: "num" }, h("data", { "data-testid": "slo-budget-spent", value: judged.budget_spent ?? "" }, format.percent(judged.budget_spent))),
            h("td", {}, h("data", { class: `badge ${state.tone}`.trim(), "data-testid": "slo-burning", value: judged.burning ?? "" }, state.label)),
          );
        }),
      );
      sloBody.replaceChildren(
        ...(rows.length > 0 ? rows : [h("tr", {}, h("td", { class: "empty", colspan: SLO_WINDOWS.length + 4 }, "Not reported"))]),
      );
    };

    /** The request rate's minutes beside their baselines. */
    const renderBaseline = (minutes) => {
      const points = Array.isArray(minutes) ? minutes : [];
      baselineChart.update({
        x: points.map((point) => point.at_ms),
        y: BASELINE.map((series) => points.map((point) => (typeof point[series.key] === "number" ? point[series.key] : null))),
      });
      const last = points.at(-1);
      baselineCanvas.setAttribute(
        "aria-label",
        !last
          ? "Request rate chart: no minute closed yet"
          : typeof last.expected === "number"
            ? `Request rate per minute over the last ${points.length} minutes; latest ${format.rate(last.observed)} against a baseline of ${format.rate(last.expected)} (90 %: ${format.rate(last.low)} to ${format.rate(last.high)})`
            : `Request rate per minute over the last ${points.length} minutes; latest ${format.rate(last.observed)}; the baseline is still learning`,
      );
    };

    const render = (snapshot, report) => {
      const minute = snapshot.http?.[0];
      const latency = minute?.latency;
      const counted = latency?.count ?? 0;
      const quantile = (key) => (counted > 0 ? latency?.[key] : null);

      show(throughput.value, minute?.rate_per_sec, format.rate(minute?.rate_per_sec));
      const total = lifetimeRequests(snapshot) ?? counted;
      show(requests.value, total, format.count(total));
      requests.detail.textContent = `${format.count(counted)} in the last minute`;
      show(errors.value, minute?.error_rate, format.percent(minute?.error_rate));
      errors.value.classList.toggle("is-bad-text", (minute?.error_rate ?? 0) > 0.05);
      errors.detail.textContent = `${format.count(minute?.errors ?? 0)} errors, last minute`;
      for (const [tileOf, key] of [[p50, "p50_us"], [p95, "p95_us"], [p99, "p99_us"]]) {
        const us = quantile(key);
        show(tileOf.value, us === null || us === undefined ? null : us / 1000, format.us(us ?? NaN));
      }
      p99.detail.textContent = counted > 0 ? `max ${format.us(latency.max_us)}, last minute` : "last minute";

      renderHealth(report);
      renderCapacity(snapshot.capacity);
      renderSlo(snapshot.slo);
      renderBaseline(snapshot.capacity?.request_rate_minutes);

      const timeline = Array.isArray(snapshot.timeline) ? snapshot.timeline : [];
      chart.update({
        x: timeline.map((point) => point.at_ms ?? Date.parse(point.at)),
        y: QUANTILES.map((q) => timeline.map((point) => (point.requests > 0 ? point[q.key] / 1000 : null))),
      });
      const last = timeline.findLast((point) => point.requests > 0);
      canvas.setAttribute(
        "aria-label",
        last
          ? `Latency over the last 15 minutes; latest ${QUANTILES.map((q) => `${q.label} ${format.us(last[q.key])}`).join(", ")}`
          : "Latency chart: no requests in the last 15 minutes",
      );

      renderSlowLog(slowQueries, snapshot.slow_queries);
      renderSlowLog(slowApis, snapshot.slow_apis);
    };

    const refresh = async () => {
      const [snapshot, report] = await Promise.all([
        ctx.fetchJson("/api/performance"),
        // Any failure shows as "Unknown" rather than hiding the metrics.
        ctx.fetchJson("/api/performance?type=health").catch((error) => {
          if (error?.name === "AuthError" || error?.name === "AbortError") throw error;
          return error instanceof Error ? error : new Error(String(error));
        }),
      ]);
      render(snapshot, report);
    };

    const stop = ctx.every(REFRESH_MS, refresh);
    return () => {
      stop();
      chart.destroy();
      baselineChart.destroy();
    };
  },
};
