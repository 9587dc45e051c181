/**
 * The seawall dashboard shell: asks for the admin token, loads the panels and
 * runs their polling.
 *
 * The token lives in sessionStorage only (this tab, until it closes or the
 * user signs out) and travels only in the `Authorization` header of requests
 * to this origin, never in a URL.
 *
 * ## Panel contract
 *
 * A panel is one ES module in `assets/panels/`. `build.rs` lists every `*.js`
 * file there, sorted, in `/assets/panels.json`; the shell `import()`s each one,
 * so adding a panel is adding one file (and rebuilding the binary, which
 * embeds the assets). The module's default export:
 *
 *     export default {
 *       id: "cache",          // unique, [a-z0-9-]+; the section is #panel-<id>
 *       title: "Cache",       // the panel's heading, rendered by the shell
 *       order: 20,            // panels are shown by ascending order, then id
 *       mount(container, ctx) {
 *         // Build the panel's DOM inside `container` (an empty <div>), then
 *         // start polling. May be async. May return a cleanup function,
 *         // called on sign-out, after the context's polling has stopped.
 *       },
 *     };
 *
 * `ctx`, one per mounted panel:
 *
 * - `ctx.fetchJson(path, { allowStatus = [] } = {})`: GET a same-origin path
 *   (it must start with `/`) with `Authorization: Bearer <token>` and return
 *   the parsed JSON body. Throws `AuthError` on 401 / 403, after which the
 *   shell signs out and asks for the token again; throws `HttpError` (with
 *   `.status` and `.problem`, the RFC 9457 body if any) for any other status
 *   that is not 2xx and not in `allowStatus` (for an endpoint whose error
 *   statuses carry data the panel wants).
 * - `ctx.send(path, { method = "POST", json, headers = {}, admin = true })`:
 *   send a same-origin request (`json`, if given, as the JSON body) and
 *   return `{ status, body }` whatever the status, the body parsed when it is
 *   JSON. With `admin` it carries the token, and 401 / 403 sign out as with
 *   `fetchJson`; without, it goes as any client's request would.
 * - `ctx.every(ms, fn)`: run `fn` (may be async) now and then `ms` after each
 *   run ends, so runs never overlap. Paused while the page is hidden (and run
 *   at once when it shows again), stopped on sign-out. A run that throws sets
 *   the panel's status line to the error and polling goes on; a successful
 *   run sets it to "Updated <time>". Returns a function that stops it.
 * - `ctx.setStatus(text, { error = false } = {})`: the status line by the title.
 * - `ctx.signal`: an AbortSignal aborted on sign-out.
 * - `ctx.h(tag, attrs, ...children)`: create an element. `attrs` keys are
 *   attribute names (`class`, `data-testid`, `aria-label`, ...), `true`
 *   sets an empty attribute, `null` / `false` skip it, a function under
 *   `on<event>` is added as a listener; children are nodes or strings.
 * - `ctx.format`: `count(n)` "1,234"; `rate(perSecond)` "3.2/s";
 *   `percent(fraction)` "1.25 %"; `ms(milliseconds)` and `us(microseconds)`
 *   "12.3 ms" / "1.25 s"; `time(dateOrIso)` "08:15:30"; `dateTime(dateOrIso)`.
 *   All of them show "—" for a missing or non-finite value.
 *
 * Rules for panels, since the page is served with a strict
 * Content-Security-Policy (`script-src 'self'; style-src 'self'`): no inline
 * `style` attributes or `<style>` elements and no `on...` attributes or
 * `innerHTML` with markup; use `ctx.h`, classes from `app.css`, and
 * `addEventListener`. Give the numbers a test or an operator would read a
 * stable `data-testid`, and put the raw number in a `<data value="...">` so
 * that it can be read without parsing localised text. Canvas charts:
 * `../chart.js` exports `LineChart`.
 */

