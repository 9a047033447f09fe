//! Per-attempt resource limits and the limiter that enforces memory, instances and tables.
//!
//! The limiter remembers a refused `memory.grow`: a Rust guest whose allocation fails aborts
//! with a plain `unreachable` trap, and only this record lets the host say "memory limit".

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Hard limits of one task attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of linear memory the guest may use (all its memories together).
    pub memory_bytes: u64,
    /// Instructions (fuel units) the attempt may execute; `None` = unlimited.
    pub fuel: Option<u64>,
    /// Wall-clock time the attempt may take.
    pub timeout: Duration,
    /// Largest JSON output accepted from the guest.
    pub max_output_bytes: usize,
    /// Most bytes of log lines (stdout, stderr, `log`) kept per attempt; the rest is dropped.
    pub max_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            // About a minute of busy CPU on this class of machine.
            fuel: Some(100_000_000_000),
            timeout: Duration::from_secs(60),
            max_output_bytes: 1 << 20,
            max_log_bytes: 256 << 10,
        }
    }
}

const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Enforces `Limits::memory_bytes` across all of a store's memories and records refusals.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    /// Bytes currently reserved by the store's memories.
    used: usize,
    /// The size a refused `memory.grow` asked for, if any was refused.
    refused: Option<usize>,
    /// Most core instances, memories and tables the store may create (the pool's per-instance
    /// maxima).
    instances: usize,
    memories: usize,
    tables: usize,
}

impl MemoryLimiter {
    /// A limiter allowing `limit` bytes of linear memory.
    pub fn new(limit: u64) -> Self {
        Self {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            refused: None,
            instances: 32,
            memories: 4,
            tables: 8,
        }
    }

    /// The same limiter allowing at most these counts of core instances, memories and tables.
    pub fn with_counts(self, instances: u32, memories: u32, tables: u32) -> Self {
        Self {
            instances: instances as usize,
            memories: memories as usize,
            tables: tables as usize,
            ..self
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes of linear memory the store's memories hold now.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The size a refused growth asked for, if the guest ever hit the limit.
    pub fn refused(&self) -> Option<usize> {
        self.refused
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = desired.saturating_sub(current);
        let total = self.used.saturating_add(growth);
        if total > self.limit || maximum.is_some_and(|max| desired > max) {
            self.refused = Some(total);
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_past_the_limit_is_refused_and_remembered() {
        let mut limiter = MemoryLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 512 << 10, None).expect("ok"));
        assert!(
            limiter
                .memory_growing(512 << 10, 1 << 20, None)
                .expect("ok")
        );
        assert_eq!(limiter.refused(), None);
        assert!(
            !limiter
                .memory_growing(1 << 20, (1 << 20) + 65_536, None)
                .expect("ok")
        );
        assert_eq!(limiter.refused(), Some((1 << 20) + 65_536));
    }

    #[test]
    fn the_limit_covers_all_memories_together() {
        let mut limiter = MemoryLimiter::new(1 << 20);
        assert!(limiter.memory_growing(0, 768 << 10, None).expect("ok"));
        assert!(!limiter.memory_growing(0, 512 << 10, None).expect("ok"));
    }
}
