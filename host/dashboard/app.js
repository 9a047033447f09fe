// The dashboard: a page per resource over the tenant's own API, signed in with a tenant token.
//
// No framework and no build step: the node embeds these files as they are. Every value that
// comes from the API is put on the page as text (never as HTML), so a run's output cannot
// script the page. Pages that show work in progress poll the API while they are visible.

const TOKEN_KEY = "hatchery.token";
const FINISHED = ["succeeded", "failed", "cancelled"];
const RUN_STATUSES = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"];
const TRIGGERS = ["api", "cron", "schedule", "event", "spawn", "replay"];
const PAGE = 50;

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const signOut = document.getElementById("sign-out");
const announcer = document.getElementById("status");

/** The timer of the page on screen; cleared when the page changes. */
let pollTimer = null;
/** Bumped at each navigation, so a late answer for an old page is dropped. */
let generation = 0;

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** Calls the API with the session's token; throws an ApiError carrying the server's message. */
async function api(method, path, body) {
  const headers = { authorization: `Bearer ${token()}` };
  if (body !== undefined) headers["content-type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) {
    const error = (json && json.error) || {};
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      route();
    }
    throw new ApiError(response.status, error.code || "error", error.message || response.statusText);
  }
  return json;
}

function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// ---------------------------------------------------------------- building the page

/** `h("a", {href: "#/"}, "text", child)`: an element; strings become text nodes. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, value);
  }
  append(element, children);
  return element;
}

/** Replaces what `element` holds with `children` (nested arrays and empty values allowed). */
function fill(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
  append(element, children);
  return element;
}

function render(title, ...children) {
  document.title = `${title} · Hatchery`;
  fill(main, h("h1", {}, title), ...children);
}

function badge(status) {
  return h("span", { class: `badge ${status}` }, status);
}

function json(value) {
  return h("pre", { class: "json mono" }, JSON.stringify(value, null, 2));
}

function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message || String(error));
}

function time(value) {
  if (!value) return h("span", { class: "muted" }, "—");
  const date = new Date(value);
  return h("time", { datetime: value, title: date.toISOString() }, date.toLocaleString());
}

/** How long from `start` to `end` (or to now), as "1.23 s". */
function duration(start, end) {
  if (!start) return "";
  const ms = (end ? new Date(end) : new Date()) - new Date(start);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(2)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function shortId(id) {
  return id ? id.slice(0, 8) : "";
}

/** A table; `columns` are `[heading, row => cell]`. */
function table(caption, columns, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    h("caption", { class: "visually-hidden" }, caption),
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", { scope: "col" }, heading)))),
    h("tbody", {}, rows.map((row) => h("tr", {}, columns.map(([, cell]) => h("td", {}, cell(row)))))),
  );
}

function announce(text) {
  announcer.textContent = text;
}

/** Runs `tick` every `ms` while this page is on screen and the tab is visible. */
function poll(ms, tick) {
  const mine = generation;
  clearInterval(pollTimer);
  pollTimer = setInterval(() => {
    if (mine !== generation) return clearInterval(pollTimer);
    if (document.visibilityState === "visible") tick().catch(() => {});
  }, ms);
}

// ---------------------------------------------------------------- routing