/** A response that was not 2xx (or an allowed status). */
export class HttpError extends Error {
  constructor(status, path, problem) {
    const detail = problem?.detail ?? problem?.title;
    super(`HTTP ${status} from ${path}${detail ? `: ${detail}` : ""}`);
    this.name = "HttpError";
    this.status = status;
    this.path = path;
    this.problem = problem ?? null;
  }
}

/** 401 or 403: the token is missing, wrong or no longer accepted. */
export class AuthError extends HttpError {
  constructor(status, path, problem) {
    super(status, path, problem);
    this.name = "AuthError";
  }
}

const TOKEN_KEY = "seawall.adminToken";
const VERIFY_PATH = "/api/performance?type=health";
const ACCEPT = "application/json, application/health+json, application/problem+json";

// ---------------------------------------------------------------- helpers

/** Creates an element; see `ctx.h` in the contract above. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  element.append(...children.flat().filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}

const MISSING = "—";

function finite(value) {
  return typeof value === "number" && Number.isFinite(value);
}

function decimalsFor(value) {
  const magnitude = Math.abs(value);
  if (magnitude === 0 || magnitude >= 100) return 0;
  if (magnitude >= 10) return 1;
  return 2;
}

function number(value, decimals = decimalsFor(value)) {
  return new Intl.NumberFormat(undefined, {
    minimumFractionDigits: decimals,
    maximumFractionDigits: decimals,
  }).format(value);
}

const clock = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

const dateClock = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

function toDate(value) {
  const date = value instanceof Date ? value : new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

/** Number formatting shared by the panels; see `ctx.format` above. */
export const format = Object.freeze({
  count: (n) => (finite(n) ? number(n, 0) : MISSING),
  rate: (perSecond) => (finite(perSecond) ? `${number(perSecond)}/s` : MISSING),
  percent: (fraction) => (finite(fraction) ? `${number(fraction * 100)} %` : MISSING),
  ms(milliseconds) {
    if (!finite(milliseconds)) return MISSING;
    if (Math.abs(milliseconds) >= 1000) return `${number(milliseconds / 1000)} s`;
    return `${number(milliseconds)} ms`;
  },
  us: (microseconds) => format.ms(finite(microseconds) ? microseconds / 1000 : NaN),
  time: (value) => {
    const date = toDate(value);
    return date ? clock.format(date) : MISSING;
  },
  dateTime: (value) => {
    const date = toDate(value);
    return date ? dateClock.format(date) : MISSING;
  },
});

function describe(error) {
  if (error instanceof HttpError) return error.message;
  if (error instanceof TypeError) return "the server could not be reached";
  return error?.message ?? String(error);
}

// ---------------------------------------------------------------- requests

async function authorizedFetch(path, token, signal) {
  if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) {
    // The token goes to this origin only.
    throw new TypeError(`fetchJson takes a path on this origin, not ${path}`);
  }
  return fetch(path, {
    headers: { Authorization: `Bearer ${token}`, Accept: ACCEPT },
    cache: "no-store",
    credentials: "omit",
    redirect: "error",
    signal,
  });
}

