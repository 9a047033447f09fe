// A JavaScript task module: workflow `js-etl` is a three-task DAG (extract → transform → load)
// whose tasks pass their outputs on, and `load` spawns a child run of `js-square` per record and
// waits for them. Input: `{"rows": ["3,apple", "5,pear", ...]}` (a sample when missing); output
// of `load`: `{"loaded": n, "total": sum of quantities, "squares": sum of their squares}`. A row
// `"fail"` makes `extract` throw, to show an error and its stack.
//
// Build and run (README, "Tasks in JavaScript"):
//
//   componentize-js examples/js-hello/app.js --wit guest-sdk/js/wit -n task-module -o js-hello.wasm
//   hatchery exec js-hello.wasm js-etl --input '{"rows": ["3,apple", "5, Pear "]}'

import { Fatal, Workflow } from "../../guest-sdk/js/hatchery.js";

export { describe, run } from "../../guest-sdk/js/hatchery.js";

const SAMPLE = ["3,apple", "5,Pear", "not a row", "0,fig", "2, apple "];

const etl = new Workflow("js-etl", {
  description: "extract, transform, load, in JavaScript",
  onEvents: ["js:etl"],
});

const extract = etl.task("extract", { retries: 1 }, (ctx, input) => {
  const rows = input?.rows ?? SAMPLE;
  if (rows.includes("fail")) throw new TypeError("the input asked extract to fail");
  const records = [];
  for (const row of rows) {
    const [quantity, item] = row.split(/,(.*)/s);
    if (/^\s*\d+\s*$/.test(quantity) && item) records.push({ quantity: Number(quantity), item });
  }
  console.log(`extracted ${records.length} rows, rejected ${rows.length - records.length}`);
  return { records };
});

const transform = etl.task("transform", { parents: [extract] }, (ctx) => {
  const { records } = ctx.parentOutput(extract);
  const kept = records
    .map((r) => ({ quantity: r.quantity, item: r.item.trim().toLowerCase() }))
    .filter((r) => r.quantity > 0 && r.item);
  ctx.log.info(`kept ${kept.length} of ${records.length} records`);
  return kept;
});

etl.task("load", { parents: [transform] }, (ctx) => {
  const records = ctx.parentOutput("transform");
  const children = records.map((r) => ctx.spawn("js-square", { n: r.quantity }));
  const squares = children.reduce((sum, child) => sum + child.wait().square, 0);
  return {
    loaded: records.length,
    total: records.reduce((sum, r) => sum + r.quantity, 0),
    squares,
  };
});

const square = new Workflow("js-square", { description: 'squares a number: {"n": 7} -> {"square": 49}' });

square.task("compute", (ctx, input) => {
  if (!Number.isInteger(input?.n)) throw new Fatal(`expected {"n": <integer>}, got ${JSON.stringify(input)}`);
  return { square: input.n * input.n };
});