const routes = [
  [/^#\/runs\/([0-9a-f-]{36})$/, runPage],
  [/^#\/runs(?:\?(.*))?$/, runsPage],
  [/^#\/scheduled(?:\?(.*))?$/, scheduledPage],
  [/^#\/workflows\/([^/?]+)$/, workflowPage],
  [/^#\/workflows$/, workflowsPage],
  [/^#\/modules$/, modulesPage],
  [/^#\/workers$/, workersPage],
  [/^#\/crons$/, cronsPage],
  [/^#\/events$/, eventsPage],
  [/^#\/rate-limits$/, rateLimitsPage],
];

async function route() {
  generation += 1;
  clearInterval(pollTimer);
  if (!token()) {
    nav.hidden = true;
    signOut.hidden = true;
    return signInPage();
  }
  nav.hidden = false;
  signOut.hidden = false;
  const hash = location.hash || "#/runs";
  for (const link of nav.querySelectorAll("a")) {
    const current = hash === link.getAttribute("href") || hash.startsWith(`${link.getAttribute("href")}/`)
      || hash.startsWith(`${link.getAttribute("href")}?`);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, page] of routes) {
    const match = hash.match(pattern);
    if (match) {
      try {
        await page(...match.slice(1).map((part) => (part === undefined ? part : decodeURIComponent(part))));
      } catch (error) {
        render("Something went wrong", errorBox(error));
      }
      return;
    }
  }
  render("Not found", h("p", {}, "No such page. ", h("a", { href: "#/runs" }, "See the runs.")));
}

window.addEventListener("hashchange", () => {
  route();
  main.focus({ preventScroll: true });
});
signOut.addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = "#/runs";
  route();
});

// ---------------------------------------------------------------- sign in

function signInPage() {
  const input = h("input", {
    id: "token", type: "password", name: "token", autocomplete: "current-password", required: true,
  });
  const problem = h("div");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in"),
    h("p", { class: "muted" }, "Paste a tenant token (hatchery tenants token <tenant>)."),
    h("label", { for: "token" }, "Token", input),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    problem,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = input.value.trim();
    // Asked directly rather than through api(), whose answer to a 401 is this very page.
    const response = await fetch("/api/v1/quotas", { headers: { authorization: `Bearer ${candidate}` } })
      .catch((error) => ({ ok: false, status: 0, statusText: error.message }));
    if (response.ok) {
      sessionStorage.setItem(TOKEN_KEY, candidate);
      if (!location.hash || location.hash === "#/") location.hash = "#/runs";
      route();
    } else {
      const message = response.status === 401 ? "That token is not valid." : `The node answered ${response.status} ${response.statusText}.`;
      fill(problem, errorBox({ message }));
      input.select();
    }
  });
  document.title = "Sign in · Hatchery";
  fill(main, form);
  input.focus();
}

// ---------------------------------------------------------------- runs

function runColumns() {
  return [
    ["Run", (r) => h("a", { href: `#/runs/${r.id}`, class: "mono" }, shortId(r.id))],
    ["Workflow", (r) => h("a", { href: `#/workflows/${encodeURIComponent(r.workflow)}` }, r.workflow)],
    ["Status", (r) => badge(r.status)],
    ["Triggered by", (r) => r.triggered_by.kind],
    ["Created", (r) => time(r.created_at)],
    ["Duration", (r) => duration(r.started_at, r.finished_at)],
  ];
}

async function runsPage(search) {
  const params = Object.fromEntries(new URLSearchParams(search || ""));
  const mine = generation;
  const workflows = await api("GET", "/api/v1/workflows?limit=500");
  const select = (name, label, options) =>
    h("label", {}, label, h("select", { name }, h("option", { value: "" }, "any"),
      options.map((option) => h("option", { value: option, selected: params[name] === option }, option))));
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    select("workflow", "Workflow", workflows.workflows.map((w) => w.name)),
    select("status", "Status", RUN_STATUSES),
    select("triggered_by", "Triggered by", TRIGGERS),
    h("label", {}, "Metadata (key:value)", h("input", { name: "metadata", value: params.metadata || "", size: 18 })),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "children", value: "1", checked: params.children === "1" }), "Include child runs"),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = Object.fromEntries(new FormData(form));
    location.hash = `#/runs${query(chosen)}`;
  });
  const list = h("div", { "aria-live": "polite" });
  render("Runs", form, list);
  // Top-level runs unless asked: a fan-out's thousand children would bury its parent.
  const { children, ...filters } = params;
  await runList(list, children === "1" ? filters : { ...filters, top_level: "true" }, mine, "No runs match.");
}

/** The runs matching `params`, paged; the first page keeps itself up to date. */
async function runList(list, params, mine, empty) {
  const load = async () => {
    const page = await api("GET", `/api/v1/runs${query({ ...params, limit: PAGE })}`);
    if (mine !== generation) return;
    const older = page.next_cursor
      ? h("a", { class: "button", href: `${location.hash.split("?")[0]}${query({ ...params, cursor: page.next_cursor })}` }, "Older runs")
      : null;
    const newest = params.cursor
      ? h("a", { class: "button", href: `${location.hash.split("?")[0]}${query({ ...params, cursor: undefined })}` }, "Newest runs")
      : null;
    fill(list, table("Runs", runColumns(), page.runs, empty), h("div", { class: "actions" }, newest, older));
  };
  try {
    await load();
  } catch (error) {
    fill(list, errorBox(error));
    return;
  }
  if (!params.cursor) poll(2000, load);
}

