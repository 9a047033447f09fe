"""Benchmark fixture: the bench guest's tasks in Python. ``py-noop`` returns ``{}``;
``py-compute`` counts the primes below ``n`` by trial division, the same loop as the Rust
``compute``, to show what a fuel budget buys in each language."""

from hatchery import Context, WitWorld, Workflow  # noqa: F401 (WitWorld is the export)


@Workflow("py-noop").task
def noop(ctx: Context, input):
    return {}


def is_prime(k: int) -> bool:
    if k < 2:
        return False
    d = 2
    while d * d <= k:
        if k % d == 0:
            return False
        d += 1
    return True


@Workflow("py-compute").task
def compute(ctx: Context, input):
    return {"primes": sum(1 for k in range(input["n"]) if is_prime(k))}
