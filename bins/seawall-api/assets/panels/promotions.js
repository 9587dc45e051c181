/**
 * Promotions panel: every coupon campaign and time sale with its issued,
 * remaining, sold and written counts (from `GET /api/promotions`, every
 * 2 s), forms that create a campaign or a sale, and "run a scenario": a
 * burst of virtual users inside this instance (`POST
 * /api/promotions/scenarios`), shown as it runs and with its report and the
 * audit of every invariant once it finishes.
 */

const REFRESH_MS = 2000;
const SCENARIOS = [
  ["journey", "Full journey: coupon → points → order"],
  ["coupon", "Coupon rush"],
  ["points", "Points: earn, balance, use"],
  ["sale", "Time sale"],
];
const FAULTS = [
  ["over_issued_coupons", "over-issued coupons"],
  ["duplicate_coupons", "duplicate coupons"],
  ["ledger_mismatches", "ledger mismatches"],
  ["negative_balances", "negative balances"],
  ["oversold", "oversold"],
  ["lost_orders", "lost orders"],
  ["duplicate_orders", "duplicate orders"],
  ["unaccounted_units", "unaccounted units"],
];

export default {
  id: "promotions",
  title: "Promotions",
  order: 50,

  mount(container, ctx) {
    const { h, format } = ctx;
    const figure = (testid, value, text = format.count(value)) => h("data", { "data-testid": testid, value: String(value) }, text);

    const table = (testid, caption, headings) => {
      const body = h("tbody");
      const wrap = h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { "data-testid": testid },
          h("caption", {}, caption),
          h("thead", {}, h("tr", {}, headings.map(([label, numeric]) => h("th", { scope: "col", class: numeric ? "num" : null }, label)))),
          body,
        ),
      );
      return { body, wrap };
    };
    const campaigns = table("promo-campaigns", "Coupon campaigns", [
      ["Campaign"], ["Window"], ["Quantity", true], ["Issued", true], ["Remaining", true], ["Written", true],
    ]);
    const sales = table("promo-sales", "Time sales", [
      ["Sale"], ["Window"], ["Stock", true], ["Sold", true], ["Remaining", true], ["Written", true],
    ]);
    const storeNote = h("span", { class: "section-note", "data-testid": "promo-store" });

    // Creating a campaign or a sale.
    const createForm = (prefix, what, amountLabel, amountField, path) => {
      const name = h("input", { id: `${prefix}-name`, "data-testid": `${prefix}-name`, type: "text", required: true, maxlength: "100", value: `${what} ${new Date().toISOString().slice(11, 16)}` });
      const amount = h("input", { id: `${prefix}-amount`, "data-testid": `${prefix}-amount`, type: "number", min: "1", max: "10000000", required: true, value: "1000" });
      const perUser = h("input", { id: `${prefix}-per-user`, "data-testid": `${prefix}-per-user`, type: "number", min: "1", max: "100", value: "1" });
      const button = h("button", { type: "submit", class: "button", "data-testid": `${prefix}-create` }, `Create ${what.toLowerCase()}`);
      const result = h("p", { class: "form-result", role: "status", "data-testid": `${prefix}-result` });
      const form = h(
        "form",
        { class: "inline-form", "aria-label": `New ${what.toLowerCase()}` },
        h("label", { for: `${prefix}-name` }, "Name", name),
        h("label", { for: `${prefix}-amount` }, amountLabel, amount),
        h("label", { for: `${prefix}-per-user` }, "Per user", perUser),
        button,
      );
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        button.disabled = true;
        try {
          const { status, body } = await ctx.send(path, {
            json: { name: name.value.trim(), [amountField]: Number(amount.value), per_user: Number(perUser.value) },
          });
          result.textContent =
            status === 201 ? `Created ${what.toLowerCase()} ${body.id}, “${body.name}”` : `Not created: ${body?.detail ?? `HTTP ${status}`}`;
          await refresh();
        } finally {
          button.disabled = false;
        }
      });
      return h("div", {}, h("h3", {}, `New ${what.toLowerCase()}`), form, result);
    };

    // Running a scenario.
    const scenario = h("select", { id: "promo-scenario", "data-testid": "promo-scenario" }, SCENARIOS.map(([value, label]) => h("option", { value }, label)));
    const users = h("input", { id: "promo-users", "data-testid": "promo-users", type: "number", min: "1", max: "1000", value: "50" });
    const rounds = h("input", { id: "promo-rounds", "data-testid": "promo-rounds", type: "number", min: "1", max: "20", value: "10" });
    const runButton = h("button", { type: "submit", class: "button", "data-testid": "promo-run" }, "Run scenario");
    const runForm = h(
      "form",
      { class: "inline-form", "aria-label": "Run a scenario" },
      h("label", { for: "promo-scenario" }, "Scenario", scenario),
      h("label", { for: "promo-users" }, "Virtual users", users),
      h("label", { for: "promo-rounds" }, "Rounds each", rounds),
      runButton,
    );
    const runResult = h("p", { class: "form-result", role: "status", "data-testid": "promo-run-result" });
    const report = h("div", { "data-testid": "promo-report", "aria-live": "polite" });

    container.append(
      h("section", { class: "panel-section", "aria-label": "Campaigns" }, h("p", { class: "hint" }, "Decided in ", storeNote), campaigns.wrap),
      h("section", { class: "panel-section", "aria-label": "Sales" }, sales.wrap),
      h(
        "section",
        { class: "panel-section two-columns", "aria-label": "Create" },
        createForm("promo-campaign", "Campaign", "Quantity", "quantity", "/api/promotions/campaigns"),
        createForm("promo-sale", "Sale", "Stock", "stock", "/api/promotions/sales"),
      ),
      h(
        "section",
        { class: "panel-section", "aria-label": "Run a scenario" },
        h("h3", {}, "Run a scenario ", h("span", { class: "section-note" }, "virtual users inside this instance, then the audit")),
        runForm,
        runResult,
        report,
      ),
    );

    const windowOf = (item) => `${format.dateTime(item.starts_at)} – ${format.dateTime(item.ends_at)}`;
    const empty = (body, columns, text) => body.replaceChildren(h("tr", {}, h("td", { class: "empty", colspan: columns }, text)));

    const renderOverview = (overview) => {
      storeNote.textContent = overview.store === "redis" ? "Redis (shared by every instance)" : "this process's memory (embedded defaults)";
      if (overview.campaigns.length === 0) empty(campaigns.body, 6, "No campaign yet");
      else
        campaigns.body.replaceChildren(
          ...overview.campaigns.map((campaign) =>
            h(
              "tr",
              { "data-testid": `promo-campaign-${campaign.id}` },
              h("th", { scope: "row" }, `${campaign.id} · ${campaign.name}`),
              h("td", {}, windowOf(campaign)),
              h("td", { class: "num" }, format.count(campaign.quantity)),
              h("td", { class: "num" }, figure(`promo-issued-${campaign.id}`, campaign.issued)),
              h("td", { class: "num" }, figure(`promo-remaining-${campaign.id}`, campaign.remaining)),
              h("td", { class: "num" }, figure(`promo-written-${campaign.id}`, campaign.written)),
            ),
          ),
        );
      if (overview.sales.length === 0) empty(sales.body, 6, "No sale yet");
      else
        sales.body.replaceChildren(
          ...overview.sales.map((sale) =>
            h(
              "tr",
              { "data-testid": `promo-sale-${sale.id}` },
              h("th", { scope: "row" }, `${sale.id} · ${sale.name}`),
              h("td", {}, windowOf(sale)),
              h("td", { class: "num" }, format.count(sale.stock)),
              h("td", { class: "num" }, figure(`promo-sold-${sale.id}`, sale.sold)),
              h("td", { class: "num" }, figure(`promo-sale-remaining-${sale.id}`, sale.remaining)),
              h("td", { class: "num" }, figure(`promo-sale-written-${sale.id}`, sale.written)),
            ),
          ),
        );
    };

    const tile = (label, value) => h("div", { class: "stat" }, h("dt", {}, label), h("dd", {}, value));

    const renderRun = (run) => {
      runButton.disabled = run?.state === "running";
      if (!run) {
        report.replaceChildren(h("p", { class: "hint" }, "No scenario has run in this instance yet."));
        return;
      }
      const title = `Run ${run.id}: ${run.scenario}, ${format.count(run.users)} users × ${format.count(run.rounds)} rounds`;
      const state = h("data", { class: `badge ${run.state === "failed" ? "is-bad" : run.state === "finished" ? "is-ok" : "is-warn"}`, "data-testid": "promo-run-state", value: run.state }, run.state);
      const parts = [h("p", {}, title, " ", state)];
      if (run.error) parts.push(h("p", { class: "panel-error" }, run.error));
      const result = run.report;
      if (result) {
        const ms = (testid, value) => h("data", { class: "stat-value", "data-testid": testid, value: String(value) }, format.ms(value));
        const count = (testid, value) => h("data", { class: "stat-value", "data-testid": testid, value: String(value) }, format.count(value));
        parts.push(
          h(
            "dl",
            { class: "stats" },
            tile("Operations", count("promo-run-operations", result.operations)),
            tile("Succeeded", count("promo-run-succeeded", result.succeeded)),
            tile("Refused by a rule", count("promo-run-refused", result.refused)),
            tile("Failed", count("promo-run-failed", result.failed)),
            tile("Per second", h("data", { class: "stat-value", "data-testid": "promo-run-rate", value: String(result.per_second) }, format.rate(result.per_second))),
            tile("Mean", ms("promo-run-mean", result.mean_ms)),
            tile("p95", ms("promo-run-p95", result.p95_ms)),
            tile("p99", ms("promo-run-p99", result.p99_ms)),
          ),
          h(
            "ul",
            { class: "checks", "data-testid": "promo-run-audit", "aria-label": "Invariants after the run" },
            FAULTS.map(([key, label]) =>
              h(
                "li",
                { class: `check ${result.audit[key] === 0 ? "is-ok" : "is-bad"}` },
                `${label} `,
                h("strong", {}, figure(`promo-fault-${key.replaceAll("_", "-")}`, result.audit[key])),
              ),
            ),
          ),
        );
      }
      report.replaceChildren(...parts);
    };

    const refresh = async () => {
      const [overview, runs] = await Promise.all([ctx.fetchJson("/api/promotions"), ctx.fetchJson("/api/promotions/scenarios")]);
      renderOverview(overview);
      renderRun(runs[0]);
    };

    runForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      runButton.disabled = true;
      const { status, body } = await ctx.send("/api/promotions/scenarios", {
        json: { scenario: scenario.value, users: Number(users.value), rounds: Number(rounds.value) },
      });
      runResult.textContent = status === 202 ? `Run ${body.id} started` : `Not started: ${body?.detail ?? `HTTP ${status}`}`;
      await refresh();
    });

    ctx.every(REFRESH_MS, refresh);
  },
};
