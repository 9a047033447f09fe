#!/usr/bin/env node
// Peer side of the Hatchery queue benchmark: graphile-worker, run the same
// way as Hatchery (no-op jobs, concurrency 10, same Postgres), with
// graphile-worker's batching options on (localQueue size 100,
// completeJobBatchDelay 0).
//
// Usage:
//   node bench.mjs --database-url postgres://postgres@127.0.0.1:5432/<db>
//                  [--jobs 20000] [--concurrency 10] [--latency-runs 300]
//                  [--latency-warmup 10] [--enqueue-batch 2000]
//                  [--poll-interval 2000] [--chain 1] [--verbose]
//
// --chain K: the throughput phase enqueues jobs/K jobs, and each adds the next
// of its chain of K (the peer of a K-task DAG); --jobs counts every job run.
//
// Prints exactly ONE line of JSON to stdout; everything else goes to stderr.
// Exits non-zero on any error. See README.md for what is measured and why.
//
// WARNING: drops and re-creates the `graphile_worker` schema in the given
// database. Point it at a scratch database.

import { createRequire } from "node:module";
import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import {
  Logger,
  makeWorkerUtils,
  run,
  runMigrations,
} from "graphile-worker";

const require = createRequire(import.meta.url);
const GW_VERSION = require("graphile-worker/package.json").version;

// ---------------------------------------------------------------- arguments

function usage(msg) {
  if (msg) process.stderr.write(`error: ${msg}\n`);
  process.stderr.write(
    "usage: node bench.mjs --database-url URL [--jobs 20000] [--concurrency 10]" +
      " [--latency-runs 300] [--latency-warmup 10] [--enqueue-batch 2000]" +
      " [--poll-interval 2000] [--verbose]\n",
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    databaseUrl: null,
    jobs: 20000,
    concurrency: 10,
    latencyRuns: 300,
    latencyWarmup: 10,
    enqueueBatch: 2000,
    pollInterval: 2000,
    chain: 1,
    verbose: false,
  };
  const intFlags = {
    "--jobs": "jobs",
    "--concurrency": "concurrency",
    "--latency-runs": "latencyRuns",
    "--latency-warmup": "latencyWarmup",
    "--enqueue-batch": "enqueueBatch",
    "--poll-interval": "pollInterval",
    "--chain": "chain",
  };
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    let value;
    const eq = arg.indexOf("=");
    if (arg.startsWith("--") && eq > 0) {
      value = arg.slice(eq + 1);
      arg = arg.slice(0, eq);
    }
    const next = () => {
      if (value !== undefined) return value;
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === "--database-url") {
      opts.databaseUrl = next();
    } else if (arg in intFlags) {
      const raw = next();
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 0) usage(`${arg}: not a non-negative integer: ${raw}`);
      opts[intFlags[arg]] = n;
    } else if (arg === "--verbose") {
      opts.verbose = true;
    } else if (arg === "-h" || arg === "--help") {
      usage();
    } else {
      usage(`unknown argument: ${arg}`);
    }
  }
  if (!opts.databaseUrl) opts.databaseUrl = process.env.DATABASE_URL || null;
  if (!opts.databaseUrl) usage("--database-url is required");
  if (opts.jobs < 1) usage("--jobs must be >= 1");
  if (opts.concurrency < 1) usage("--concurrency must be >= 1");
  if (opts.enqueueBatch < 1) usage("--enqueue-batch must be >= 1");
  if (opts.pollInterval < 1) usage("--poll-interval must be >= 1");
  if (opts.chain < 1) usage("--chain must be >= 1");
  if (opts.jobs % opts.chain !== 0) usage("--jobs must be a multiple of --chain");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));

function log(msg) {
  process.stderr.write(`[gw-bench] ${msg}\n`);
}

// graphile-worker's default logger writes to stdout; ours writes to stderr
// (stdout is reserved for the single JSON result line).
const logger = new Logger((scope) => (level, message) => {
  if (level === "debug" && !opts.verbose) return;
  if (level === "info" && !opts.verbose) return;
  const where = scope && scope.label ? `${scope.label}: ` : "";
  process.stderr.write(`[graphile-worker ${level}] ${where}${message}\n`);
});

// ------------------------------------------------------------------ options

