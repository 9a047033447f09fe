// Test fixture: a JavaScript module on raw bindings (no SDK). Task `throw` (workflow
// `js-raw`) throws a plain Error, which componentize-js cannot turn into a `task-error`: the
// attempt traps, and the failure must carry the exception the guest printed. Task `fetch`
// (workflow `js-fetch`) fetches `{url, method}` (its input), following one redirect, and
// returns `{status, body}`, or `{refused}` with the error the guest saw.

export function describe() {
  const task = (name) => ({ name, parents: [], retries: 0, rateLimits: [], concurrency: [] });
  return {
    workflows: [
      { name: "js-raw", description: "", onEvents: [], onCrons: [], concurrency: [], tasks: [task("throw")] },
      { name: "js-fetch", description: "", onEvents: [], onCrons: [], concurrency: [], tasks: [task("fetch")] },
    ],
  };
}

export async function run(ctx, input) {
  console.log(`running ${ctx.task}`);
  if (ctx.task === "fetch") {
    const request = JSON.parse(input || "null") ?? {};
    const url = request.url ?? "https://api.example.com/v1/charge";
    try {
      let response = await fetch(url, { method: request.method ?? "POST" });
      // StarlingMonkey's fetch hands redirects back; follow one as a client would.
      const location = response.headers.get("location");
      if (response.status >= 300 && response.status < 400 && location) {
        response = await fetch(location);
      }
      return JSON.stringify({ status: response.status, body: await response.text() });
    } catch (error) {
      return JSON.stringify({ refused: String(error) });
    }
  }
  throw new Error("raw boom");
}
