/**
 * Rate-limit panel: admitted and rejected requests per limiter over time
 * (sampled by this page every 2 s from `GET /api/rate-limit`), the
 * in-flight limit beside how the service's health scales the per-caller
 * and per-tenant limits, each limiter's quota and counts, the heaviest
 * callers, the blocked keys with an unblock button, the abuse watch's
 * actions in force (with a pardon button) and latest findings, each with its
 * reason (`GET /api/rate-limit/abuse`), a
 * tier editor for tenants, the API keys (issue one to a tenant, shown once;
 * list; revoke), and a button that sends requests as one API client (with
 * an API key, else by this browser's address) and shows how many got
 * through.
 */

import { LineChart, decimalsForStep } from "../chart.js";

const REFRESH_MS = 2000;
/** Samples kept for the charts: 10 minutes at one per 2 s. */
const KEEP = 300;
const LIMITERS = ["ddos", "api", "auth", "report", "tenant"];
const SERIES = LIMITERS.map((name, index) => ({
  key: name,
  label: name,
  color: `--series-${index + 1}`,
  dash: index % 2 === 1 ? [7, 4] : undefined,
}));

/** "1000 / 1 s (gcra)" for a rule. */
function describeRule(rule) {
  const seconds = rule.period_seconds;
  const period =
    seconds % 86_400 === 0 ? `${seconds / 86_400} d`
    : seconds % 3600 === 0 ? `${seconds / 3600} h`
    : seconds % 60 === 0 ? `${seconds / 60} min`
    : `${seconds} s`;
  const name = rule.name === "default" ? "" : `${rule.name}: `;
  return `${name}${rule.capacity} / ${period} (${rule.algorithm.replace("_", " ")})`;
}