// The peer's worker options: batching on, as the benchmark issue specifies.
// Everything else is graphile-worker's default except maxPoolSize, set per
// graphile-worker's own recommendation (max(10, concurrency + 2)).
function workerPreset() {
  return {
    worker: {
      concurrentJobs: opts.concurrency,
      maxPoolSize: Math.max(10, opts.concurrency + 2),
      // Fallback poll only: new jobs are announced by LISTEN/NOTIFY
      // ('jobs:insert' trigger), so this does not gate latency. 2000 ms is
      // graphile-worker's default.
      pollInterval: opts.pollInterval,
      // Batching: fetch (and lock) up to 100 jobs per query into an
      // in-process queue that the 10 concurrent workers drain ...
      localQueue: { size: 100 },
      // ... and batch job completions: every completion issued in the same
      // tick of the event loop goes into one DELETE ... unnest($1) query.
      completeJobBatchDelay: 0,
      logger,
    },
  };
}

function makePool() {
  const pool = new pg.Pool({
    connectionString: opts.databaseUrl,
    max: Math.max(10, opts.concurrency + 2),
  });
  // graphile-worker warns unless both handlers exist (https://err.red/wpeh).
  pool.on("error", (err) => log(`pg pool error (idle client): ${err.message}`));
  pool.on("connect", (client) => {
    client.on("error", (err) => log(`pg client error: ${err.message}`));
  });
  return pool;
}

// ------------------------------------------------------------------ helpers

