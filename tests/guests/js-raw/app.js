// Test fixture: a JavaScript module on raw bindings (no SDK). Task `throw` throws a plain
// Error, which componentize-js cannot turn into a `task-error`: the attempt traps, and the
// failure must carry the exception the guest printed. Task `fetch` calls `fetch`, which the
// host refuses: it returns the error the guest saw.

export function describe() {
  const task = (name) => ({ name, parents: [], retries: 0, rateLimits: [], concurrency: [] });
  return {
    workflows: [
      {
        name: "js-raw",
        description: "",
        onEvents: [],
        onCrons: [],
        concurrency: [],
        tasks: [task("throw"), task("fetch")],
      },
    ],
  };
}

export async function run(ctx, input) {
  console.log(`running ${ctx.task}`);
  if (ctx.task === "fetch") {
    try {
      const response = await fetch("https://api.example.com/v1/charge", { method: "POST" });
      return JSON.stringify({ status: response.status });
    } catch (error) {
      return JSON.stringify({ refused: String(error) });
    }
  }
  throw new Error("raw boom");
}
