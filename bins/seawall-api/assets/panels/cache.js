/**
 * Cache panel: the hit ratio of each TTL class over time (sampled by the
 * service every 5 s, from `GET /api/cache`), L1 and L2 sizes, the counts of
 * each class, the keys read most (as the cache learned them) with the last
 * warm-up of them, a warm-up button with a progress bar, and a form that
 * drops the keys of a class matching a pattern on every instance.
 */

import { LineChart } from "../chart.js";

const REFRESH_MS = 2000;
const CLASSES = ["schedule", "computation", "api"];
const SERIES = CLASSES.map((name, index) => ({
  key: name,
  label: name,
  color: `--series-${index + 1}`,
  dash: index % 2 === 1 ? [7, 4] : undefined,
}));
const TYPES = ["schedule", "computation", "api", "session", "all"];
const FAMILIES = [
  ["today", "due reviews"],
  ["stats", "statistics"],
  ["content", "catalogue"],
];
/** Hot keys shown per family. */
const HOT_SHOWN = 5;
const REASONS = { start: "after the start", l1_cleared: "after L1 was cleared", dropped: "after the keys were dropped" };

export default {
  id: "cache",
  title: "Cache",
  order: 30,

  mount(container, ctx) {
    const { h, format } = ctx;

    const canvas = h("canvas", { role: "img", "data-testid": "cache-ratio-chart", "aria-label": "Hit ratio: no data yet" });
    const chart = new LineChart(canvas, {
      series: SERIES,
      formatY: (value) => `${Math.round(value * 100)} %`,
      emptyText: "Collecting…",
      minSpanMs: 2 * 60_000,
    });
    const chartSection = h(
      "section",
      { class: "panel-section" },
      h("h3", {}, "Hit ratio by class ", h("span", { class: "section-note" }, "hits over reads, every 5 s")),
      h("div", { class: "chart" }, canvas),
      h(
        "ul",
        { class: "legend", "aria-hidden": "true" },
        SERIES.map((series, index) => h("li", {}, h("span", { class: `swatch swatch-${index + 1}` }), series.label)),
      ),
    );

    const figure = (testid) => h("data", { class: "stat-value", "data-testid": testid, value: "" }, "—");
    const sizes = {
      l1: figure("cache-l1-entries"),
      l2: figure("cache-l2-keys"),
      ratio: figure("cache-hit-ratio"),
      breaker: h("span", { class: "stat-note", "data-testid": "cache-breaker" }, "—"),
    };
    const tile = (label, value) => h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, value));
    const sizeList = h(
      "dl",
      { class: "stats" },
      tile("L1 entries", sizes.l1),
      tile("Redis keys", sizes.l2),
      tile("Hit ratio", sizes.ratio),
      tile("Redis tier", sizes.breaker),
    );

    const classBody = h("tbody");
    const classTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "cache-classes" },
        h("caption", {}, "Classes ", h("span", { class: "section-note" }, "counts since this instance started")),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["class", "L1 hits", "L2 hits", "loads", "load errors", "stale serves", "hit ratio"].map((label, index) =>
              h("th", { scope: "col", class: index ? "num" : "" }, label),
            ),
          ),
        ),
        classBody,
      ),
    );

    const hotBody = h("tbody");
    const learnedText = h("p", { class: "section-note", role: "status", "data-testid": "cache-learned" }, "No learned warm-up yet");
    const hotTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "cache-hot-keys" },
        h("caption", {}, "Hot keys ", h("span", { class: "section-note" }, "read most, as learned (reads halve every 30 min)")),
        h("thead", {}, h("tr", {}, ["family", "key", "reads"].map((label, index) => h("th", { scope: "col", class: index === 2 ? "num" : "" }, label)))),
        hotBody,
      ),
    );

    const progress = h("progress", { max: "1", value: "0", "data-testid": "cache-warm-progress" });
    const warmText = h("span", { role: "status", "data-testid": "cache-warm-text" }, "No warm-up yet");
    const warmButton = h("button", { type: "submit", class: "button", "data-testid": "cache-warm" }, "Warm up");
    const usersInput = h("input", { id: "cache-warm-users", type: "number", min: "1", max: "10000", value: "100" });
    const warmForm = h(
      "form",
      { class: "inline-form", "aria-label": "Warm up" },
      h("label", { for: "cache-warm-users" }, "Learners", usersInput),
      warmButton,
    );

    const typeSelect = h("select", { id: "cache-type", "data-testid": "cache-type" }, TYPES.map((type) => h("option", { value: type }, type)));
    const patternInput = h("input", { id: "cache-pattern", "data-testid": "cache-pattern", value: "*", maxlength: "256", required: "" });
    const dropButton = h("button", { type: "submit", class: "button button-secondary", "data-testid": "cache-drop" }, "Invalidate");
    const dropResult = h("p", { class: "form-result", role: "status", "data-testid": "cache-drop-result" });
    const dropForm = h(
      "form",
      { class: "inline-form", "aria-label": "Invalidate" },
      h("label", { for: "cache-type" }, "Class", typeSelect),
      h("label", { for: "cache-pattern" }, "Pattern", patternInput),
      dropButton,
    );

    container.append(
      h("section", { class: "panel-section two-columns", "aria-label": "Hit ratio and sizes" }, chartSection, sizeList),
      h("section", { class: "panel-section two-columns", "aria-label": "Classes" }, classTable),
      h("section", { class: "panel-section", "aria-label": "Hot keys" }, hotTable, learnedText),
      h(
        "section",
        { class: "panel-section two-columns", "aria-label": "Actions" },
        h("div", {}, h("h3", {}, "Warm-up"), warmForm, h("p", { class: "form-result" }, progress, " ", warmText)),
        h("div", {}, h("h3", {}, "Invalidate"), dropForm, dropResult),
      ),
    );

    const setFigure = (element, value, text) => {
      element.value = value === null || value === undefined ? "" : String(value);
      element.textContent = text;
    };

    const render = (stats) => {
      if (!stats.enabled) {
        classBody.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 7 }, "The cache is off")));
        return;
      }
      setFigure(sizes.l1, stats.l1_entries, `${format.count(stats.l1_entries)} of ${format.count(stats.l1_capacity)}`);
      setFigure(sizes.l2, stats.l2_keys, stats.l2_keys === null ? (stats.redis ? "not answering" : "no Redis") : format.count(stats.l2_keys));
      setFigure(sizes.ratio, stats.hit_ratio, format.percent(stats.hit_ratio));
      const tier = { absent: "none (in process only)", closed: "in use", open: "failing: L1 and the database only" }[stats.breaker] ?? stats.breaker;
      // Cut off from the invalidation stream, L1 answers no reads.
      sizes.breaker.textContent = stats.breaker === "closed" && !stats.following ? "in use, catching up on invalidations: L1 bypassed" : tier;
      classBody.replaceChildren(
        ...stats.classes
          .filter((row) => row.l1_hits + row.l1_misses + row.l2_hits + row.l2_misses > 0 || CLASSES.includes(row.class))
          .map((row) =>
            h(
              "tr",
              { "data-testid": `cache-row-${row.class}` },
              h("th", { scope: "row" }, row.class),
              h("td", { class: "num" }, h("data", { "data-testid": `cache-l1-hits-${row.class}`, value: row.l1_hits }, format.count(row.l1_hits))),
              h("td", { class: "num" }, format.count(row.l2_hits)),
              h("td", { class: "num" }, h("data", { "data-testid": `cache-loads-${row.class}`, value: row.loads }, format.count(row.loads))),
              h("td", { class: "num" }, format.count(row.load_errors)),
              h("td", { class: "num" }, format.count(row.stale_serves)),
              h("td", { class: "num" }, format.percent(row.hit_ratio)),
            ),
          ),
      );
      const x = stats.history.map((point) => point.at_ms);
      const y = CLASSES.map((name) => stats.history.map((point) => point.ratios[name] ?? null));
      chart.update({ x, y });
      const last = stats.history.at(-1);
      canvas.setAttribute(
        "aria-label",
        last ? `Hit ratio by class; latest ${CLASSES.map((name) => `${name} ${format.percent(last.ratios[name])}`).join(", ")}` : "Hit ratio: collecting",
      );
      const warm = stats.warm_up;
      progress.setAttribute("max", String(Math.max(warm.total, 1)));
      progress.setAttribute("value", String(warm.done));
      warmText.textContent =
        warm.state === "idle" ? "No warm-up yet"
        : `${format.count(warm.done)} of ${format.count(warm.total)} keys${warm.failed ? `, ${format.count(warm.failed)} failed` : ""}${warm.state === "done" ? ": done" : "…"}`;
      warmText.dataset.state = warm.state;
      const hotRows = FAMILIES.flatMap(([family, label]) =>
        (stats.hot_keys[family] ?? []).slice(0, HOT_SHOWN).map((hot) =>
          h(
            "tr",
            { "data-testid": "cache-hot-row", "data-family": family, "data-key": hot.key },
            h("td", {}, label),
            h("td", {}, h("code", {}, hot.key)),
            h("td", { class: "num" }, format.count(Math.round(hot.reads))),
          ),
        ),
      );
      hotBody.replaceChildren(
        ...(hotRows.length
          ? hotRows
          : [h("tr", {}, h("td", { class: "empty", colspan: 3 }, stats.warm_hot ? "Nothing learned yet" : "Learning is off (cache.warm_hot = 0)"))]),
      );
      const learned = stats.learned_warm_up;
      learnedText.textContent = learned
        ? `Learned warm-up ${REASONS[learned.reason] ?? learned.reason}: ${format.count(learned.keys)} keys${learned.failed ? `, ${format.count(learned.failed)} failed` : ""} in ${format.count(learned.took_ms)} ms, at ${new Date(learned.at_ms).toLocaleTimeString()}`
        : stats.warm_hot ? "No learned warm-up yet" : "Learned warm-up is off";
      learnedText.dataset.reason = learned?.reason ?? "";
    };

    const refresh = async () => render(await ctx.fetchJson("/api/cache"));

    warmForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      warmButton.disabled = true;
      try {
        const users = Math.min(Math.max(Number.parseInt(usersInput.value, 10) || 1, 1), 10_000);
        const { status, body } = await ctx.send(`/api/cache?action=warmup&users=${users}`);
        if (status !== 202) warmText.textContent = `Not started: ${body?.detail ?? status}`;
        await refresh();
      } finally {
        warmButton.disabled = false;
      }
    });

    dropForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      dropButton.disabled = true;
      try {
        const { status, body } = await ctx.send("/api/cache", {
          method: "DELETE",
          json: { type: typeSelect.value, pattern: patternInput.value },
        });
        dropResult.textContent =
          status === 200
            ? `Dropped ${body.patterns.join(", ") || "nothing (no key family in this class)"}${body.deferred ? " here; Redis follows once it answers" : ""}`
            : `Not dropped: ${body?.detail ?? status}`;
        await refresh();
      } finally {
        dropButton.disabled = false;
      }
    });

    const stop = ctx.every(REFRESH_MS, refresh);
    return () => {
      stop();
      chart.destroy();
    };
  },
};
