//! Shared set-up: runtimes, loaded guests, attempts with chosen limits.

use std::sync::{Arc, OnceLock};

use hatchery::runtime::{
    Attempt, AttemptReport, EngineConfig, Limits, LoadedModule, Runtime, RuntimeConfig,
};

/// A runtime with a small pool, no disk cache.
pub fn new_runtime() -> Runtime {
    Runtime::new(RuntimeConfig {
        engine: EngineConfig {
            max_instances: 16,
            ..EngineConfig::default()
        },
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

/// One runtime shared by the tests that only need to run tasks (the compile is the slow part).
pub fn shared_runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(new_runtime).clone()
}

/// Loads the guest at `path` into `runtime`.
pub async fn load(runtime: &Runtime, path: &str) -> Arc<LoadedModule> {
    runtime
        .load(&hatchery_guests::read(path))
        .await
        .expect("guest loads")
}

/// Runs the single-task workflow `name` of `module` with `input` and `limits`.
pub async fn run(
    runtime: &Runtime,
    module: &LoadedModule,
    name: &str,
    input: &str,
    limits: Limits,
) -> AttemptReport {
    let attempt = Attempt {
        limits,
        ..Attempt::new(name, name, input)
    };
    runtime.execute(module, attempt).await
}

/// Parses JSON text, for comparing outputs structurally.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).expect("valid JSON")
}
