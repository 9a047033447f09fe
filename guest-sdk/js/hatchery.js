// Write Hatchery task modules in JavaScript.
//
// A module declares workflows (DAGs of tasks); componentize-js turns it into a
// `hatchery:task/task-module` WebAssembly component, which Hatchery uploads and runs sandboxed:
//
//   import { Workflow, Fatal } from "../../guest-sdk/js/hatchery.js";
//   export { describe, run } from "../../guest-sdk/js/hatchery.js";
//
//   const etl = new Workflow("js-etl", { description: "extract, transform, load" });
//   const extract = etl.task("extract", { retries: 2 }, (ctx, input) => ({ rows: input.rows }));
//   etl.task("load", { parents: [extract] }, (ctx) => {
//     const { rows } = ctx.parentOutput(extract);
//     console.log(`loading ${rows.length} rows`); // stdout and stderr go to the task's log
//     return { loaded: rows.length };
//   });
//
// Build it (the WIT ships with this SDK, in `wit/`):
//
//   componentize-js app.js --wit guest-sdk/js/wit -n task-module -o app.wasm
//
// Inputs and outputs are JSON: a task receives the run's input decoded and returns anything
// JSON.stringify accepts, or a Promise of it (tasks may be `async`). Throwing `Fatal` fails the task at once; any
// other exception fails the attempt (retried if the task has retries left) with its message,
// and its stack goes to the task's log.

import * as runtime from "hatchery:task/runtime@0.1.0";

/** A failure worth retrying: the task's retry policy applies. */
export class Failed extends Error {}

/** A failure that retrying cannot fix: the task fails at once, remaining retries unused. */
export class Fatal extends Error {}

/** A child run waited for with `ChildRun.wait` failed; the message is its error. */
export class ChildFailed extends Failed {}

const workflows = new Map();
let moduleSlots;

/** How many task runs of this module one node runs at once (default: the node's). */
export function setSlots(slots) {
  moduleSlots = slots;
}

const STRATEGIES = ["group-round-robin", "cancel-in-progress", "cancel-newest"];
const WINDOWS = ["second", "minute", "hour", "day"];

function concurrencyRule({ expression, maxRuns = 1, strategy = "group-round-robin" }) {
  if (!STRATEGIES.includes(strategy)) {
    throw new Error(`unknown concurrency strategy ${JSON.stringify(strategy)}: use one of ${STRATEGIES.join(", ")}`);
  }
  return { expression, maxRuns, strategy };
}

function rateLimit({ key, dynamicKey, units = 1, limit, per }) {
  if ((key === undefined) === (dynamicKey === undefined)) {
    throw new Error("a rate limit needs exactly one of `key` and `dynamicKey`");
  }
  if (per !== undefined && !WINDOWS.includes(per)) {
    throw new Error(`unknown rate limit window ${JSON.stringify(per)}: use one of ${WINDOWS.join(", ")}`);
  }
  return {
    key: key !== undefined ? { tag: "static-key", val: key } : { tag: "dynamic-key", val: dynamicKey },
    units,
    limit,
    duration: per,
  };
}

const millis = (seconds) => (seconds === undefined ? undefined : BigInt(Math.round(seconds * 1000)));

const taskName = (parent) => (typeof parent === "string" ? parent : parent.name);

/** A task declared with `Workflow.task`; pass it as a parent or to `ctx.parentOutput`. */
class TaskHandle {
  constructor(name, options, fn) {
    this.name = name;
    this.fn = fn;
    this.options = options;
  }

  toWit() {
    const o = this.options;
    return {
      name: this.name,
      parents: (o.parents ?? []).map(taskName),
      retries: o.retries ?? 0,
      backoff: o.backoff ? { factor: o.backoff.factor, maxSeconds: o.backoff.maxSeconds } : undefined,
      executionTimeoutMs: millis(o.timeout),
      scheduleTimeoutMs: millis(o.scheduleTimeout),
      rateLimits: (o.rateLimits ?? []).map(rateLimit),
      concurrency: (o.concurrency ?? []).map(concurrencyRule),
    };
  }
}

/** A named DAG of tasks and how it is triggered. */
export class Workflow {
  constructor(name, { description = "", onEvents = [], onCrons = [], defaultPriority, concurrency = [] } = {}) {
    if (workflows.has(name)) throw new Error(`workflow ${name} is declared twice`);
    this.name = name;
    this.description = description;
    this.onEvents = onEvents;
    this.onCrons = onCrons;
    this.defaultPriority = defaultPriority;
    this.concurrency = concurrency;
    this.tasks = new Map();
    this.failureTask = undefined;
    workflows.set(name, this);
  }

  /**
   * Declares task `name`: `fn(ctx, input)` returns its output. Options: `parents` (tasks or
   * names), `retries`, `backoff: {factor, maxSeconds}`, `timeout` and `scheduleTimeout`
   * (seconds), `rateLimits: [{key | dynamicKey, units, limit, per}]`,
   * `concurrency: [{expression, maxRuns, strategy}]`.
   */
  task(name, options, fn) {
    if (typeof options === "function") [options, fn] = [{}, options];
    if (this.tasks.has(name)) throw new Error(`workflow ${this.name} declares task ${name} twice`);
    const task = new TaskHandle(name, options ?? {}, fn);
    this.tasks.set(name, task);
    return task;
  }

