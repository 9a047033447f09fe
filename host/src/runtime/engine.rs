//! The node's one wasmtime `Engine`: pooling allocator, fuel, epochs, and the epoch ticker.
//!
//! Everything sized here derives from `EngineConfig::max_instances`, so the pool, the admission
//! semaphore in front of it and the per-store limits agree with each other.

use std::thread;
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How the node's engine is built.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Component instances that may be alive at once on this node (running task attempts plus
    /// manifest reads). The pool is sized from this one number.
    pub max_instances: u32,
    /// Largest linear memory any store may grow to; per-attempt limits are at most this.
    pub max_memory_bytes: u64,
    /// Meter fuel (instructions). Off only for the fuel-overhead benchmark.
    pub fuel: bool,
    /// Interval of the epoch ticker: the resolution of deadlines and cancellation, and how often
    /// a busy guest yields to the async executor.
    pub epoch_tick: Duration,
    /// Most wasm stack one call may use; deeper recursion traps with "stack overflow".
    pub max_wasm_stack: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 128,
            max_memory_bytes: 1 << 30,
            fuel: true,
            epoch_tick: Duration::from_millis(5),
            max_wasm_stack: 1 << 20,
        }
    }
}

/// Core instances a Rust `wasm32-wasip2` component needs (3 measured) plus headroom.
const CORE_INSTANCES_PER_COMPONENT: u32 = 4;
/// Memories and tables per component instance the pool provides for.
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;

/// Builds the engine for `config`.
pub fn build_engine(config: &EngineConfig) -> wasmtime::Result<Engine> {
    let instances = config.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(instances * CORE_INSTANCES_PER_COMPONENT)
        .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT * 4)
        .total_memories(instances * MEMORIES_PER_COMPONENT)
        .max_memories_per_component(MEMORIES_PER_COMPONENT)
        .total_tables(instances * TABLES_PER_COMPONENT)
        .max_tables_per_component(TABLES_PER_COMPONENT)
        .total_stacks(instances)
        .max_memory_size(usize::try_from(config.max_memory_bytes).unwrap_or(usize::MAX))
        .table_elements(100_000)
        .max_component_instance_size(4 << 20)
        .max_core_instance_size(4 << 20)
        // A slot's memory is reset for its next instance. With madvise every reset cost page
        // faults and TLB-shootdown IPIs to every core (half the node's CPU in the queue
        // benchmark); instead keep up to 1 MiB resident and let PAGEMAP_SCAN (Linux 6.7+) find
        // the pages the guest dirtied, so only those are memset back.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(64 << 10)
        .pagemap_scan(Enabled::Auto)
        .decommit_batch_size(16)
        .max_unused_warm_slots(instances.min(64));

    let mut wasm = Config::new();
    wasm.wasm_component_model(true)
        .consume_fuel(config.fuel)
        .epoch_interruption(true)
        .max_wasm_stack(config.max_wasm_stack)
        .async_stack_size(config.max_wasm_stack + (1 << 20))
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&wasm)
}

/// Advances `engine`'s epoch every `tick` on a thread of its own until the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine, tick: Duration) -> std::io::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("hatchery-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                thread::sleep(tick);
            }
        })?;
    Ok(())
}
