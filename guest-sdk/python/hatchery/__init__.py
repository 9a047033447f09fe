"""Write Hatchery task modules in Python.

A module declares workflows (DAGs of tasks) with decorators; ``componentize-py`` turns it into a
``hatchery:task/task-module`` WebAssembly component, which Hatchery uploads and runs sandboxed::

    from hatchery import Workflow, Context, Fatal, WitWorld  # WitWorld: the component's exports

    etl = Workflow("py-etl", description="extract, transform, load")

    @etl.task(retries=2)
    def extract(ctx: Context, input):
        return {"rows": input.get("rows", [])}

    @etl.task(parents=[extract])
    def load(ctx: Context, input):
        rows = ctx.parent_output(extract)["rows"]
        print(f"loading {len(rows)} rows")  # stdout and stderr go to the task's log
        return {"loaded": len(rows)}

Build it (the WIT ships with this SDK, in ``wit/``)::

    componentize-py -d guest-sdk/python/wit -w task-module componentize app \\
        -p guest-sdk/python -p . -o app.wasm

Inputs and outputs are JSON: a task receives the run's input decoded (``dict``, ``list``, ...)
and returns anything ``json.dumps`` accepts. Raising :class:`Fatal` fails the task at once;
any other exception fails the attempt (retried if the task has retries left), with the
exception's type and message as the error and its traceback in the task's log.
"""

from __future__ import annotations

import json
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from componentize_py_types import Err
from wit_world.imports import runtime, types

__all__ = [
    "ChildFailed",
    "ChildRun",
    "Concurrency",
    "Context",
    "Failed",
    "Fatal",
    "RateLimit",
    "WitWorld",
    "Workflow",
    "set_slots",
]


class Failed(Exception):
    """A failure worth retrying: the task's retry policy applies."""


class Fatal(Exception):
    """A failure that retrying cannot fix: the task fails at once, remaining retries unused."""


class ChildFailed(Failed):
    """A child run waited for with :meth:`ChildRun.wait` failed; the message is its error."""


@dataclass
class Concurrency:
    """At most ``max_runs`` runs sharing the key that ``expression`` (CEL over ``input`` and
    ``additional_metadata``) evaluates to are in progress at once."""

    expression: str
    max_runs: int = 1
    strategy: str = "group_round_robin"  # or "cancel_in_progress", "cancel_newest"

    def _wit(self) -> types.ConcurrencyRule:
        strategies = {
            "group_round_robin": types.ConcurrencyStrategy.GROUP_ROUND_ROBIN,
            "cancel_in_progress": types.ConcurrencyStrategy.CANCEL_IN_PROGRESS,
            "cancel_newest": types.ConcurrencyStrategy.CANCEL_NEWEST,
        }
        if self.strategy not in strategies:
            raise ValueError(f"unknown concurrency strategy {self.strategy!r}: use one of {sorted(strategies)}")
        return types.ConcurrencyRule(self.expression, self.max_runs, strategies[self.strategy])


@dataclass
class RateLimit:
    """Units a task consumes from a rate limit before it starts: a static key shared by every
    run that names it (``key=``), or a dynamic key computed by CEL (``dynamic_key=``)."""

    key: Optional[str] = None
    dynamic_key: Optional[str] = None
    units: int = 1
    limit: Optional[int] = None
    per: Optional[str] = None  # "second", "minute", "hour" or "day"

    def _wit(self) -> types.RateLimit:
        if (self.key is None) == (self.dynamic_key is None):
            raise ValueError("a RateLimit needs exactly one of key= and dynamic_key=")
        key: Any = (
            types.RateLimitKey_StaticKey(self.key)
            if self.key is not None
            else types.RateLimitKey_DynamicKey(self.dynamic_key or "")
        )
        durations = {
            "second": types.RateLimitDuration.SECOND,
            "minute": types.RateLimitDuration.MINUTE,
            "hour": types.RateLimitDuration.HOUR,
            "day": types.RateLimitDuration.DAY,
        }
        if self.per is not None and self.per not in durations:
            raise ValueError(f"unknown rate limit window {self.per!r}: use one of {sorted(durations)}")
        return types.RateLimit(key, self.units, self.limit, durations.get(self.per or ""))


TaskFn = Callable[["Context", Any], Any]


