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
    /// What one component instance may take from the pool at most (checked at upload).
    pub per_instance: PoolShare,
    /// What all instances alive at once may take together. Admission reserves each module's
    /// real footprint against these totals, so the pool itself is never exhausted.
    pub pool_total: PoolShare,
}

/// An amount of each resource the pooling allocator hands out besides component instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolShare {
    /// Core module instances.
    pub core_instances: u32,
    /// Linear memories.
    pub memories: u32,
    /// Tables.
    pub tables: u32,
}

impl PoolShare {
    /// The default per-instance maximum: a Rust guest needs 3 core instances, 1 memory and
    /// 2 tables; a componentize-py guest 14 / 1 / 2 and a componentize-js guest 4 / 1 / 2.
    pub const PER_INSTANCE: Self = Self {
        core_instances: 32,
        memories: 4,
        tables: 8,
    };

    /// The default totals for `instances` component instances: room for every instance to be
    /// as large as an interpreter, without reserving the per-instance maximum for each.
    pub fn default_total(instances: u32) -> Self {
        let instances = instances.max(1);
        Self {
            core_instances: instances.saturating_mul(16),
            memories: instances.saturating_mul(2),
            tables: instances.saturating_mul(4),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_instances: 128,
            max_memory_bytes: 1 << 30,
            fuel: true,
            epoch_tick: Duration::from_millis(5),
            max_wasm_stack: 1 << 20,
            per_instance: PoolShare::PER_INSTANCE,
            pool_total: PoolShare::default_total(128),
        }
    }
}

impl EngineConfig {
    /// The default configuration for `max_instances` component instances.
    pub fn with_instances(max_instances: u32) -> Self {
        Self {
            max_instances,
            pool_total: PoolShare::default_total(max_instances),
            ..Self::default()
        }
    }

    /// The per-instance maxima, never above the totals (an instance cannot use more than all).
    pub fn effective_per_instance(&self) -> PoolShare {
        PoolShare {
            core_instances: self
                .per_instance
                .core_instances
                .min(self.pool_total.core_instances)
                .max(1),
            memories: self
                .per_instance
                .memories
                .min(self.pool_total.memories)
                .max(1),
            tables: self.per_instance.tables.min(self.pool_total.tables).max(1),
        }
    }
}

/// Builds the engine for `config`.
pub fn build_engine(config: &EngineConfig) -> wasmtime::Result<Engine> {
    let instances = config.max_instances.max(1);
    let per_instance = config.effective_per_instance();
    let total = config.pool_total;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_core_instances(total.core_instances.max(1))
        .max_core_instances_per_component(per_instance.core_instances)
        .total_memories(total.memories.max(1))
        .max_memories_per_component(per_instance.memories)
        .total_tables(total.tables.max(1))
        .max_tables_per_component(per_instance.tables)
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