async function withClient(fn) {
  const client = new pg.Client({ connectionString: opts.databaseUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function readXactCommit(client) {
  const { rows } = await client.query(
    "select xact_commit::bigint as c from pg_stat_database where datname = current_database()",
  );
  return Number(rows[0].c);
}

// Reads xact_commit once every backend that did benchmark work has exited.
// In PostgreSQL 15 a backend flushes its pending stats when it goes idle, but
// at most once per second (PGSTAT_MIN_INTERVAL); stats held back that way are
// flushed after PGSTAT_IDLE_INTERVAL (10 s) or when the backend exits (the
// exit flush runs before the socket is closed, so `client.end()`/`pool.end()`
// resolving means the stats are in shared memory).
// `pg_stat_force_next_flush()` only affects the *calling* backend, so it
// cannot flush the worker's connections; closing them can. As a belt-and-
// braces check we read twice, 250 ms apart, from a fresh connection, and
// accept the first reading when the second one differs only by our own
// reading transaction (<= 1).
async function stableXactCommit() {
  return withClient(async (client) => {
    let prev = await readXactCommit(client);
    for (let attempt = 0; attempt < 40; attempt++) {
      await sleep(250);
      const cur = await readXactCommit(client);
      if (cur - prev <= 1) return prev;
      log(`xact_commit still moving (${prev} -> ${cur}); waiting`);
      prev = cur;
    }
    throw new Error("pg_stat_database.xact_commit did not settle within 10 s");
  });
}

function percentile(sorted, q) {
  // nearest-rank
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil(q * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

function round(x, digits) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

// The single task. Its body is swapped per phase; it does no work of its own.
let onNoop = () => {};
const taskList = {
  noop: async (payload) => {
    onNoop(payload);
  },
  // One link of a chain: runs, then adds the next link (a DAG's next task).
  step: async (payload, helpers) => {
    onNoop(payload);
    if (payload.step < opts.chain) await helpers.addJob("step", { step: payload.step + 1 });
  },
};

let activeRunner = null;
let activePool = null;

async function startRunner(pool) {
  const runner = await run({
    pgPool: pool,
    taskList,
    crontab: "", // no cron; do not look for a crontab file
    noHandleSignals: true, // we handle signals ourselves (see bottom)
    preset: workerPreset(),
  });
  activeRunner = runner;
  runner.promise.catch((err) => log(`runner promise rejected: ${err?.stack || err}`));
  return runner;
}

async function stopRunner(runner, pool) {
  await runner.stop();
  await runner.promise.catch(() => {});
  activeRunner = null;
  await pool.end();
  activePool = null;
}

// ------------------------------------------------------------------- phases

async function resetAndMigrate() {
  await withClient(async (client) => {
    const { rows } = await client.query(
      "select exists(select 1 from pg_namespace where nspname = 'graphile_worker') as e",
    );
    if (rows[0].e) {
      log("graphile_worker schema exists; dropping it for a clean run");
      await client.query("drop schema graphile_worker cascade");
    }
  });
  await runMigrations({
    connectionString: opts.databaseUrl,
    logger,
    preset: workerPreset(),
  });
  log(`graphile-worker ${GW_VERSION} migrated`);
}

async function enqueueThroughputJobs() {
  const utils = await makeWorkerUtils({
    connectionString: opts.databaseUrl,
    logger,
  });
  const t0 = performance.now();
  try {
    const first = opts.jobs / opts.chain;
    for (let done = 0; done < first; ) {
      const n = Math.min(opts.enqueueBatch, first - done);
      const specs = new Array(n);
      for (let i = 0; i < n; i++) {
        specs[i] = opts.chain > 1
          ? { identifier: "step", payload: { step: 1 } }
          : { identifier: "noop", payload: {} };
      }
      await utils.addJobs(specs);
      done += n;
    }
  } finally {
    await utils.release();
  }
  const secs = (performance.now() - t0) / 1000;
  const queued = await withClient(async (c) => {
    const { rows } = await c.query("select count(*)::int as n from graphile_worker._private_jobs");
    return rows[0].n;
  });
  if (queued !== opts.jobs / opts.chain) {
    throw new Error(`expected ${opts.jobs / opts.chain} queued jobs, found ${queued}`);
  }
  log(`enqueued ${opts.jobs} jobs via addJobs (batches of ${opts.enqueueBatch}) in ${secs.toFixed(2)} s`);
  return secs;
}

async function throughputPhase() {
  // Every connection that enqueued has been closed, so its stats are flushed.
  const before = await stableXactCommit();

  // Monitor connection: polls the jobs table once the last job has started.
  const monitor = new pg.Client({ connectionString: opts.databaseUrl });
  await monitor.connect();
  let monitorQueries = 0;

  let started = 0;
  let resolveAllStarted;
  const allStarted = new Promise((r) => (resolveAllStarted = r));
  onNoop = () => {
    if (++started === opts.jobs) resolveAllStarted();
  };

  const pool = makePool();
  activePool = pool;
  const t0 = performance.now();
  const runner = await startRunner(pool);

  const TIMEOUT_MS = 15 * 60 * 1000;
  let timer;
  const timeout = new Promise((_, rej) => {
    timer = setTimeout(() => rej(new Error(`throughput phase timed out; ${started}/${opts.jobs} jobs started`)), TIMEOUT_MS);
  });
  try {
    await Promise.race([allStarted, timeout, runner.promise.then(() => { throw new Error("runner exited early"); })]);
  } finally {
    clearTimeout(timer);
  }
  const tStarted = performance.now();

  // All N task functions have run; their completions are batched, so wait
  // until the last DELETE has committed (jobs table empty). Poll every 2 ms;
  // typically only a handful of polls happen.
  for (;;) {
    monitorQueries++;
    const { rows } = await monitor.query(
      "select exists(select 1 from graphile_worker._private_jobs) as e",
    );
    if (!rows[0].e) break;
    if (performance.now() - tStarted > 60_000) {
      throw new Error("jobs table not empty 60 s after the last job started");
    }
    await sleep(2);
  }
  const t1 = performance.now();
  const seconds = (t1 - t0) / 1000;
  log(
    `throughput: ${opts.jobs} jobs in ${seconds.toFixed(3)} s` +
      ` (last start at ${((tStarted - t0) / 1000).toFixed(3)} s, ${monitorQueries} completion polls)`,
  );
  if (started !== opts.jobs) throw new Error(`task ran ${started} times, expected ${opts.jobs}`);

  // Close every benchmark connection so that its stats are flushed.
  await stopRunner(runner, pool);
  await monitor.end();
  onNoop = () => {};

  const after = await stableXactCommit();
  // Our own transactions between the two readings: the first reading itself
  // (its commit is flushed after its snapshot was taken) and the monitor's
  // polls. Subtract them so only graphile-worker's commits are counted
  // (including the worker's startup and shutdown queries).
  const harnessCommits = 1 + monitorQueries;
  const commits = after - before - harnessCommits;
  log(`xact_commit ${before} -> ${after}; minus ${harnessCommits} harness commits = ${commits}`);
  return { seconds, commits };
}

async function latencyPhase() {
  const total = opts.latencyWarmup + opts.latencyRuns;
  if (opts.latencyRuns === 0) return [];
  const waiters = new Map();
  onNoop = (payload) => {
    const t = performance.now();
    const w = payload && waiters.get(payload.i);
    if (w) {
      waiters.delete(payload.i);
      w(t);
    }
  };

  const pool = makePool();
  activePool = pool;
  const runner = await startRunner(pool);
  // Separate pool for adding jobs, as a producer process would have.
  const utils = await makeWorkerUtils({ connectionString: opts.databaseUrl, logger });
  // Let the worker finish starting up (LISTEN established, first fetch done).
  await sleep(500);

  const samples = [];
  try {
    for (let i = 0; i < total; i++) {
      let resolveStart;
      const startedP = new Promise((r) => (resolveStart = r));
      waiters.set(i, resolveStart);
      const tAdd = performance.now();
      await utils.addJob("noop", { i });
      let timer;
      const tStart = await Promise.race([
        startedP,
        new Promise((_, rej) => {
          timer = setTimeout(() => rej(new Error(`latency job ${i} did not start within 30 s`)), 30_000);
        }),
      ]);
      clearTimeout(timer);
      if (i >= opts.latencyWarmup) samples.push(tStart - tAdd);
    }
    // Let the last batched completion commit before shutting down.
    for (let k = 0; k < 500; k++) {
      const { rows } = await pool.query("select exists(select 1 from graphile_worker._private_jobs) as e");
      if (!rows[0].e) break;
      await sleep(2);
    }
  } finally {
    await utils.release();
    await stopRunner(runner, pool);
    onNoop = () => {};
  }
  const sorted = [...samples].sort((a, b) => a - b);
  log(
    `latency: ${samples.length} runs (+${opts.latencyWarmup} warm-up)` +
      ` p50 ${percentile(sorted, 0.5).toFixed(2)} ms, p99 ${percentile(sorted, 0.99).toFixed(2)} ms,` +
      ` min ${sorted[0].toFixed(2)} ms, max ${sorted[sorted.length - 1].toFixed(2)} ms`,
  );
  return sorted;
}

// --------------------------------------------------------------------- main

async function main() {
  log(
    `graphile-worker ${GW_VERSION}, node ${process.version}, jobs=${opts.jobs},` +
      ` concurrency=${opts.concurrency}, localQueue.size=100, completeJobBatchDelay=0`,
  );
  const pgVersion = await withClient(async (c) => (await c.query("show server_version")).rows[0].server_version);
  log(`postgres ${pgVersion}`);

  await resetAndMigrate();
  const enqueueSeconds = await enqueueThroughputJobs();
  const { seconds, commits } = await throughputPhase();
  const sorted = await latencyPhase();

  const result = {
    peer: "graphile-worker",
    version: GW_VERSION,
    jobs: opts.jobs,
    seconds: round(seconds, 4),
    jobs_per_second: round(opts.jobs / seconds, 1),
    commits_per_job: round(commits / opts.jobs, 4),
    latency_p50_ms: sorted.length ? round(percentile(sorted, 0.5), 3) : null,
    latency_p99_ms: sorted.length ? round(percentile(sorted, 0.99), 3) : null,
    latency_runs: sorted.length,
    // Extra context (not required by the caller):
    concurrency: opts.concurrency,
    local_queue_size: 100,
    complete_job_batch_delay_ms: 0,
    commits: commits,
    enqueue_seconds: round(enqueueSeconds, 4),
    latency_warmup: opts.latencyWarmup,
  };
  process.stdout.write(JSON.stringify(result) + "\n");
}

async function emergencyCleanup() {
  try {
    if (activeRunner) await activeRunner.stop();
  } catch {}
  try {
    if (activePool) await activePool.end();
  } catch {}
}

for (const sig of ["SIGINT", "SIGTERM"]) {
  process.once(sig, () => {
    log(`received ${sig}; stopping`);
    emergencyCleanup().finally(() => process.exit(sig === "SIGINT" ? 130 : 143));
  });
}

main().then(
  () => process.exit(0),
  async (err) => {
    log(`FAILED: ${err?.stack || err}`);
    await emergencyCleanup();
    process.exit(1);
  },
);