  /** Declares the task run when a run of this workflow fails; it sees the failure as input. */
  onFailure(name, options, fn) {
    if (typeof options === "function") [options, fn] = [{}, options];
    this.failureTask = new TaskHandle(name, { ...(options ?? {}), parents: [] }, fn);
    return this.failureTask;
  }

  toWit() {
    return {
      name: this.name,
      description: this.description,
      onEvents: this.onEvents,
      onCrons: this.onCrons,
      defaultPriority: this.defaultPriority,
      concurrency: this.concurrency.map(concurrencyRule),
      tasks: [...this.tasks.values()].map((task) => task.toWit()),
      onFailure: this.failureTask?.toWit(),
    };
  }

  find(task) {
    if (this.failureTask?.name === task) return this.failureTask;
    return this.tasks.get(task);
  }
}

/** A child workflow run started with `ctx.spawn`. */
export class ChildRun {
  constructor(id) {
    this.id = id;
  }

  /** Waits for the child to finish and returns its decoded output; throws `ChildFailed`. */
  wait() {
    try {
      return JSON.parse(runtime.wait(this.id));
    } catch (error) {
      throw new ChildFailed(`child run ${this.id} failed: ${errorText(error)}`);
    }
  }
}

/** The message of an error thrown by an import that returns `result<_, string>`. */
function errorText(error) {
  return typeof error?.payload === "string" ? error.payload : String(error?.message ?? error);
}

const log = (level) => (message) => runtime.log(level, String(message));

/** What a running task knows about itself, and its way to reach the host. */
export class Context {
  constructor(ctx) {
    this.workflowRunId = ctx.workflowRunId;
    this.taskRunId = ctx.taskRunId;
    this.workflow = ctx.workflow;
    this.task = ctx.task;
    this.attempt = ctx.attempt;
    this.metadata = JSON.parse(ctx.metadata || "{}");
    this.rawParents = new Map(ctx.parents);
    this.log = Object.assign(log("info"), {
      trace: log("trace"),
      debug: log("debug"),
      info: log("info"),
      warn: log("warn"),
      error: log("error"),
    });
  }

  /** Every parent's decoded output, by task name. */
  get parents() {
    return Object.fromEntries([...this.rawParents].map(([name, output]) => [name, JSON.parse(output)]));
  }

  /** The decoded output of parent task `parent` (its handle or its name). */
  parentOutput(parent) {
    const name = taskName(parent);
    if (!this.rawParents.has(name)) {
      throw new Fatal(`task ${this.task} has no parent ${name} (parents: ${[...this.rawParents.keys()].join(", ")})`);
    }
    return JSON.parse(this.rawParents.get(name));
  }

  /**
   * Starts a child run of `workflow`. Idempotent across retries of this task: the n-th spawn
   * (or the one with `key`) returns the same child again.
   */
  spawn(workflow, input = null, { key, metadata, priority } = {}) {
    const options = {
      key,
      additionalMetadata: metadata === undefined ? undefined : JSON.stringify(metadata),
      priority,
    };
    try {
      return new ChildRun(runtime.spawn(workflow, JSON.stringify(input), options));
    } catch (error) {
      throw new Failed(`spawning ${workflow} failed: ${errorText(error)}`);
    }
  }

  /** Spawns a child run and waits for its output. */
  runChild(workflow, input = null, options = {}) {
    return this.spawn(workflow, input, options).wait();
  }

  /** Publishes an event in this tenant; workflows subscribed to `key` start. */
  pushEvent(key, payload = null) {
    try {
      runtime.pushEvent(key, JSON.stringify(payload));
    } catch (error) {
      throw new Failed(`pushing event ${key} failed: ${errorText(error)}`);
    }
  }

  /** Whether this run has been asked to stop (it is stopped pre-emptively anyway). */
  cancelled() {
    return runtime.cancelled();
  }
}

/** The `err` of a `result` export: componentize-js takes it from a thrown value's `payload`. */
class TaskError extends Error {
  constructor(tag, message) {
    super(message);
    this.payload = { tag, val: message };
  }
}

/** Export of the component: the manifest. Re-export it from the module's entry file. */
export function describe() {
  return {
    workflows: [...workflows.values()].map((workflow) => workflow.toWit()),
    slots: moduleSlots,
  };
}

/**
 * Export of the component: runs one task (which may be `async`, e.g. to `await fetch(...)`).
 * Re-export it from the module's entry file.
 */
export async function run(ctx, input) {
  const task = workflows.get(ctx.workflow)?.find(ctx.task);
  if (task === undefined) {
    throw new TaskError("fatal", `this module has no task ${ctx.workflow}/${ctx.task}`);
  }
  try {
    const output = await task.fn(new Context(ctx), input ? JSON.parse(input) : null);
    return JSON.stringify(output === undefined ? null : output);
  } catch (error) {
    if (error instanceof Fatal) throw new TaskError("fatal", error.message || "fatal");
    if (error instanceof Failed) throw new TaskError("failed", error.message || "failed");
    // SpiderMonkey's `stack` holds only the frames: print the error itself first.
    console.error(`${error}\n${error?.stack ?? ""}`);
    const name = error?.name && error.name !== "Error" ? `${error.name}: ` : "";
    throw new TaskError("failed", `${name}${error?.message ?? String(error)}`);
  }
}
