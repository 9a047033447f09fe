"""A Python task module: workflow ``py-etl`` is a three-task DAG (extract → transform → load)
whose tasks pass their outputs on, and ``load`` spawns a child run of ``py-square`` per record
and waits for them. Input: ``{"rows": ["3,apple", "5,pear", ...]}`` (a sample when missing);
output of ``load``: ``{"loaded": n, "total": sum of quantities, "squares": sum of their
squares}``. A row ``"fail"`` makes ``extract`` raise, to show an error and its traceback.

Build and run (README, "Tasks in Python")::

    componentize-py -d guest-sdk/python/wit -w task-module componentize app \\
        -p guest-sdk/python -p examples/python-hello -o python-hello.wasm
    hatchery exec python-hello.wasm py-etl --input '{"rows": ["3,apple", "5, Pear "]}'
"""

from hatchery import Context, Fatal, WitWorld, Workflow  # noqa: F401 (WitWorld is the export)

SAMPLE = ["3,apple", "5,Pear", "not a row", "0,fig", "2, apple "]

etl = Workflow("py-etl", description="extract, transform, load, in Python", on_events=["py:etl"])


@etl.task(retries=1)
def extract(ctx: Context, input):
    rows = (input or {}).get("rows", SAMPLE)
    if "fail" in rows:
        raise ValueError("the input asked extract to fail")
    records = []
    for row in rows:
        quantity, _, item = row.partition(",")
        if quantity.strip().isdigit() and item:
            records.append({"quantity": int(quantity), "item": item})
    print(f"extracted {len(records)} rows, rejected {len(rows) - len(records)}")
    return {"records": records}


@etl.task(parents=[extract])
def transform(ctx: Context, input):
    records = ctx.parent_output(extract)["records"]
    kept = [
        {"quantity": r["quantity"], "item": r["item"].strip().lower()}
        for r in records
        if r["quantity"] > 0 and r["item"].strip()
    ]
    ctx.log.info(f"kept {len(kept)} of {len(records)} records")
    return kept


@etl.task(parents=[transform])
def load(ctx: Context, input):
    records = ctx.parent_output("transform")
    children = [ctx.spawn("py-square", {"n": r["quantity"]}) for r in records]
    squares = sum(child.wait()["square"] for child in children)
    return {
        "loaded": len(records),
        "total": sum(r["quantity"] for r in records),
        "squares": squares,
    }


square = Workflow("py-square", description="squares a number: {\"n\": 7} -> {\"square\": 49}")


@square.task
def compute(ctx: Context, input):
    n = input.get("n") if isinstance(input, dict) else None
    if not isinstance(n, int):
        raise Fatal(f"expected {{\"n\": <integer>}}, got {input!r}")
    return {"square": n * n}
