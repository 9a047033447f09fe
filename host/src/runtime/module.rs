//! Loading a module: check the bytes, compile (through the cache), check imports and exports
//! against the `task-module` world, read and validate its manifest.
//!
//! Every rejection says what is wrong and, where it can, what to do about it.

use std::sync::Arc;

use super::bindings::TaskModulePre;
use super::bindings::hatchery::task::types as wit;
use super::cache::Digest;
use super::failure::TaskFailure;
use super::imports::TaskState;
use super::inspect::Footprint;
use crate::manifest::{
    Backoff, ConcurrencyRule, ConcurrencyStrategy, Manifest, ManifestError, RateLimit,
    RateLimitDuration, RateLimitKey, TaskDef, WorkflowDef,
};

/// The interfaces a task may import (without version). Everything else is refused at load.
///
/// Interpreters built by the stock toolchains (componentize-py, componentize-js) import the
/// filesystem, sockets and HTTP whether or not the task uses them. The filesystem and sockets
/// hold nothing (no preopened directory, every socket address and name lookup denied); HTTP
/// reaches only what the tenant's egress allowlist names (`crate::egress`).
pub const GRANTED_INTERFACES: &[&str] = &[
    "hatchery:task/types",
    "hatchery:task/runtime",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/stdin",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/ip-name-lookup",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// What a task gets from each granted interface, for the refusal message.
const WHAT_TASKS_GET: &str = "tasks get `hatchery:task/runtime`, WASI 0.2 I/O, clocks, random, \
     stdio, secrets as environment variables, `wasi:http` to the hosts their tenant allows, and \
     `wasi:filesystem` and `wasi:sockets` that hold nothing (no directories, every address \
     denied)";

/// Why a module was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file: it does not start with the `\\0asm` magic bytes")]
    NotWasm,
    /// A core module instead of a component.
    #[error(
        "not a component: this is a core WebAssembly module; build it for the `wasm32-wasip2` \
         target, which emits components"
    )]
    CoreModule,
    /// The component does not parse, validate or compile.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component imports interfaces the sandbox does not grant (all of them, in order).
    #[error(
        "the component imports {}, which Hatchery does not provide: {WHAT_TASKS_GET}",
        quoted_list(.0)
    )]
    ForbiddenImport(Vec<String>),
    /// One instance of the component needs more of the instance pool than the node allows.
    #[error(
        "one instance of this component needs {needs} {what}, more than the {limit} this node \
         allows per instance; raise it with `hatchery serve {flag} {needs}` (or build the module \
         with fewer {what})"
    )]
    TooLargeForPool {
        /// Which resource: `core instances`, `memories` or `tables`.
        what: &'static str,
        /// What one instance needs.
        needs: u32,
        /// What the node allows per instance.
        limit: u32,
        /// The `serve` flag that raises the limit.
        flag: &'static str,
    },
    /// The component is not a `task-module`.
    #[error("the component does not implement the `hatchery:task/task-module` world: {0}")]
    WrongWorld(String),
    /// Calling `describe` failed.
    #[error("reading the manifest (`describe`) failed: {0}")]
    Describe(TaskFailure),
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// A loaded, validated module: ready to instantiate, with its manifest.
pub struct LoadedModule {
    /// sha256 of the module's bytes.
    pub digest: Digest,
    /// Size of the module in bytes.
    pub size: usize,
    /// What the module declares.
    pub manifest: Manifest,
    /// What one instance takes from the pool; admission reserves exactly this.
    pub footprint: Footprint,
    pub(crate) pre: TaskModulePre<TaskState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("workflows", &self.manifest.workflows.len())
            .finish_non_exhaustive()
    }
}

impl LoadedModule {
    /// Shares the module.
    pub fn into_arc(self) -> Arc<Self> {
        Arc::new(self)
    }
}

/// Refuses anything but a component, with a message that says which it is.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    if !bytes.starts_with(MAGIC) {
        return Err(LoadError::NotWasm);
    }
    if bytes.get(4..8) == Some(&CORE_VERSION[..]) {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

/// Every import of the component that is not granted, in the component's order.
pub(crate) fn forbidden_imports(imports: &[String]) -> Vec<String> {
    imports
        .iter()
        .filter(|name| {
            let unversioned = name.split('@').next().unwrap_or(name);
            !GRANTED_INTERFACES.contains(&unversioned)
        })
        .cloned()
        .collect()
}

fn quoted_list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    quoted.join(", ")
}

/// Converts the guest's manifest into the host's types (validation is separate).
pub(crate) fn manifest_from_wit(manifest: wit::Manifest) -> Manifest {
    Manifest {
        workflows: manifest
            .workflows
            .into_iter()
            .map(workflow_from_wit)
            .collect(),
        slots: manifest.slots,
    }
}

fn workflow_from_wit(workflow: wit::WorkflowDef) -> WorkflowDef {
    WorkflowDef {
        name: workflow.name,
        description: workflow.description,
        on_events: workflow.on_events,
        on_crons: workflow.on_crons,
        default_priority: workflow.default_priority,
        concurrency: workflow
            .concurrency
            .into_iter()
            .map(concurrency_from_wit)
            .collect(),
        tasks: workflow.tasks.into_iter().map(task_from_wit).collect(),
        on_failure: workflow.on_failure.map(task_from_wit),
    }
}

fn task_from_wit(task: wit::TaskDef) -> TaskDef {
    TaskDef {
        name: task.name,
        parents: task.parents,
        retries: task.retries,
        backoff: task.backoff.map(|b| Backoff {
            factor: b.factor,
            max_seconds: b.max_seconds,
        }),
        execution_timeout_ms: task.execution_timeout_ms,
        schedule_timeout_ms: task.schedule_timeout_ms,
        rate_limits: task
            .rate_limits
            .into_iter()
            .map(rate_limit_from_wit)
            .collect(),
        concurrency: task
            .concurrency
            .into_iter()
            .map(concurrency_from_wit)
            .collect(),
    }
}

fn concurrency_from_wit(rule: wit::ConcurrencyRule) -> ConcurrencyRule {
    ConcurrencyRule {
        expression: rule.expression,
        max_runs: rule.max_runs,
        strategy: match rule.strategy {
            wit::ConcurrencyStrategy::GroupRoundRobin => ConcurrencyStrategy::GroupRoundRobin,
            wit::ConcurrencyStrategy::CancelInProgress => ConcurrencyStrategy::CancelInProgress,
            wit::ConcurrencyStrategy::CancelNewest => ConcurrencyStrategy::CancelNewest,
        },
    }
}

fn rate_limit_from_wit(limit: wit::RateLimit) -> RateLimit {
    RateLimit {
        key: match limit.key {
            wit::RateLimitKey::StaticKey(key) => RateLimitKey::Static(key),
            wit::RateLimitKey::DynamicKey(expression) => RateLimitKey::Dynamic(expression),
        },
        units: limit.units,
        limit: limit.limit,
        duration: limit.duration.map(|d| match d {
            wit::RateLimitDuration::Second => RateLimitDuration::Second,
            wit::RateLimitDuration::Minute => RateLimitDuration::Minute,
            wit::RateLimitDuration::Hour => RateLimitDuration::Hour,
            wit::RateLimitDuration::Day => RateLimitDuration::Day,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_tell_core_modules_from_components() {
        assert_eq!(check_header(b"hello"), Err(LoadError::NotWasm));
        assert_eq!(check_header(b"\0asm\x01\0\0\0"), Err(LoadError::CoreModule));
        assert_eq!(check_header(b"\0asm\x0d\0\x01\0"), Ok(()));
    }
}
