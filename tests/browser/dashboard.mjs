// The dashboard in a real browser: Debian's chromium, headless, driven by playwright-core against
// a live node that tests/all/dashboard.rs started. Every step acts as a user would (types, clicks,
// presses keys) and waits for what the page shows, never for a fixed time.
//
// Environment: HATCHERY_URL, HATCHERY_TOKEN (a tenant's), PLAYWRIGHT_DIR (where npm installed
// playwright-core), HATCHERY_CHROMIUM (default /usr/bin/chromium), SCREENSHOT_DIR.

import { createRequire } from "node:module";
import assert from "node:assert/strict";

const require = createRequire(`${process.env.PLAYWRIGHT_DIR}/`);
const { chromium } = require("playwright-core");

const base = process.env.HATCHERY_URL;
const token = process.env.HATCHERY_TOKEN;
const shots = process.env.SCREENSHOT_DIR;
const TIMEOUT = 30_000;

/** Calls the API from outside the page, as another client would. */
async function api(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await response.json();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(json)}`);
  return json;
}

async function step(name, body) {
  const started = Date.now();
  await body();
  console.log(`ok  ${name} (${Date.now() - started} ms)`);
}

const browser = await chromium.launch({
  executablePath: process.env.HATCHERY_CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const page = await browser.newPage({ viewport: { width: 1366, height: 900 } });
page.setDefaultTimeout(TIMEOUT);
const pageErrors = [];
page.on("pageerror", (error) => pageErrors.push(String(error)));
page.on("console", (message) => {
  if (message.type() === "error" && !message.text().includes("401")) pageErrors.push(message.text());
});

try {
  await step("a wrong token is refused with a message", async () => {
    await page.goto(`${base}/`);
    await page.getByLabel("Token").fill("not-a-token");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
  });

  await step("signing in with the keyboard shows the runs", async () => {
    await page.getByLabel("Token").fill(token);
    await page.getByLabel("Token").press("Enter");
    await page.getByRole("heading", { name: "Runs" }).waitFor();
    await page.getByRole("navigation", { name: "Sections" }).waitFor();
  });

  let etl;
  await step("a run started from the API appears in the list and finishes there, live", async () => {
    etl = (await api("POST", "/api/v1/workflows/etl/runs", { input: { rows: ["3,apple", "5,pear"] } })).run_id;
    const row = page.getByRole("row").filter({ has: page.getByRole("link", { name: etl.slice(0, 8) }) });
    await row.waitFor();
    await row.getByText("succeeded").waitFor();
  });

  await step("the run page draws its DAG; a task shows its output; logs are listed", async () => {
    await page.getByRole("link", { name: etl.slice(0, 8) }).click();
    await page.getByRole("heading", { name: `Run ${etl.slice(0, 8)}` }).waitFor();
    for (const task of ["extract", "transform", "load"]) {
      await page.getByRole("button", { name: `Task ${task}: succeeded` }).waitFor();
    }
    assert.equal(await page.locator(".dag path.edge").count(), 2, "two edges: extract→transform→load");
    await page.getByRole("button", { name: "Task load: succeeded" }).click();
    await page.getByRole("heading", { name: "Task load" }).waitFor();
    await page.locator("section pre.json").filter({ hasText: '"total": 8' }).waitFor();
    await page.getByRole("table", { name: "Log lines" }).getByText("loaded 2 records").waitFor();
    await page.screenshot({ path: `${shots}/run.png`, fullPage: true });
  });

  await step("the DAG is usable from the keyboard", async () => {
    await page.getByRole("button", { name: "Task extract: succeeded" }).focus();
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Task extract" }).waitFor();
  });

  await step("a long run is cancelled with the button", async () => {
    const spin = (await api("POST", "/api/v1/workflows/spin/runs", { input: {} })).run_id;
    await page.goto(`${base}/#/runs/${spin}`);
    await page.locator("#run-status").getByText("running").waitFor();
    await page.getByRole("button", { name: "Cancel run" }).click();
    await page.locator("#run-status").getByText("cancelled").waitFor();
    const run = await api("GET", `/api/v1/runs/${spin}`);
    assert.equal(run.status, "cancelled");
    assert.ok(await page.getByRole("button", { name: "Cancel run" }).isDisabled());
  });

  await step("a failed run is replayed with the button and succeeds", async () => {
    const once = (await api("POST", "/api/v1/workflows/once/runs", { input: {} })).run_id;
    await page.goto(`${base}/#/runs/${once}`);
    await page.locator("#run-status").getByText("failed").waitFor();
    await page.getByRole("button", { name: "Replay run" }).click();
    await page.locator("#run-status").getByText("succeeded").waitFor();
  });

  await step("filters narrow the list", async () => {
    await page.getByRole("link", { name: "Runs", exact: true }).click();
    await page.getByLabel("Status").selectOption("cancelled");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.waitForURL(/status=cancelled/);
    await page.getByRole("row").nth(1).getByText("cancelled").waitFor();
    const statuses = await page.locator("tbody .badge").allTextContents();
    assert.ok(statuses.length > 0 && statuses.every((s) => s === "cancelled"), statuses.join(","));
  });

  await step("a run's data is shown as text, never run as markup", async () => {
    const hostile = "<img src=x onerror=window.pwned=1>";
    const id = (await api("POST", "/api/v1/workflows/on-signal/runs", { input: { html: hostile } })).run_id;
    await page.goto(`${base}/#/runs/${id}`);
    await page.locator("#run-status").getByText("succeeded").waitFor();
    await page.locator("pre.json").filter({ hasText: hostile }).first().waitFor();
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    assert.equal(await page.locator("main img").count(), 0);
  });

  await step("workflows, modules and workers pages list what was deployed", async () => {
    await page.getByRole("link", { name: "Workflows" }).click();
    await page.getByRole("link", { name: "etl" }).click();
    await page.getByRole("heading", { name: "Workflow etl" }).waitFor();
    await page.getByLabel("Input (JSON)").fill('{"rows": ["7,fig"]}');
    await page.getByRole("button", { name: "Start run" }).click();
    await page.locator("#run-status").getByText("succeeded").waitFor();
    await page.getByRole("link", { name: "Modules" }).click();
    await page.getByRole("link", { name: "etl" }).waitFor();
    await page.getByRole("link", { name: "diamond" }).waitFor();
    assert.equal(await page.locator("main").getByText("http://").count(), 0, "links show their names");
    await page.getByRole("link", { name: "Workers" }).click();
    await page.getByRole("heading", { name: "Workers" }).waitFor();
    await page.getByRole("cell", { name: /of \d+/ }).first().waitFor();
  });

  await step("signing out forgets the token", async () => {
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
    await page.reload();
    await page.getByRole("heading", { name: "Sign in" }).waitFor();
  });

  assert.deepEqual(pageErrors, [], "the page raised no errors");
} catch (error) {
  await page.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  console.error(`page errors: ${JSON.stringify(pageErrors)}`);
  throw error;
} finally {
  await browser.close();
}
