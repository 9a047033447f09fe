// Test fixture: a JavaScript module on raw bindings (no SDK). Task `throw` throws a plain
// Error, which componentize-js cannot turn into a `task-error`: the attempt traps, and the
// failure must carry the exception the guest printed.

export function describe() {
  const task = (name) => ({ name, parents: [], retries: 0, rateLimits: [], concurrency: [] });
  return {
    workflows: [
      { name: "js-raw", description: "", onEvents: [], onCrons: [], concurrency: [], tasks: [task("throw")] },
    ],
  };
}

export function run(ctx, input) {
  console.log(`running ${ctx.task}`);
  throw new Error("raw boom");
}