async function scheduledPage(search) {
  const params = Object.fromEntries(new URLSearchParams(search || ""));
  const list = h("div", { "aria-live": "polite" });
  render("Scheduled runs", h("p", { class: "muted" }, "Runs waiting for their time (run_at or delay_seconds)."), list);
  await runList(list, { ...params, status: "scheduled" }, generation, "Nothing is scheduled.");
}

async function runPage(id) {
  const mine = generation;
  let run = await api("GET", `/api/v1/runs/${id}`);
  let selected = null;
  const header = h("div");
  const dag = h("div", { class: "dag", role: "group", "aria-label": "Tasks of the run" });
  const detail = h("section", { "aria-label": "Selected task" });
  const logs = h("section", { "aria-label": "Logs" });
  const children = h("section", { "aria-label": "Children" });
  const problem = h("div");

  const act = async (label, path) => {
    try {
      await api("POST", path);
      announce(`${label} requested`);
      await refresh();
    } catch (error) {
      fill(problem, errorBox(error));
    }
  };

  const drawHeader = () => {
    const finished = FINISHED.includes(run.status);
    fill(header,
      h("div", { class: "actions" },
        h("button", { type: "button", class: "danger", id: "cancel-run", disabled: finished,
          onclick: () => act("Cancel", `/api/v1/runs/${id}/cancel`) }, "Cancel run"),
        h("button", { type: "button", id: "replay-run", disabled: !finished,
          onclick: () => act("Replay", `/api/v1/runs/${id}/replay`) }, "Replay run")),
      problem,
      h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", { id: "run-status" }, badge(run.status)),
        h("dt", {}, "Workflow"), h("dd", {}, h("a", { href: `#/workflows/${encodeURIComponent(run.workflow)}` }, run.workflow), ` v${run.version}`),
        h("dt", {}, "Triggered by"), h("dd", {}, run.triggered_by.kind,
          run.parent_run_id ? [" from ", h("a", { href: `#/runs/${run.parent_run_id}`, class: "mono" }, shortId(run.parent_run_id))] : null),
        h("dt", {}, "Created"), h("dd", {}, time(run.created_at)),
        run.run_at ? [h("dt", {}, "Runs at"), h("dd", {}, time(run.run_at))] : null,
        h("dt", {}, "Started"), h("dd", {}, time(run.started_at)),
        h("dt", {}, "Finished"), h("dd", {}, time(run.finished_at)),
        h("dt", {}, "Duration"), h("dd", {}, duration(run.started_at, run.finished_at) || "—"),
        h("dt", {}, "Priority"), h("dd", {}, run.priority)),
      run.error ? [h("h2", {}, "Error"), h("pre", { class: "json mono error" }, run.error)] : null,
      h("div", { class: "columns" },
        h("div", {}, h("h2", {}, "Input"), json(run.input)),
        h("div", {}, h("h2", {}, "Output"), run.output === null ? h("p", { class: "muted" }, "None yet.") : json(run.output))),
      Object.keys(run.additional_metadata || {}).length ? [h("h2", {}, "Metadata"), json(run.additional_metadata)] : null,
    );
  };

  const drawDetail = () => {
    const task = run.tasks.find((t) => t.name === selected) || null;
    if (!task) {
      fill(detail, h("p", { class: "muted" }, "Select a task in the graph to see its attempts, output and errors."));
      return;
    }
    fill(detail,
      h("h2", { id: "task-title" }, `Task ${task.name}`),
      h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", { id: "task-status" }, badge(task.status)),
        h("dt", {}, "Attempts"), h("dd", {}, `${task.attempt} (failed ${task.failures}, leases lost ${task.lost_leases})`),
        h("dt", {}, "Parents"), h("dd", {}, task.parents.length ? task.parents.join(", ") : "none"),
        h("dt", {}, "Started"), h("dd", {}, time(task.started_at)),
        h("dt", {}, "Finished"), h("dd", {}, time(task.finished_at)),
        h("dt", {}, "Duration"), h("dd", {}, duration(task.started_at, task.finished_at) || "—"),
        task.waiting_for ? [h("dt", {}, "Waiting for"), h("dd", {}, JSON.stringify(task.waiting_for))] : null),
      task.error ? [h("h2", {}, `Error${task.error_code ? ` (${task.error_code})` : ""}`), h("pre", { class: "json mono" }, task.error)] : null,
      h("h2", {}, "Output"),
      task.output === null ? h("p", { class: "muted" }, "None yet.") : json(task.output),
    );
  };

  const select = (name) => {
    selected = name;
    fill(dag, drawDag(run.tasks, selected, select));
    drawDetail();
  };

  const loadLogs = async () => {
    const lines = [];
    let cursor;
    do {
      const page = await api("GET", `/api/v1/runs/${id}/logs${query({ limit: 500, cursor })}`);
      lines.push(...page.lines);
      cursor = page.next_cursor;
    } while (cursor && lines.length < 5000);
    fill(logs,
      h("h2", {}, "Logs"),
      table("Log lines", [
        ["Time", (l) => time(l.time)],
        ["Task", (l) => `${l.task} #${l.attempt}`],
        ["Level", (l) => h("span", { class: `level-${l.level}` }, l.level)],
        ["Message", (l) => h("span", { class: "mono" }, l.message)],
      ], lines, "No log lines."),
    );
    logs.querySelector("table")?.classList.add("logs");
  };

  const loadChildren = async () => {
    const page = await api("GET", `/api/v1/runs/${id}/children?limit=${PAGE}`);
    fill(children,
      h("h2", {}, "Children"),
      table("Child runs", runColumns(), page.runs, "No child runs."),
    );
  };

  const refresh = async () => {
    const next = await api("GET", `/api/v1/runs/${id}`);
    if (mine !== generation) return;
    const changed = next.status !== run.status;
    run = next;
    drawHeader();
    fill(dag, drawDag(run.tasks, selected, select));
    drawDetail();
    await Promise.all([loadLogs(), loadChildren()]);
    if (changed) announce(`Run ${run.status}`);
    keepUpToDate();
  };

  // Every second while the run moves; every five once it finished (a replay moves it again).
  let every = 0;
  const keepUpToDate = () => {
    const wanted = FINISHED.includes(run.status) ? 5000 : 1000;
    if (wanted !== every) {
      every = wanted;
      poll(every, refresh);
    }
  };

  render(`Run ${shortId(id)}`, h("p", { class: "mono muted" }, id), header,
    h("h2", {}, "Tasks"), dag, detail, logs, children);
  drawHeader();
  select(run.tasks[0] ? run.tasks[0].name : null);
  await Promise.all([loadLogs(), loadChildren()]);
  keepUpToDate();
}