async function bodyOf(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** Checks a token with the health endpoint: any 2xx means accepted. */
async function verifyToken(token) {
  const response = await authorizedFetch(VERIFY_PATH, token);
  if (response.ok) return null;
  const problem = await bodyOf(response);
  if (response.status === 401 || response.status === 403) {
    return "That token was not accepted. Check it and try again.";
  }
  return new HttpError(response.status, VERIFY_PATH, problem).message;
}

// ---------------------------------------------------------------- the page

const ui = {
  signIn: document.getElementById("sign-in"),
  form: document.getElementById("token-form"),
  token: document.getElementById("token"),
  submit: document.getElementById("token-submit"),
  error: document.getElementById("token-error"),
  panels: document.getElementById("panels"),
  signOut: document.getElementById("sign-out"),
  status: document.getElementById("session-status"),
};

/** The signed-in state: the token, and what to stop on sign-out. */
let session = null;

function showSignIn(message) {
  ui.panels.hidden = true;
  ui.signOut.hidden = true;
  ui.signIn.hidden = false;
  ui.status.textContent = "";
  showFormError(message);
  ui.token.focus();
}

function showFormError(message) {
  ui.error.textContent = message ?? "";
  ui.error.hidden = !message;
  if (message) {
    ui.token.setAttribute("aria-invalid", "true");
  } else {
    ui.token.removeAttribute("aria-invalid");
  }
}

function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  ui.token.value = "";
  showFormError(null);
  ui.signIn.hidden = true;
  ui.signOut.hidden = false;
  ui.panels.hidden = false;
  ui.status.textContent = "Signed in";
  session = { token, controller: new AbortController(), cleanups: [] };
  loadPanels(session);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  const ending = session;
  session = null;
  if (ending) {
    ending.controller.abort();
    for (const cleanup of ending.cleanups) {
      try {
        cleanup();
      } catch (error) {
        console.error("panel cleanup failed", error);
      }
    }
  }
  ui.panels.replaceChildren();
  showSignIn(message);
}

ui.form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = ui.token.value.trim();
  if (!token) {
    showFormError("Enter the admin token.");
    ui.token.focus();
    return;
  }
  ui.submit.disabled = true;
  ui.status.textContent = "Checking the token…";
  try {
    const refusal = await verifyToken(token);
    if (refusal) {
      ui.status.textContent = "";
      showFormError(refusal);
      ui.token.select();
    } else {
      signIn(token);
    }
  } catch (error) {
    ui.status.textContent = "";
    showFormError(`Could not check the token: ${describe(error)}.`);
  } finally {
    ui.submit.disabled = false;
  }
});

ui.signOut.addEventListener("click", () => signOut(null));

// ---------------------------------------------------------------- panels

function isPanel(candidate) {
  return (
    candidate !== null &&
    typeof candidate === "object" &&
    typeof candidate.id === "string" &&
    /^[a-z0-9-]+$/.test(candidate.id) &&
    typeof candidate.title === "string" &&
    typeof candidate.mount === "function"
  );
}

async function loadPanels(current) {
  const { signal } = current.controller;
  let names;
  try {
    const response = await fetch(new URL("panels.json", import.meta.url), { signal, cache: "no-cache" });
    if (!response.ok) throw new HttpError(response.status, "/assets/panels.json", await bodyOf(response));
    names = await response.json();
  } catch (error) {
    if (signal.aborted) return;
    ui.panels.append(h("p", { class: "card panel-error", role: "alert" }, `Could not list the panels: ${describe(error)}.`));
    return;
  }

  const loaded = await Promise.allSettled(
    names.map((name) => import(new URL(`panels/${encodeURIComponent(name)}`, import.meta.url).href)),
  );
  if (signal.aborted) return;

  const panels = [];
  loaded.forEach((result, index) => {
    const panel = result.status === "fulfilled" ? result.value.default : null;
    if (isPanel(panel)) {
      panels.push(panel);
    } else {
      const reason = result.status === "rejected" ? describe(result.reason) : "its default export is not a panel";
      console.error(`panel ${names[index]}:`, result.reason ?? panel);
      ui.panels.append(h("p", { class: "card panel-error", role: "alert" }, `Panel ${names[index]} could not be loaded: ${reason}.`));
    }
  });
  if (names.length === 0) {
    ui.panels.append(h("p", { class: "card" }, "This build has no panels."));
  }
  panels.sort((a, b) => (a.order ?? 0) - (b.order ?? 0) || a.id.localeCompare(b.id));
  for (const panel of panels) {
    await mountPanel(panel, current);
    if (signal.aborted) return;
  }
}

