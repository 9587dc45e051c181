/**
 * Queue panel: the depth of each of the nine queues per state and its
 * waiting jobs forecast an hour ahead (with when they pass the queue's
 * backlog bound, when within a week), jobs per second over every worker (read from the queues' event streams, sampled by
 * the service every 5 s), every worker process of the fleet (alive or not,
 * what each runs, its jobs per second), the running jobs with their
 * progress, the failed and dead jobs with their errors, the recurring jobs'
 * schedulers with their next and last runs, and pause, resume, retry and
 * cancel.
 *
 * Reads `GET /api/queue` (the schedulers included), then the running,
 * delayed and dead jobs of the queues that have any
 * (`GET /api/queue/{queue}/jobs?state=…`).
 */

import { LineChart, decimalsForStep } from "../chart.js";

const REFRESH_MS = 2000;
/** Jobs listed per queue and state. */
const LISTED = 20;
const SERIES = [
  { key: "completed_per_second", label: "completed", color: "--series-1" },
  { key: "failed_per_second", label: "failed attempts", color: "--series-3", dash: [2, 3] },
  { key: "enqueued_per_second", label: "enqueued", color: "--series-2", dash: [7, 4] },
];
const relativeTime = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const UNITS = [
  ["day", 86_400],
  ["hour", 3_600],
  ["minute", 60],
  ["second", 1],
];
/** "in 3 hours", "2 minutes ago": from now to an RFC 3339 time. */
function relative(iso) {
  const seconds = (Date.parse(iso) - Date.now()) / 1000;
  if (!Number.isFinite(seconds)) return "—";
  const [unit, size] = UNITS.find(([, size]) => Math.abs(seconds) >= size) ?? UNITS.at(-1);
  return relativeTime.format(Math.round(seconds / size), unit);
}
/** A span of time ahead, e.g. "40 min", "5.5 h", "3.2 days". */
function span(seconds) {
  if (seconds < 3600) return `${Math.max(1, Math.round(seconds / 60))} min`;
  if (seconds < 2 * 86_400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86_400).toFixed(1)} days`;
}
const DEPTHS = [
  ["waiting", "waiting"],
  ["delayed", "delayed"],
  ["waiting_children", "awaiting children"],
  ["active", "running"],
  ["completed", "completed"],
  ["dead", "dead"],
];

export default {
  id: "queue",
  title: "Job queues",
  order: 40,

  mount(container, ctx) {
    const { h, format } = ctx;

    const canvas = h("canvas", { role: "img", "data-testid": "queue-throughput-chart", "aria-label": "Jobs per second: no data yet" });
    const chart = new LineChart(canvas, {
      series: SERIES,
      formatY: (value, step) => `${value.toFixed(decimalsForStep(step))}/s`,
      emptyText: "Collecting…",
      minSpanMs: 2 * 60_000,
    });
    const chartSection = h(
      "section",
      { class: "panel-section" },
      h("h3", {}, "Jobs per second ", h("span", { class: "section-note" }, "every queue and worker, every 5 s")),
      h("div", { class: "chart" }, canvas),
      h(
        "ul",
        { class: "legend", "aria-hidden": "true" },
        SERIES.map((series, index) => h("li", {}, h("span", { class: `swatch swatch-${index + 1}` }), series.label)),
      ),
    );

    const tile = (label, value) => h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, value));
    const figure = (testid) => h("data", { class: "stat-value", "data-testid": testid, value: "" }, "—");
    const totals = {
      backend: h("span", { class: "stat-note", "data-testid": "queue-backend" }, "—"),
      waiting: figure("queue-total-waiting"),
      active: figure("queue-total-active"),
      dead: figure("queue-total-dead"),
      rate: figure("queue-completed-rate"),
    };
    const totalList = h(
      "dl",
      { class: "stats" },
      tile("Waiting", totals.waiting),
      tile("Running", totals.active),
      tile("Dead", totals.dead),
      tile("Completed, last minute", totals.rate),
      tile("Processors", totals.backend),
    );

    const queueBody = h("tbody");
    const queueTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "queue-table" },
        h("caption", {}, "Queues ", h("span", { class: "section-note" }, "completed and dead jobs are kept for a while, then trimmed")),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["queue", ...DEPTHS.map(([, label]) => label), "done / min", "failed / min", "waiting in 1 h", "state", ""].map((label, index) =>
              h("th", { scope: "col", class: index > 0 && index <= DEPTHS.length + 3 ? "num" : "" }, label),
            ),
          ),
        ),
        queueBody,
      ),
    );

    const schedulerBody = h("tbody");
    const schedulerTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "queue-schedulers" },
        h("caption", {}, "Recurring jobs ", h("span", { class: "section-note" }, "each tick enqueues one job, whichever process runs the schedulers")),
        h(
          "thead",
          {},
          h("tr", {}, ["queue", "scheduler", "schedule", "next run", "last run", "state", ""].map((label) => h("th", { scope: "col" }, label))),
        ),
        schedulerBody,
      ),
    );

    const limitBody = h("tbody");
    const limitTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "queue-limits" },
        h("caption", {}, "Rate limits ", h("span", { class: "section-note" }, "starts per window across every worker, on the queue backend's clock")),
        h(
          "thead",
          {},
          h("tr", {}, ["queue", "rate limit", "started in window", "per group", "hold", ""].map((label) => h("th", { scope: "col" }, label))),
        ),
        limitBody,
      ),
    );
    const limitQueue = h("select", { id: "queue-limit-queue", "data-testid": "queue-limit-queue" });
    const limitMax = h("input", { id: "queue-limit-max", "data-testid": "queue-limit-max", type: "number", min: "1", max: "1000000", required: true, value: "100" });
    const limitPer = h("input", { id: "queue-limit-per", "data-testid": "queue-limit-per", type: "number", min: "1", max: "31536000000", required: true, value: "1000" });
    const limitButton = h("button", { type: "submit", class: "button", "data-testid": "queue-limit-set" }, "Set limit");
    const limitForm = h(
      "form",
      { class: "inline-form", "aria-label": "Set a rate limit" },
      h("label", { for: "queue-limit-queue" }, "Queue", limitQueue),
      h("label", { for: "queue-limit-max" }, "Jobs", limitMax),
      h("label", { for: "queue-limit-per" }, "per ms", limitPer),
      limitButton,
    );

    const runningBody = h("tbody");
    const runningTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "queue-running" },
        h("caption", {}, "Running jobs"),
        h(
          "thead",
          {},
          h("tr", {}, ["queue", "job", "progress", "", "started", ""].map((label) => h("th", { scope: "col" }, label))),
        ),
        runningBody,
      ),
    );

    const processBody = h("tbody");
    const processTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "queue-processes" },
        h("caption", {}, "Worker processes ", h("span", { class: "section-note" }, "every process of the fleet, as each announces itself every second")),
        h(
          "thead",
          {},
          h("tr", {}, ["process", "state", "running", "completed", "jobs/s (1 min)", "started"].map((label) => h("th", { scope: "col" }, label))),
        ),
        processBody,
      ),
    );

    const failedBody = h("tbody");
    const failedTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "queue-failed" },
        h("caption", {}, "Failed jobs ", h("span", { class: "section-note" }, "dead, or waiting to be tried again")),
        h(
          "thead",
          {},
          h("tr", {}, ["queue", "job", "state", "failures", "last error", "when", ""].map((label) => h("th", { scope: "col" }, label))),
        ),
        failedBody,
      ),
    );

    const actionResult = h("p", { class: "form-result", role: "status", "data-testid": "queue-action-result" });

    container.append(
      h("section", { class: "panel-section two-columns", "aria-label": "Throughput and totals" }, chartSection, totalList),
      h("section", { class: "panel-section", "aria-label": "Queues" }, queueTable, actionResult),
      h("section", { class: "panel-section", "aria-label": "Recurring jobs" }, schedulerTable),
      h("section", { class: "panel-section", "aria-label": "Rate limits" }, limitTable, limitForm),
      h("section", { class: "panel-section", "aria-label": "Worker processes" }, processTable),
      h("section", { class: "panel-section", "aria-label": "Running jobs" }, runningTable),
      h("section", { class: "panel-section", "aria-label": "Failed jobs" }, failedTable),
    );

    const count = (testid, value) => h("data", { "data-testid": testid, value: String(value) }, format.count(value));
    const emptyRow = (columns, text) => h("tr", {}, h("td", { class: "empty", colspan: columns }, text));
    const lastError = (job) => job.errors.at(-1)?.error ?? "";
    const processRow = (process) => {
      const sum = (key) => process.queues.reduce((total, queue) => total + queue[key], 0);
      const busy = process.queues.filter((queue) => queue.running > 0).map((queue) => `${queue.queue} ${queue.running}/${queue.concurrency}`);
      return h(
        "tr",
        { "data-testid": `queue-process-${process.pid}` },
        h("td", { class: "text" }, `${process.host} pid ${process.pid}`),
        h(
          "td",
          {},
          process.alive
            ? h("span", { class: "badge is-ok" }, "alive")
            : h("span", { class: "badge is-bad" }, `silent ${Math.round(process.seen_seconds_ago)} s`),
        ),
        h("td", { class: "text" }, busy.length ? busy.join(", ") : "idle"),
        h("td", { class: "num" }, count(`queue-process-completed-${process.pid}`, sum("completed"))),
        h("td", { class: "num" }, format.rate(process.completed_per_second)),
        h("td", { class: "when" }, format.time(process.started_at)),
      );
    };

    /** Runs an action from a button, shows its outcome, then refreshes. */
    const act = async (button, path, done, options = {}) => {
      button.disabled = true;
      try {
        const { status, body } = await ctx.send(path, options);
        actionResult.textContent = status >= 200 && status < 300 ? done(body, status) : `Not done: ${body?.detail ?? status}`;
        await refresh();
      } finally {
        button.disabled = false;
      }
    };

    /**
     * The waiting jobs forecast an hour ahead, its 90 % interval (or that
     * the forecaster is still learning) and, when the forecast passes the
     * queue's backlog bound within a week, when.
     */
    const forecastCell = (row) => {
      const forecast = row.backlog_forecast;
      if (!forecast) return h("td", { class: "num", "data-testid": `queue-forecast-${row.name}` }, "—");
      const ahead = forecast.in_an_hour;
      const bound = format.count(forecast.bound);
      const runsOut = forecast.runs_out_seconds;
      const passes =
        typeof runsOut !== "number" ? null : runsOut === 0 ? `at its bound of ${bound}` : `passes ${bound} in ${span(runsOut)}`;
      return h(
        "td",
        { class: "num", title: `forecast from the backlog read every 10 s; the bound is ${bound} waiting` },
        count(`queue-forecast-${row.name}`, Math.round(ahead.value)),
        h(
          "span",
          { class: "cell-note", "data-testid": `queue-forecast-note-${row.name}` },
          ahead.learning ? "learning (50 min)" : `90 %: ${format.count(ahead.low)} to ${format.count(ahead.high)}`,
        ),
        passes && h("span", { class: "cell-note is-bad-text", "data-testid": `queue-runs-out-${row.name}` }, passes),
      );
    };

    const queueRow = (row) => {
      const toggle = h(
        "button",
        { type: "button", class: "button button-secondary", "data-testid": `queue-toggle-${row.name}` },
        row.paused ? "Resume" : "Pause",
      );
      toggle.addEventListener("click", () =>
        act(toggle, `/api/queue/${row.name}/${row.paused ? "resume" : "pause"}`, (body) =>
          `${body.name} ${body.paused ? "paused: running jobs finish, no new one starts" : "resumed"}`,
        ),
      );
      return h(
        "tr",
        { "data-testid": `queue-row-${row.name}` },
        h("th", { scope: "row" }, row.name),
        DEPTHS.map(([state]) => h("td", { class: "num" }, count(`queue-${state}-${row.name}`, row[state]))),
        h("td", { class: "num" }, count(`queue-done-${row.name}`, row.completed_last_minute)),
        h("td", { class: "num" }, count(`queue-failures-${row.name}`, row.failed_last_minute)),
        forecastCell(row),
        h(
          "td",
          {},
          h("span", { class: `badge ${row.paused ? "is-warn" : "is-ok"}`, "data-testid": `queue-state-${row.name}` }, row.paused ? "paused" : "running"),
        ),
        h("td", {}, toggle),
      );
    };

    /** A time as "in 3 hours" and as a date, the date also its title. */
    const when = (iso, testid) =>
      h(
        "time",
        { datetime: iso, title: format.dateTime(iso), "data-testid": testid },
        relative(iso),
        h("span", { class: "section-note" }, ` ${format.dateTime(iso)}`),
      );

    const schedulerRow = (scheduler) => {
      const key = `${scheduler.queue}-${scheduler.id}`;
      const path = `/api/queue/${scheduler.queue}/schedulers/${encodeURIComponent(scheduler.id)}`;
      const toggle = h(
        "button",
        { type: "button", class: "button button-secondary", "data-testid": `queue-scheduler-toggle-${key}` },
        scheduler.paused ? "Resume" : "Pause",
      );
      toggle.addEventListener("click", () =>
        act(toggle, `${path}/${scheduler.paused ? "resume" : "pause"}`, (body) =>
          `${body.queue} ${body.id} ${body.paused ? "paused: its ticks enqueue nothing" : "resumed from its next tick"}`,
        ),
      );
      const next = scheduler.next_runs[0];
      const last = scheduler.last_run;
      return h(
        "tr",
        { "data-testid": `queue-scheduler-${key}` },
        h("td", {}, scheduler.queue),
        h("th", { scope: "row" }, scheduler.id),
        h("td", { class: "text", "data-testid": `queue-scheduler-schedule-${key}` }, scheduler.schedule),
        h(
          "td",
          { class: "when" },
          next
            ? [
                when(next, `queue-scheduler-next-${key}`),
                scheduler.next_job ? h("span", { "data-testid": `queue-scheduler-next-job-${key}` }, ` job ${scheduler.next_job}`) : "",
              ]
            : scheduler.paused
              ? "paused"
              : "—",
        ),
        h("td", { class: "when" }, last ? [when(last.at, `queue-scheduler-last-${key}`), ` job ${last.job_id}`] : "never"),
        h(
          "td",
          {},
          h(
            "span",
            { class: `badge ${scheduler.paused ? "is-warn" : "is-ok"}`, "data-testid": `queue-scheduler-state-${key}` },
            scheduler.paused ? "paused" : "active",
          ),
        ),
        h("td", {}, toggle),
      );
    };

    /** A window of ms as "1 s", "2 min", "250 ms". */
    const windowText = (ms) => (ms % 60000 === 0 ? `${ms / 60000} min` : ms % 1000 === 0 ? `${ms / 1000} s` : `${ms} ms`);
    const rateText = (limit) => `${format.count(limit.max)} per ${windowText(limit.per_ms)}`;
    const limitRow = (limits) => {
      const name = limits.queue;
      const clear = h("button", { type: "button", class: "button button-secondary", "data-testid": `queue-limit-clear-${name}` }, "Remove");
      clear.addEventListener("click", () =>
        act(clear, `/api/queue/${name}/rate-limit`, () => `${name}: rate limit removed`, { method: "DELETE" }),
      );
      const group = [
        limits.group_rate_limit ? `${rateText(limits.group_rate_limit)} each` : null,
        limits.group_concurrency ? `${format.count(limits.group_concurrency)} at once` : null,
      ].filter(Boolean);
      return h(
        "tr",
        { "data-testid": `queue-limit-${name}` },
        h("th", { scope: "row" }, name),
        h("td", { class: "text", "data-testid": `queue-limit-rate-${name}` }, limits.rate_limit ? rateText(limits.rate_limit) : "none"),
        h(
          "td",
          { class: "num" },
          limits.rate_limit ? [count(`queue-limit-started-${name}`, limits.started_in_window), ` of ${format.count(limits.rate_limit.max)}`] : "—",
        ),
        h("td", { class: "text" }, group.length ? group.join(", ") : "none"),
        h(
          "td",
          {},
          limits.held_for_ms === null
            ? "—"
            : h("span", { class: "badge is-warn", "data-testid": `queue-limit-hold-${name}` }, `held ${Math.ceil(limits.held_for_ms / 1000)} s`),
        ),
        h("td", {}, limits.rate_limit ? clear : null),
      );
    };
    limitForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      await act(
        limitButton,
        `/api/queue/${limitQueue.value}/rate-limit`,
        (body) => `${body.queue}: at most ${rateText(body.rate_limit)}`,
        { method: "PUT", json: { max: Number(limitMax.value), per_ms: Number(limitPer.value) } },
      );
    });

    const runningRow = (job) => {
      const percent = job.progress?.percent ?? 0;
      const cancel = h(
        "button",
        { type: "button", class: "button button-secondary", "data-testid": `queue-cancel-${job.queue}-${job.id}`, disabled: job.cancel_requested },
        job.cancel_requested ? "Stopping…" : "Cancel",
      );
      cancel.addEventListener("click", () =>
        act(cancel, `/api/queue/${job.queue}/jobs/${job.id}`, (body) =>
          body.outcome === "requested" ? `${job.queue} job ${job.id}: asked to stop` : `${job.queue} job ${job.id}: ${body.outcome}`,
          { method: "DELETE" },
        ),
      );
      return h(
        "tr",
        { "data-testid": `queue-job-${job.queue}-${job.id}` },
        h("td", {}, job.queue),
        h("td", { class: "num" }, job.id),
        h(
          "td",
          {},
          h("progress", {
            max: "100",
            value: String(percent),
            "data-testid": `queue-progress-${job.queue}-${job.id}`,
            "aria-label": `${job.queue} job ${job.id}: ${percent} %`,
          }),
        ),
        h("td", { "data-testid": `queue-progress-text-${job.queue}-${job.id}` }, job.progress ? `${percent} % ${job.progress.message}` : "started"),
        h("td", { class: "when" }, format.time(job.started_at)),
        h("td", {}, cancel),
      );
    };

    const failedRow = (job) => {
      let action = null;
      if (job.state === "dead") {
        action = h("button", { type: "button", class: "button button-secondary", "data-testid": `queue-retry-${job.queue}-${job.id}` }, "Retry");
        action.addEventListener("click", () =>
          act(action, `/api/queue/${job.queue}/jobs/${job.id}/retry`, () => `${job.queue} job ${job.id}: queued to run again`),
        );
      }
      return h(
        "tr",
        { "data-testid": `queue-failed-${job.queue}-${job.id}`, "data-state": job.state },
        h("td", {}, job.queue),
        h("td", { class: "num" }, job.id),
        h("td", {}, job.state === "dead" ? h("span", { class: "badge is-bad" }, "dead") : "retrying"),
        h("td", { class: "num" }, `${job.failures} of ${job.max_attempts}`),
        h("td", { class: "text", "data-testid": `queue-error-${job.queue}-${job.id}` }, lastError(job)),
        h("td", { class: "when" }, job.state === "dead" ? format.time(job.finished_at) : `again at ${format.time(job.ready_at)}`),
        h("td", {}, action),
      );
    };

    const listed = async (rows, state, filter = () => true) => {
      const lists = await Promise.all(
        rows
          .filter((row) => row[state] > 0)
          .map((row) => ctx.fetchJson(`/api/queue/${row.name}/jobs?state=${state}&limit=${state === "delayed" ? 200 : LISTED}`)),
      );
      return lists.flatMap((list) => list.jobs.filter(filter));
    };

    const render = (overview, running, failed) => {
      const rows = overview.queues;
      const sum = (key) => rows.reduce((total, row) => total + row[key], 0);
      totals.backend.textContent =
        overview.processors === "in-process" ? "in this process (memory queues)" : "seawall-worker (Redis queues)";
      for (const [key, element] of [["waiting", totals.waiting], ["active", totals.active], ["dead", totals.dead]]) {
        element.value = String(sum(key));
        element.textContent = format.count(sum(key));
      }
      totals.rate.value = String(sum("completed_last_minute"));
      totals.rate.textContent = format.count(sum("completed_last_minute"));

      queueBody.replaceChildren(...rows.map(queueRow));
      schedulerBody.replaceChildren(
        ...(overview.schedulers.length ? overview.schedulers.map(schedulerRow) : [emptyRow(7, "No recurring job is scheduled")]),
      );
      const limited = overview.limits.filter(
        (limits) => limits.rate_limit || limits.group_rate_limit || limits.group_concurrency || limits.held_for_ms !== null,
      );
      limitBody.replaceChildren(...(limited.length ? limited.map(limitRow) : [emptyRow(6, "No queue is rate-limited")]));
      if (limitQueue.options.length !== rows.length) {
        limitQueue.replaceChildren(...rows.map((row) => h("option", { value: row.name }, row.name)));
      }
      processBody.replaceChildren(
        ...(overview.processes.length ? overview.processes.map(processRow) : [emptyRow(6, "No worker process has announced itself")]),
      );
      runningBody.replaceChildren(...(running.length ? running.map(runningRow) : [emptyRow(6, "No job is running")]));
      failedBody.replaceChildren(...(failed.length ? failed.map(failedRow) : [emptyRow(7, "No failed job")]));

      const history = overview.history;
      chart.update({ x: history.map((point) => point.at_ms), y: SERIES.map((series) => history.map((point) => point[series.key])) });
      const last = history.at(-1);
      canvas.setAttribute(
        "aria-label",
        last ? `Jobs per second; latest ${SERIES.map((series) => `${series.label} ${format.rate(last[series.key])}`).join(", ")}` : "Jobs per second: collecting",
      );
    };

    const refresh = async () => {
      const overview = await ctx.fetchJson("/api/queue");
      const rows = overview.queues;
      const [running, dead, retrying] = await Promise.all([
        listed(rows, "active"),
        listed(rows, "dead"),
        listed(rows, "delayed", (job) => job.failures > 0),
      ]);
      render(overview, running, [...dead, ...retrying.slice(0, LISTED)]);
    };

    const stop = ctx.every(REFRESH_MS, refresh);
    return () => {
      stop();
      chart.destroy();
    };
  },
};