export default {
  id: "ratelimit",
  title: "Rate limits",
  order: 20,

  mount(container, ctx) {
    const { h, format } = ctx;
    const history = { x: [], allowed: LIMITERS.map(() => []), rejected: LIMITERS.map(() => []) };
    let previous = null;

    const chart = (testid, title) => {
      const canvas = h("canvas", { role: "img", "data-testid": testid, "aria-label": `${title}: no data yet` });
      const section = h(
        "section",
        { class: "panel-section" },
        h("h3", {}, title, " ", h("span", { class: "section-note" }, "per second, sampled every 2 s")),
        h("div", { class: "chart" }, canvas),
        h(
          "ul",
          { class: "legend", "aria-hidden": "true" },
          SERIES.map((series, index) => h("li", {}, h("span", { class: `swatch swatch-${index + 1}` }), series.label)),
        ),
      );
      const lines = new LineChart(canvas, {
        series: SERIES,
        formatY: (value, step) => `${value.toFixed(decimalsForStep(step))}/s`,
        emptyText: "Collecting…",
        minSpanMs: 2 * 60_000,
      });
      return { section, canvas, lines };
    };
    const admittedChart = chart("rl-allowed-chart", "Admitted");
    const rejectedChart = chart("rl-rejected-chart", "Rejected");

    const limiterBody = h("tbody");
    const limiterTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "rl-limiters" },
        h("caption", {}, "Limiters ", h("span", { class: "section-note" }, "counts since this instance started")),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "Limiter"),
            h("th", { scope: "col" }, "Quota"),
            h("th", { scope: "col", class: "num" }, "Block"),
            h("th", { scope: "col", class: "num" }, "Admitted"),
            h("th", { scope: "col", class: "num" }, "Rejected"),
            h("th", { scope: "col", class: "num" }, "Near limit"),
            h("th", { scope: "col", class: "num" }, "Degraded"),
          ),
        ),
        limiterBody,
      ),
    );

    // The in-flight limit and the health-scaled limits, side by side.
    const admissionText = h("p", { "data-testid": "rl-admission" }, "…");
    const healthText = h("p", { "data-testid": "rl-health" }, "…");
    const loadSection = h(
      "section",
      { class: "panel-section two-columns", "aria-label": "Limits under load" },
      h("div", {}, h("h3", {}, "In-flight limit"), admissionText),
      h("div", {}, h("h3", {}, "Limits by health"), healthText),
    );

    const callersBody = h("tbody");
    const callersTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "rl-callers" },
        h("caption", {}, "Heaviest callers ", h("span", { class: "section-note" }, "checked most by this instance, estimated from one check in 32")),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "Limiter"),
            h("th", { scope: "col" }, "Key"),
            h("th", { scope: "col", class: "num" }, "Checks"),
          ),
        ),
        callersBody,
      ),
    );

    const blockedBody = h("tbody");
    const blockedTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "rl-blocked" },
        h("caption", {}, "Blocked keys"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "Limiter"),
            h("th", { scope: "col" }, "Key"),
            h("th", { scope: "col", class: "num" }, "Blocked for"),
            h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Action")),
          ),
        ),
        blockedBody,
      ),
    );

    // The abuse watch: actions in force, and the latest findings.
    const abuseNote = h("span", { class: "section-note", "data-testid": "abuse-mode" });
    const actionBody = h("tbody");
    const findingBody = h("tbody");
    const abuseTable = (testid, caption, columns, body) =>
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { "data-testid": testid },
          h("caption", {}, ...caption),
          h("thead", {}, h("tr", {}, ...columns.map(([label, cls]) => h("th", { scope: "col", class: cls ?? "" }, label)))),
          body,
        ),
      );
    const actionTable = abuseTable(
      "abuse-actions",
      ["Abuse: actions in force ", abuseNote],
      [["Client"], ["Action"], ["Ends in", "num"], ["Why"], [h("span", { class: "visually-hidden" }, "Pardon")]],
      actionBody,
    );
    const findingTable = abuseTable(
      "abuse-findings",
      ["Abuse: latest findings"],
      [["When"], ["Client or route"], ["Found"], ["Done"], ["Why"]],
      findingBody,
    );

    // The tier editor.
    const tenantSelect = h("select", { id: "rl-tenant", "data-testid": "rl-tenant" });
    const tierSelect = h("select", { id: "rl-tier", "data-testid": "rl-tier" });
    const tierButton = h("button", { type: "submit", class: "button", "data-testid": "rl-tier-apply" }, "Change tier");
    const tierResult = h("p", { class: "form-result", role: "status", "data-testid": "rl-tier-result" });
    const tierForm = h(
      "form",
      { class: "inline-form", "aria-label": "Tenant tier" },
      h("label", { for: "rl-tenant" }, "Tenant", tenantSelect),
      h("label", { for: "rl-tier" }, "Tier", tierSelect),
      tierButton,
    );

    // API keys.
    const keyTenantSelect = h("select", { id: "key-tenant", "data-testid": "key-tenant" });
    const keyNameInput = h("input", { id: "key-name", "data-testid": "key-name", type: "text", value: "dashboard", maxlength: "100", required: "" });
    const keyButton = h("button", { type: "submit", class: "button", "data-testid": "key-issue" }, "Issue key");
    const keyIssued = h("code", { "data-testid": "key-issued" });
    const keyResult = h("p", { class: "form-result", role: "status", "data-testid": "key-result" });
    const keyForm = h(
      "form",
      { class: "inline-form", "aria-label": "Issue an API key" },
      h("label", { for: "key-tenant" }, "Tenant", keyTenantSelect),
      h("label", { for: "key-name" }, "Name", keyNameInput),
      keyButton,
    );
    const keyBody = h("tbody");
    const keyTable = h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { "data-testid": "key-list" },
        h("caption", {}, "API keys ", h("span", { class: "section-note" }, "only the SHA-256 of a key is kept")),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            h("th", { scope: "col" }, "Key"),
            h("th", { scope: "col" }, "Tenant"),
            h("th", { scope: "col" }, "Name"),
            h("th", { scope: "col" }, "Issued"),
            h("th", { scope: "col" }, "State"),
            // Visible: a visually hidden label, positioned against the page,
            // would widen it from this far column on a narrow screen.
            h("th", { scope: "col" }, "Action"),
          ),
        ),
        keyBody,
      ),
    );

    // Trying the API limiter.
    const countInput = h("input", { id: "rl-try-count", "data-testid": "rl-try-count", type: "number", min: "1", max: "500", value: "20" });
    const keyInput = h("input", { id: "rl-try-key", "data-testid": "rl-try-key", type: "text", value: "", maxlength: "68", placeholder: "none: by this address" });
    const tryButton = h("button", { type: "submit", class: "button", "data-testid": "rl-try-send" }, "Send requests");
    const tryResult = h("p", { class: "form-result", role: "status" }, h("data", { "data-testid": "rl-try-passed", value: "" }), " ", h("span", { "data-testid": "rl-try-result" }));
    const tryForm = h(
      "form",
      { class: "inline-form", "aria-label": "Send requests as one API client" },
      h("label", { for: "rl-try-count" }, "Requests", countInput),
      h("label", { for: "rl-try-key" }, "X-Api-Key", keyInput),
      tryButton,
    );

    container.append(
      h("section", { class: "panel-section two-columns", "aria-label": "Decisions over time" }, admittedChart.section, rejectedChart.section),
      loadSection,
      h("section", { class: "panel-section two-columns", "aria-label": "Limiters" }, limiterTable),
      h("section", { class: "panel-section two-columns", "aria-label": "Heaviest callers and blocked keys" }, callersTable, blockedTable),
      h("section", { class: "panel-section two-columns", "aria-label": "Abuse" }, actionTable, findingTable),
      h(
        "section",
        { class: "panel-section two-columns", "aria-label": "Actions" },
        h("div", {}, h("h3", {}, "Tenant tier"), tierForm, tierResult),
        h("div", {}, h("h3", {}, "Try the API limit"), tryForm, tryResult),
      ),
      h(
        "section",
        { class: "panel-section two-columns", "aria-label": "API keys" },
        h("div", {}, h("h3", {}, "Issue an API key"), keyForm, keyResult, h("p", {}, keyIssued)),
        keyTable,
      ),
    );

    const renderLimiters = (stats) => {
      if (!stats.enabled) {
        limiterBody.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 7 }, "Rate limiting is off")));
        return;
      }
      limiterBody.replaceChildren(
        ...stats.limiters.map((limiter) =>
          h(
            "tr",
            { "data-testid": `rl-row-${limiter.name}` },
            h("th", { scope: "row" }, limiter.name, " ", h("span", { class: "section-note" }, limiter.store)),
            h(
              "td",
              {},
              limiter.rules.map(describeRule).join(", "),
              limiter.scale < 1 ? h("span", { class: "section-note", "data-testid": `rl-scale-${limiter.name}` }, ` (${Math.round(limiter.scale * 100)} % by health)`) : "",
            ),
            h("td", { class: "num" }, limiter.block_seconds > 0 ? format.ms(limiter.block_seconds * 1000) : "—"),
            h("td", { class: "num" }, h("data", { "data-testid": `rl-allowed-${limiter.name}`, value: limiter.counts.allowed }, format.count(limiter.counts.allowed))),
            h("td", { class: "num" }, h("data", { "data-testid": `rl-rejected-${limiter.name}`, value: limiter.counts.rejected }, format.count(limiter.counts.rejected))),
            h("td", { class: "num" }, format.count(limiter.counts.near_limit)),
            h("td", { class: "num" }, format.count(limiter.counts.degraded)),
          ),
        ),
      );
    };

    const renderCallers = (stats) => {
      // The five heaviest of each limiter that counts callers by who they are.
      const rows = (stats.limiters ?? [])
        .filter((limiter) => ["api", "tenant", "report", "ddos"].includes(limiter.name))
        .flatMap((limiter) => limiter.top_callers.slice(0, 5).map((caller) => ({ limiter: limiter.name, ...caller })));
      if (rows.length === 0) {
        callersBody.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 3 }, "No caller yet")));
        return;
      }
      callersBody.replaceChildren(
        ...rows.map((row) =>
          h(
            "tr",
            { "data-testid": "rl-caller-row", "data-limiter": row.limiter, "data-key": row.key },
            h("td", {}, row.limiter),
            h("td", { class: "text" }, row.key),
            h("td", { class: "num" }, h("data", { value: row.checks }, `≈ ${format.count(row.checks)}`)),
          ),
        ),
      );
    };

    const renderLoad = (stats) => {
      const admission = stats.admission;
      admissionText.replaceChildren(
        h("data", { "data-testid": "rl-admission-limit", value: admission.limit }, format.count(admission.limit)),
        ` of at most ${format.count(admission.ceiling)} requests at once (${admission.mode === "adaptive" ? "found from latency" : "static"}); `,
        `${format.count(admission.in_flight)} in flight, ${format.count(admission.shed)} shed since start`,
      );
      const health = stats.health;
      if (!health) {
        healthText.replaceChildren("Rate limiting is off");
        return;
      }
      const share = `${Math.round(health.scale * 100)} %`;
      const pending = health.loosens_in_seconds != null ? `; back a level in ${format.ms(health.loosens_in_seconds * 1000)} if health holds` : "";
      healthText.replaceChildren(
        h("data", { "data-testid": "rl-health-level", value: health.level }, health.level),
        ...(health.level === "healthy"
          ? [": the api, report and tenant limits are whole"]
          : [": the api, report and tenant limits admit ", h("data", { "data-testid": "rl-health-scale", value: health.scale }, share), " of their quota", pending]),
        `. Latest reading ${health.health}; tightened ${format.count(health.tightened)}×, loosened ${format.count(health.loosened)}×.`,
      );
    };

    const unblock = async (limiter, key, button) => {
      button.disabled = true;
      const query = new URLSearchParams({ limiter, key });
      const { status, body } = await ctx.send(`/api/rate-limit/block?${query}`, { method: "DELETE" });
      if (status !== 200) {
        ctx.setStatus(`Could not unblock ${key}: ${body?.detail ?? status}`, { error: true });
        button.disabled = false;
        return;
      }
      await refresh();
    };

    const renderBlocked = (stats) => {
      const rows = (stats.limiters ?? []).flatMap((limiter) => limiter.blocked.map((blocked) => ({ limiter: limiter.name, ...blocked })));
      if (rows.length === 0) {
        blockedBody.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 4 }, "No key is blocked")));
        return;
      }
      blockedBody.replaceChildren(
        ...rows.map((row) => {
          const button = h("button", { type: "button", class: "button button-secondary", "data-testid": "rl-unblock", "data-key": row.key, "data-limiter": row.limiter }, "Unblock");
          button.addEventListener("click", () => unblock(row.limiter, row.key, button));
          return h(
            "tr",
            { "data-testid": "rl-blocked-row" },
            h("td", {}, row.limiter),
            h("td", { class: "text" }, row.key),
            h("td", { class: "num" }, format.ms(row.remaining_seconds * 1000)),
            h("td", {}, button),
          );
        }),
      );
    };

    const pardon = async (key, button) => {
      button.disabled = true;
      const { status, body } = await ctx.send(`/api/rate-limit/abuse?${new URLSearchParams({ key })}`, { method: "DELETE" });
      if (status !== 200) {
        ctx.setStatus(`Could not pardon ${key}: ${body?.detail ?? status}`, { error: true });
        button.disabled = false;
        return;
      }
      await refresh();
    };

    const renderAbuse = ({ status, body }) => {
      if (status !== 200) {
        // 409: rate limiting or the watch is off.
        abuseNote.textContent = body?.detail ?? `unavailable (${status})`;
        actionBody.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 5 }, "Abuse detection is off")));
        findingBody.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 5 }, "Abuse detection is off")));
        return;
      }
      abuseNote.textContent = body.mode === "act" ? "acting" : "observing only: nothing is done";
      actionBody.replaceChildren(
        ...(body.actions.length === 0
          ? [h("tr", {}, h("td", { class: "empty", colspan: 5 }, "No client is acted on"))]
          : body.actions.map((action) => {
              const button = h("button", { type: "button", class: "button button-secondary", "data-testid": "abuse-pardon", "data-key": action.key }, "Pardon");
              button.addEventListener("click", () => pardon(action.key, button));
              return h(
                "tr",
                { "data-testid": "abuse-action-row", "data-key": action.key, "data-action": action.action },
                h("td", { class: "text" }, action.key),
                h("td", {}, action.action === "tighten" ? `tightened (×${action.cost})` : "blocked"),
                h("td", { class: "num" }, format.ms(action.remaining_seconds * 1000)),
                h("td", { class: "text" }, action.reason),
                h("td", {}, button),
              );
            })),
      );
      findingBody.replaceChildren(
        ...(body.findings.length === 0
          ? [h("tr", {}, h("td", { class: "empty", colspan: 5 }, "Nothing found"))]
          : body.findings.slice(0, 20).map((finding) =>
              h(
                "tr",
                { "data-testid": "abuse-finding-row", "data-key": finding.key, "data-signal": finding.signal },
                h("td", {}, new Date(finding.interval_start_ms).toLocaleTimeString()),
                h("td", { class: "text" }, finding.key),
                h("td", {}, finding.signal.replace("_", " ")),
                h("td", {}, finding.action),
                h("td", { class: "text" }, finding.reason),
              ),
            )),
      );
    };

    const renderTiers = (stats) => {
      const keep = (select, values) => {
        const chosen = select.value;
        select.replaceChildren(...values.map(([value, label]) => h("option", { value }, label)));
        if (values.some(([value]) => value === chosen)) select.value = chosen;
      };
      keep(tenantSelect, stats.tenants.map((tenant) => [tenant.tenantId, `${tenant.tenantId} (${tenant.tier})`]));
      keep(tierSelect, stats.tiers.map((tier) => [tier.name, `${tier.name} (${format.count(tier.per_minute)}/min)`]));
    };

    const revoke = async (id, button) => {
      button.disabled = true;
      const { status, body } = await ctx.send(`/api/keys/${encodeURIComponent(id)}`, { method: "DELETE" });
      if (status !== 200) {
        ctx.setStatus(`Could not revoke ${id}: ${body?.detail ?? status}`, { error: true });
        button.disabled = false;
        return;
      }
      keyResult.textContent = `${id} is revoked`;
      await refresh();
    };

    const renderKeys = (list, stats) => {
      const chosen = keyTenantSelect.value;
      keyTenantSelect.replaceChildren(...stats.tenants.map((tenant) => h("option", { value: tenant.tenantId }, tenant.tenantId)));
      if (stats.tenants.some((tenant) => tenant.tenantId === chosen)) keyTenantSelect.value = chosen;
      if (list.keys.length === 0) {
        keyBody.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: 6 }, "No key is issued")));
        return;
      }
      keyBody.replaceChildren(
        ...list.keys.map((key) => {
          let action = "";
          if (key.revoked_ms == null) {
            action = h("button", { type: "button", class: "button button-secondary", "data-testid": "key-revoke", "data-id": key.id }, "Revoke");
            action.addEventListener("click", () => revoke(key.id, action));
          }
          return h(
            "tr",
            { "data-testid": "key-row", "data-id": key.id },
            h("td", { class: "text" }, h("code", {}, `${key.prefix}…`), " ", h("span", { class: "section-note" }, key.id)),
            h("td", {}, key.tenant_id),
            h("td", { class: "text" }, key.name),
            h("td", {}, new Date(key.created_ms).toLocaleString()),
            h("td", { "data-testid": "key-state" }, key.revoked_ms == null ? "valid" : "revoked"),
            h("td", {}, action),
          );
        }),
        ...(list.next
          ? [h("tr", {}, h("td", { class: "empty", colspan: 6 }, "The newest 1,000 keys; older ones: GET /api/keys?after=" + list.next))]
          : []),
      );
    };

    const sample = (stats) => {
      const now = Date.now();
      const counts = Object.fromEntries((stats.limiters ?? []).map((limiter) => [limiter.name, limiter.counts]));
      if (previous) {
        const seconds = Math.max((now - previous.at) / 1000, 0.001);
        history.x.push(now);
        LIMITERS.forEach((name, index) => {
          const before = previous.counts[name];
          const after = counts[name];
          const rate = (key) => (before && after ? Math.max(after[key] - before[key], 0) / seconds : null);
          history.allowed[index].push(rate("allowed"));
          history.rejected[index].push(rate("rejected"));
        });
        if (history.x.length > KEEP) {
          history.x.shift();
          history.allowed.forEach((series) => series.shift());
          history.rejected.forEach((series) => series.shift());
        }
      }
      previous = { at: now, counts };
      admittedChart.lines.update({ x: history.x, y: history.allowed });
      rejectedChart.lines.update({ x: history.x, y: history.rejected });
      for (const [{ canvas }, data, what] of [[admittedChart, history.allowed, "Admitted"], [rejectedChart, history.rejected, "Rejected"]]) {
        const last = LIMITERS.map((name, index) => `${name} ${format.rate(data[index].at(-1))}`).join(", ");
        canvas.setAttribute("aria-label", history.x.length ? `${what} per second; latest ${last}` : `${what}: collecting`);
      }
    };

    const refresh = async () => {
      const [stats, keys, abuse] = await Promise.all([
        ctx.fetchJson("/api/rate-limit"),
        ctx.fetchJson("/api/keys"),
        ctx.send("/api/rate-limit/abuse", { method: "GET" }),
      ]);
      renderLimiters(stats);
      renderAbuse(abuse);
      renderLoad(stats);
      renderCallers(stats);
      renderBlocked(stats);
      renderTiers(stats);
      renderKeys(keys, stats);
      sample(stats);
    };

    tierForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      tierButton.disabled = true;
      try {
        const { status, body } = await ctx.send("/api/rate-limit", {
          json: { tenantId: tenantSelect.value, tier: tierSelect.value },
        });
        tierResult.textContent =
          status === 200 ? `${body.tenantId} is now on the ${body.tier} tier` : `Not changed: ${body?.detail ?? status}`;
        await refresh();
      } finally {
        tierButton.disabled = false;
      }
    });

    keyForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      keyButton.disabled = true;
      try {
        const { status, body } = await ctx.send("/api/keys", {
          json: { tenant_id: keyTenantSelect.value, name: keyNameInput.value.trim() },
        });
        if (status === 201) {
          keyIssued.textContent = body.key;
          keyResult.textContent = `Key ${body.id} issued to ${body.tenant_id}; copy it now, it is not shown again`;
          keyInput.value = body.key;
        } else {
          keyIssued.textContent = "";
          keyResult.textContent = `Not issued: ${body?.detail ?? status}`;
        }
        await refresh();
      } finally {
        keyButton.disabled = false;
      }
    });

    tryForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const count = Math.min(Math.max(Number.parseInt(countInput.value, 10) || 1, 1), 500);
      const key = keyInput.value.trim();
      tryButton.disabled = true;
      let passed = 0;
      let rejected = 0;
      let other = 0;
      let lastOther = 0;
      try {
        for (let i = 0; i < count; i += 1) {
          const { status } = await ctx.send("/api/content?page=1&page_size=1", {
            method: "GET",
            headers: key ? { "X-Api-Key": key } : {},
            admin: false,
          });
          if (status >= 200 && status < 300) passed += 1;
          else if (status === 429) rejected += 1;
          else {
            other += 1;
            lastOther = status;
          }
        }
      } finally {
        tryButton.disabled = false;
      }
      const [passedData, text] = tryResult.children;
      passedData.value = String(passed);
      passedData.textContent = `${format.count(passed)} of ${format.count(count)} passed`;
      text.textContent = `, ${format.count(rejected)} rejected (429)${other ? `, ${format.count(other)} other (${lastOther})` : ""}`;
      await refresh();
    });

    const stop = ctx.every(REFRESH_MS, refresh);
    return () => {
      stop();
      admittedChart.lines.destroy();
      rejectedChart.lines.destroy();
    };
  },
};
