// Benchmark fixture: the bench guest's tasks in JavaScript. `js-noop` returns `{}`;
// `js-compute` counts the primes below `n` by trial division, the same loop as the Rust
// `compute`, to show what a fuel budget buys in each language.

import { Workflow } from "../../../guest-sdk/js/hatchery.js";

export { describe, run } from "../../../guest-sdk/js/hatchery.js";

new Workflow("js-noop").task("noop", () => ({}));

function isPrime(k) {
  if (k < 2) return false;
  for (let d = 2; d * d <= k; d++) if (k % d === 0) return false;
  return true;
}

new Workflow("js-compute").task("compute", (ctx, input) => {
  let primes = 0;
  for (let k = 0; k < input.n; k++) if (isPrime(k)) primes++;
  return { primes };
});