async function mountPanel(panel, current) {
  const titleId = `panel-${panel.id}-title`;
  const status = h("p", { class: "panel-status" });
  const body = h("div", { class: "panel-body" });
  const section = h(
    "section",
    { class: "panel card", id: `panel-${panel.id}`, "aria-labelledby": titleId, "data-panel": panel.id },
    h("header", {}, h("h2", { class: "panel-title", id: titleId }, panel.title), status),
    body,
  );
  ui.panels.append(section);
  try {
    const cleanup = await panel.mount(body, context(current, status));
    if (typeof cleanup === "function") current.cleanups.push(cleanup);
  } catch (error) {
    if (error instanceof AuthError || current.controller.signal.aborted) return;
    console.error(`panel ${panel.id} failed to mount`, error);
    body.replaceChildren(h("p", { class: "panel-error", role: "alert" }, `This panel failed to start: ${describe(error)}.`));
  }
}

/** The `ctx` a panel gets; see the contract at the top. */
function context(current, statusLine) {
  const { signal } = current.controller;

  const setStatus = (text, { error = false } = {}) => {
    statusLine.textContent = text;
    statusLine.classList.toggle("is-error", error);
  };

  const fetchJson = async (path, { allowStatus = [] } = {}) => {
    const response = await authorizedFetch(path, current.token, signal);
    const body = await bodyOf(response);
    if (response.status === 401 || response.status === 403) {
      const error = new AuthError(response.status, path, body);
      if (session === current) {
        signOut("The server no longer accepts this token. Enter it again.");
      }
      throw error;
    }
    if (!response.ok && !allowStatus.includes(response.status)) {
      throw new HttpError(response.status, path, body);
    }
    return body;
  };

  const send = async (path, { method = "POST", json, headers = {}, admin = true } = {}) => {
    if (typeof path !== "string" || !path.startsWith("/") || path.startsWith("//")) {
      throw new TypeError(`send takes a path on this origin, not ${path}`);
    }
    const allHeaders = { Accept: ACCEPT, ...headers };
    if (admin) allHeaders.Authorization = `Bearer ${current.token}`;
    if (json !== undefined) allHeaders["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers: allHeaders,
      body: json === undefined ? undefined : JSON.stringify(json),
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      signal,
    });
    const body = await bodyOf(response);
    if (admin && (response.status === 401 || response.status === 403)) {
      const error = new AuthError(response.status, path, body);
      if (session === current) {
        signOut("The server no longer accepts this token. Enter it again.");
      }
      throw error;
    }
    return { status: response.status, body };
  };

  const every = (ms, fn) => {
    let timer = null;
    let running = false;
    let stopped = false;

    const schedule = () => {
      if (!stopped && !document.hidden && timer === null) timer = setTimeout(run, ms);
    };
    const run = async () => {
      timer = null;
      if (stopped || document.hidden || running) return;
      running = true;
      try {
        await fn();
        if (!stopped) setStatus(`Updated ${format.time(new Date())}`);
      } catch (error) {
        if (stopped || error instanceof AuthError) return;
        console.warn("panel refresh failed", error);
        setStatus(`Could not refresh: ${describe(error)}.`, { error: true });
      } finally {
        running = false;
      }
      schedule();
    };
    const onVisibilityChange = () => {
      if (document.hidden) {
        clearTimeout(timer);
        timer = null;
      } else if (timer === null) {
        run();
      }
    };
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      timer = null;
      document.removeEventListener("visibilitychange", onVisibilityChange);
    };

    if (signal.aborted) return stop;
    signal.addEventListener("abort", stop, { once: true });
    document.addEventListener("visibilitychange", onVisibilityChange);
    run();
    return stop;
  };

  return Object.freeze({ fetchJson, send, every, setStatus, signal, h, format });
}

// ---------------------------------------------------------------- start

const saved = sessionStorage.getItem(TOKEN_KEY);
if (saved) {
  // A rejected token shows up as an AuthError on the first refresh, which
  // signs out and asks again.
  signIn(saved);
} else {
  showSignIn(null);
}