/** The run's tasks as a graph: a column per depth, edges from parents; the on-failure task last. */
function drawDag(tasks, selected, onSelect) {
  const byName = new Map(tasks.map((t) => [t.name, t]));
  const depth = new Map();
  const depthOf = (task, seen = new Set()) => {
    if (depth.has(task.name)) return depth.get(task.name);
    if (seen.has(task.name)) return 0;
    seen.add(task.name);
    const parents = task.parents.map((p) => byName.get(p)).filter(Boolean);
    const d = parents.length ? 1 + Math.max(...parents.map((p) => depthOf(p, seen))) : 0;
    depth.set(task.name, d);
    return d;
  };
  const columns = [];
  const regular = tasks.filter((t) => !t.is_on_failure);
  for (const task of regular) {
    const d = depthOf(task);
    (columns[d] ||= []).push(task);
  }
  const onFailure = tasks.filter((t) => t.is_on_failure);
  if (onFailure.length) columns.push(onFailure);
  const width = 170, height = 46, gapX = 60, gapY = 18, pad = 16;
  const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
  const place = new Map();
  columns.forEach((column, x) => (column || []).forEach((task, y) => {
    place.set(task.name, { x: pad + x * (width + gapX), y: pad + y * (height + gapY) });
  }));
  const graph = svg("svg", {
    width: pad * 2 + columns.length * (width + gapX) - gapX,
    height: pad * 2 + rows * (height + gapY) - gapY,
    role: "img",
    "aria-label": `Task graph: ${tasks.map((t) => `${t.name} ${t.status}`).join(", ")}`,
  });
  for (const task of regular) {
    const to = place.get(task.name);
    for (const parent of task.parents) {
      const from = place.get(parent);
      if (!from) continue;
      const x1 = from.x + width, y1 = from.y + height / 2, x2 = to.x, y2 = to.y + height / 2;
      const mid = (x1 + x2) / 2;
      graph.append(svg("path", { class: "edge", d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` }));
    }
  }
  for (const task of tasks) {
    const at = place.get(task.name);
    if (!at) continue;
    const classes = ["node", task.status, task.is_on_failure ? "on-failure" : "", task.name === selected ? "selected" : ""];
    const node = svg("g", {
      class: classes.join(" "),
      transform: `translate(${at.x},${at.y})`,
      tabindex: "0",
      role: "button",
      "data-task": task.name,
      "aria-label": `Task ${task.name}: ${task.status}`,
      "aria-pressed": String(task.name === selected),
    },
    svg("rect", { width, height }),
    svg("text", { x: 10, y: 19 }, task.name.length > 20 ? `${task.name.slice(0, 19)}…` : task.name),
    svg("text", { x: 10, y: 36 }, `${task.status}${task.attempt > 1 ? ` · ${task.attempt} attempts` : ""}`));
    node.addEventListener("click", () => onSelect(task.name));
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        onSelect(task.name);
        document.querySelector(`.dag [data-task="${CSS.escape(task.name)}"]`)?.focus();
      }
    });
    graph.append(node);
  }
  return graph;
}

// ---------------------------------------------------------------- workflows and modules

async function workflowsPage() {
  const page = await api("GET", "/api/v1/workflows?limit=500");
  render("Workflows", table("Workflows", [
    ["Name", (w) => h("a", { href: `#/workflows/${encodeURIComponent(w.name)}` }, w.name)],
    ["Version", (w) => w.version],
    ["Tasks", (w) => w.tasks.map((t) => t.name).join(" · ")],
    ["Description", (w) => w.description || ""],
    ["Module", (w) => h("span", { class: "mono" }, w.module.slice(0, 12))],
    ["Deployed", (w) => time(w.created_at)],
  ], page.workflows, "No workflows yet: deploy a module (hatchery deploy <file.wasm>)."));
}

async function workflowPage(name) {
  const workflow = await api("GET", `/api/v1/workflows/${encodeURIComponent(name)}`);
  const input = h("textarea", { id: "run-input", rows: 5 }, "{}");
  const problem = h("div");
  const form = h("form", { "aria-label": "Start a run" },
    h("label", { for: "run-input" }, "Input (JSON)"), input,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Start run")), problem);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    let body;
    try {
      body = { input: JSON.parse(input.value || "null") };
    } catch (error) {
      fill(problem, errorBox({ message: `The input is not JSON: ${error.message}` }));
      return;
    }
    try {
      const started = await api("POST", `/api/v1/workflows/${encodeURIComponent(name)}/runs`, body);
      location.hash = `#/runs/${started.run_id}`;
    } catch (error) {
      fill(problem, errorBox(error));
    }
  });
  const runs = h("div", { "aria-live": "polite" });
  render(`Workflow ${workflow.name}`,
    workflow.description ? h("p", {}, workflow.description) : null,
    h("dl", { class: "facts" },
      h("dt", {}, "Version"), h("dd", {}, workflow.version),
      h("dt", {}, "Module"), h("dd", { class: "mono" }, workflow.module),
      h("dt", {}, "Deployed"), h("dd", {}, time(workflow.created_at)),
      h("dt", {}, "Events"), h("dd", {}, (workflow.on_events || []).join(", ") || "none"),
      h("dt", {}, "Crons"), h("dd", {}, (workflow.on_crons || []).join(", ") || "none")),
    h("h2", {}, "Tasks"),
    table("Tasks", [
      ["Task", (t) => t.name],
      ["Parents", (t) => (t.parents || []).join(", ") || "—"],
      ["Retries", (t) => t.retries ?? 0],
      ["Timeout", (t) => (t.execution_timeout_ms ? `${t.execution_timeout_ms} ms` : "—")],
      ["Fuel", (t) => workflow.task_fuel[t.name] ?? "node default"],
    ], workflow.tasks, "No tasks."),
    workflow.concurrency && workflow.concurrency.length ? [h("h2", {}, "Concurrency"), json(workflow.concurrency)] : null,
    h("h2", {}, "Start a run"), form,
    h("h2", {}, "Versions"),
    table("Versions", [
      ["Version", (v) => v.version],
      ["Module", (v) => h("span", { class: "mono" }, v.module)],
      ["Deployed", (v) => time(v.created_at)],
    ], workflow.versions, "No versions."),
    h("h2", {}, "Recent runs"), runs);
  await runList(runs, { workflow: name, top_level: "true" }, generation, "No runs yet.");
}

async function modulesPage() {
  const page = await api("GET", "/api/v1/modules?limit=500");
  render("Modules", table("Modules", [
    ["Digest", (m) => h("span", { class: "mono" }, m.digest)],
    ["Size", (m) => `${(m.size / 1024).toFixed(0)} KiB`],
    ["Slots", (m) => m.slots ?? "node default"],
    ["Workflows", (m) => m.workflows.map((w, i) => [i ? ", " : "", h("a", { href: `#/workflows/${encodeURIComponent(w)}` }, w)])],
    ["Deployed", (m) => time(m.created_at)],
  ], page.modules, "No modules yet."));
}

async function workersPage() {
  const load = async () => {
    const page = await api("GET", "/api/v1/workers");
    return table("Workers", [
      ["Node", (w) => h("span", { class: "mono" }, w.node_id)],
      ["Module", (w) => h("span", { class: "mono" }, w.module.slice(0, 12))],
      ["Slots in use", (w) => `${w.in_use} of ${w.slots}`],
    ], page.workers, "No module instances are loaded on this node.");
  };
  const holder = h("div", { "aria-live": "polite" }, await load());
  render("Workers", h("p", { class: "muted" }, "Module instance pools loaded on the node serving this page."), holder);
  const mine = generation;
  poll(2000, async () => {
    const next = await load();
    if (mine === generation) fill(holder, next);
  });
}

// ---------------------------------------------------------------- triggers and limits

async function cronsPage() {
  const page = await api("GET", "/api/v1/crons");
  const problem = h("div");
  render("Crons", problem, table("Crons", [
    ["Workflow", (c) => h("a", { href: `#/workflows/${encodeURIComponent(c.workflow)}` }, c.workflow)],
    ["Name", (c) => c.name],
    ["Expression", (c) => h("span", { class: "mono" }, c.expression)],
    ["Zone", (c) => c.timezone],
    ["Next tick", (c) => time(c.next_tick)],
    ["Source", (c) => c.source],
    ["", (c) => (c.source === "api"
      ? h("button", { type: "button", class: "danger", onclick: async () => {
        try {
          await api("DELETE", `/api/v1/crons/${c.id}`);
          cronsPage();
        } catch (error) {
          fill(problem, errorBox(error));
        }
      } }, "Delete")
      : "")],
  ], page.crons, "No crons."));
}

async function eventsPage() {
  const page = await api("GET", "/api/v1/events?limit=100");
  render("Events", table("Events", [
    ["Key", (e) => h("span", { class: "mono" }, e.key)],
    ["Received", (e) => time(e.created_at)],
    ["Runs", (e) => (e.run_ids.length ? e.run_ids.map((id, i) => [i ? ", " : "", h("a", { href: `#/runs/${id}`, class: "mono" }, shortId(id))]) : "none")],
    ["Payload", (e) => h("span", { class: "mono" }, JSON.stringify(e.payload).slice(0, 120))],
  ], page.events, "No events."));
}

async function rateLimitsPage() {
  const page = await api("GET", "/api/v1/rate-limits");
  render("Rate limits", table("Rate limits", [
    ["Key", (l) => h("span", { class: "mono" }, l.key)],
    ["Limit", (l) => `${l.limit} per ${l.duration}`],
    ["Used now", (l) => l.used],
    ["Source", (l) => l.source],
    ["Updated", (l) => time(l.updated_at)],
  ], page.rate_limits, "No rate limits."));
}

route();