@dataclass
class _Task:
    name: str
    fn: TaskFn
    parents: List[str]
    retries: int
    backoff: Optional[tuple]
    timeout: Optional[float]
    schedule_timeout: Optional[float]
    rate_limits: List[RateLimit]
    concurrency: List[Concurrency]

    def _wit(self) -> types.TaskDef:
        return types.TaskDef(
            name=self.name,
            parents=list(self.parents),
            retries=self.retries,
            backoff=types.Backoff(float(self.backoff[0]), int(self.backoff[1])) if self.backoff else None,
            execution_timeout_ms=_millis(self.timeout),
            schedule_timeout_ms=_millis(self.schedule_timeout),
            rate_limits=[limit._wit() for limit in self.rate_limits],
            concurrency=[rule._wit() for rule in self.concurrency],
        )


def _millis(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else int(seconds * 1000)


def _task_name(parent: Union[str, Callable[..., Any]]) -> str:
    return parent if isinstance(parent, str) else parent.__name__


_WORKFLOWS: Dict[str, "Workflow"] = {}
_SLOTS: Optional[int] = None


def set_slots(slots: int) -> None:
    """How many task runs of this module one node runs at once (default: the node's)."""
    global _SLOTS
    _SLOTS = slots


class Workflow:
    """A named DAG of tasks and how it is triggered. Tasks are added with :meth:`task`."""

    def __init__(
        self,
        name: str,
        description: str = "",
        on_events: Sequence[str] = (),
        on_crons: Sequence[str] = (),
        default_priority: Optional[int] = None,
        concurrency: Sequence[Concurrency] = (),
    ) -> None:
        if name in _WORKFLOWS:
            raise ValueError(f"workflow {name!r} is declared twice")
        self.name = name
        self.description = description
        self.on_events = list(on_events)
        self.on_crons = list(on_crons)
        self.default_priority = default_priority
        self.concurrency = list(concurrency)
        self.tasks: Dict[str, _Task] = {}
        self.failure_task: Optional[_Task] = None
        _WORKFLOWS[name] = self

    def task(
        self,
        fn: Optional[TaskFn] = None,
        *,
        name: Optional[str] = None,
        parents: Sequence[Union[str, Callable[..., Any]]] = (),
        retries: int = 0,
        backoff: Optional[tuple] = None,
        timeout: Optional[float] = None,
        schedule_timeout: Optional[float] = None,
        rate_limits: Sequence[RateLimit] = (),
        concurrency: Sequence[Concurrency] = (),
    ) -> Any:
        """Declares ``fn(ctx, input)`` as a task: ``@wf.task`` or ``@wf.task(parents=[...],
        retries=3, backoff=(2.0, 60), timeout=30)`` (seconds)."""

        def register(fn: TaskFn) -> TaskFn:
            task = _Task(
                name=name or fn.__name__,
                fn=fn,
                parents=[_task_name(parent) for parent in parents],
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                schedule_timeout=schedule_timeout,
                rate_limits=list(rate_limits),
                concurrency=list(concurrency),
            )
            if task.name in self.tasks:
                raise ValueError(f"workflow {self.name!r} declares task {task.name!r} twice")
            self.tasks[task.name] = task
            return fn

        return register(fn) if fn is not None else register

    def on_failure(self, fn: Optional[TaskFn] = None, *, retries: int = 0, timeout: Optional[float] = None) -> Any:
        """Declares the task run when a run of this workflow fails; it sees the failure in its
        input."""

        def register(fn: TaskFn) -> TaskFn:
            self.failure_task = _Task(fn.__name__, fn, [], retries, None, timeout, None, [], [])
            return fn

        return register(fn) if fn is not None else register

    def _wit(self) -> types.WorkflowDef:
        return types.WorkflowDef(
            name=self.name,
            description=self.description,
            on_events=self.on_events,
            on_crons=self.on_crons,
            default_priority=self.default_priority,
            concurrency=[rule._wit() for rule in self.concurrency],
            tasks=[task._wit() for task in self.tasks.values()],
            on_failure=self.failure_task._wit() if self.failure_task else None,
        )

    def _find(self, task: str) -> Optional[_Task]:
        if self.failure_task is not None and self.failure_task.name == task:
            return self.failure_task
        return self.tasks.get(task)


class ChildRun:
    """A child workflow run started with :meth:`Context.spawn`."""

    def __init__(self, run_id: str) -> None:
        self.id = run_id

    def wait(self) -> Any:
        """Waits for the child to finish and returns its decoded output; raises
        :class:`ChildFailed` with the child's error if it failed."""
        try:
            return json.loads(runtime.wait(self.id))
        except Err as error:
            raise ChildFailed(f"child run {self.id} failed: {error.value}") from None


class Log:
    """``ctx.log.info("...")`` and friends: lines in the task's log at a level."""

    def __call__(self, message: str) -> None:
        runtime.log(runtime.LogLevel.INFO, str(message))

    def trace(self, message: str) -> None:
        runtime.log(runtime.LogLevel.TRACE, str(message))

    def debug(self, message: str) -> None:
        runtime.log(runtime.LogLevel.DEBUG, str(message))

    def info(self, message: str) -> None:
        runtime.log(runtime.LogLevel.INFO, str(message))

    def warn(self, message: str) -> None:
        runtime.log(runtime.LogLevel.WARN, str(message))

    def error(self, message: str) -> None:
        runtime.log(runtime.LogLevel.ERROR, str(message))


class Context:
    """What a running task knows about itself, and its way to reach the host."""

    def __init__(self, ctx: types.RunContext) -> None:
        self.workflow_run_id = ctx.workflow_run_id
        self.task_run_id = ctx.task_run_id
        self.workflow = ctx.workflow
        self.task = ctx.task
        self.attempt = ctx.attempt
        self.metadata: Dict[str, Any] = json.loads(ctx.metadata or "{}")
        self._parents = dict(ctx.parents)
        self.log = Log()

    @property
    def parents(self) -> Dict[str, Any]:
        """Every parent's decoded output, by task name."""
        return {name: json.loads(output) for name, output in self._parents.items()}

    def parent_output(self, parent: Union[str, Callable[..., Any]]) -> Any:
        """The decoded output of parent task ``parent`` (its name or its function)."""
        name = _task_name(parent)
        if name not in self._parents:
            raise Fatal(f"task {self.task!r} has no parent {name!r} (parents: {sorted(self._parents)})")
        return json.loads(self._parents[name])

    def spawn(
        self,
        workflow: str,
        input: Any = None,
        *,
        key: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
        priority: Optional[int] = None,
    ) -> ChildRun:
        """Starts a child run of ``workflow``. Idempotent across retries of this task: the n-th
        spawn (or the one with ``key``) returns the same child again."""
        options = runtime.SpawnOptions(
            key=key,
            additional_metadata=None if metadata is None else json.dumps(metadata),
            priority=priority,
        )
        try:
            return ChildRun(runtime.spawn(workflow, json.dumps(input), options))
        except Err as error:
            raise Failed(f"spawning {workflow!r} failed: {error.value}") from None

    def run_child(self, workflow: str, input: Any = None, **options: Any) -> Any:
        """Spawns a child run and waits for its output."""
        return self.spawn(workflow, input, **options).wait()

    def push_event(self, key: str, payload: Any = None) -> None:
        """Publishes an event in this tenant; workflows subscribed to ``key`` start."""
        try:
            runtime.push_event(key, json.dumps(payload))
        except Err as error:
            raise Failed(f"pushing event {key!r} failed: {error.value}") from None

    def cancelled(self) -> bool:
        """Whether this run has been asked to stop (it is stopped pre-emptively anyway)."""
        return runtime.cancelled()


class WitWorld:
    """The component's exports. Import it into the module that ``componentize-py`` builds
    (``from hatchery import WitWorld``)."""

    def describe(self) -> types.Manifest:
        return types.Manifest(
            workflows=[workflow._wit() for workflow in _WORKFLOWS.values()],
            slots=_SLOTS,
        )

    def run(self, ctx: types.RunContext, input: str) -> str:
        workflow = _WORKFLOWS.get(ctx.workflow)
        task = workflow._find(ctx.task) if workflow else None
        if task is None:
            raise Err(types.TaskError_Fatal(f"this module has no task {ctx.workflow}/{ctx.task}"))
        try:
            output = task.fn(Context(ctx), json.loads(input) if input else None)
            return json.dumps(output)
        except Fatal as error:
            raise Err(types.TaskError_Fatal(str(error) or "fatal")) from None
        except Failed as error:
            raise Err(types.TaskError_Failed(str(error) or "failed")) from None
        except Exception as error:  # every other exception fails the attempt, retryably
            traceback.print_exc(file=sys.stderr)
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            raise Err(types.TaskError_Failed(message)) from None
