//! Where the instances of calls live.
//!
//! Every call instantiates its plugin afresh, so the cost of allocating an
//! instance is paid on every call. The engine therefore keeps a pool of
//! slots reserved once (memories, tables, instance data, async stacks): a
//! call takes a ready slot instead of mapping and unmapping its own, and
//! gives it back when its store is dropped.
//!
//! The pool holds [`CALL_SLOTS`] calls at once; a call beyond that waits for
//! a free slot rather than failing. Each call may use at most
//! [`CORE_INSTANCES_PER_CALL`] core instances, [`MEMORIES_PER_CALL`]
//! memories and [`TABLES_PER_CALL`] tables, the same numbers the per-call
//! limiter enforces, and a memory slot holds the largest memory cap a
//! plugin may ask for. Where the address space cannot be reserved (a low
//! `ulimit -v`), the engine allocates instances on demand instead: slower,
//! with the same limits.

use ingot_api::plugins::MAX_MEMORY_MEBIBYTES;
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::limits::Limits;

/// Calls that hold an instance at the same time.
pub const CALL_SLOTS: u32 = 64;

/// Core instances one call's component may create.
pub const CORE_INSTANCES_PER_CALL: u32 = 10;

/// Linear memories one call's component may create.
pub const MEMORIES_PER_CALL: u32 = 4;

/// Tables one call's component may create.
pub const TABLES_PER_CALL: u32 = 10;

/// The largest memory cap of a plugin, in bytes: the `WasmPlugin` API's
/// maximum, which every memory slot of the pool can hold.
pub const MAX_MEMORY_BYTES: u64 = MAX_MEMORY_MEBIBYTES << 20;

/// The engine every plugin runs on: epoch interruption, and pooled instances
/// when the pool's address space can be reserved.
pub(crate) fn engine() -> wasmtime::Result<Engine> {
    match Engine::new(&engine_config(Some(pool()))) {
        Ok(engine) => Ok(engine),
        Err(error) => {
            tracing::warn!(error = %error, "cannot reserve the plugin instance pool; instances are allocated on demand");
            Engine::new(&engine_config(None))
        }
    }
}

fn engine_config(pool: Option<PoolingAllocationConfig>) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true);
    if let Some(pool) = pool {
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

fn pool() -> PoolingAllocationConfig {
    // A returned slot's memory goes back to the kernel (the default): clearing
    // the megabyte a call touches in place instead made the call cycle slower
    // (57-59 us against 47.5 us), more than the page faults it saves.
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(CALL_SLOTS)
        .total_core_instances(CALL_SLOTS * CORE_INSTANCES_PER_CALL)
        .total_memories(CALL_SLOTS * MEMORIES_PER_CALL)
        .total_tables(CALL_SLOTS * TABLES_PER_CALL)
        .total_stacks(CALL_SLOTS)
        .max_core_instances_per_component(CORE_INSTANCES_PER_CALL)
        .max_memories_per_component(MEMORIES_PER_CALL)
        .max_tables_per_component(TABLES_PER_CALL)
        .max_memory_size(usize::try_from(MAX_MEMORY_BYTES).unwrap_or(usize::MAX))
        .table_elements(Limits::default().table_elements);
    pool
}

/// A limit larger than a pool slot holds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {what} cap of {asked} is above the most this host gives one call, {most}")]
pub struct LimitTooLarge {
    /// The limit.
    pub what: &'static str,
    /// What the plugin's limits ask for.
    pub asked: u64,
    /// The most a call can get.
    pub most: u64,
}

/// Checks that a pool slot can hold what `limits` allow a call.
pub(crate) fn check(limits: &Limits) -> Result<(), LimitTooLarge> {
    if limits.memory_bytes > MAX_MEMORY_BYTES {
        return Err(LimitTooLarge {
            what: "memory bytes",
            asked: limits.memory_bytes,
            most: MAX_MEMORY_BYTES,
        });
    }

    let most_elements = Limits::default().table_elements;
    if limits.table_elements > most_elements {
        return Err(LimitTooLarge {
            what: "table elements",
            asked: u64::try_from(limits.table_elements).unwrap_or(u64::MAX),
            most: u64::try_from(most_elements).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

/// The call slots: one permit per call holding an instance.
pub(crate) struct CallSlots(Semaphore);

impl CallSlots {
    pub(crate) fn new() -> Self {
        Self(Semaphore::new(CALL_SLOTS as usize))
    }

    /// Waits for a free slot; the call keeps it until the permit is dropped,
    /// after its store. The semaphore is never closed, so there is always a
    /// permit in the end.
    pub(crate) async fn take(&self) -> Option<SemaphorePermit<'_>> {
        self.0.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_a_slot_cannot_hold_are_refused_by_name() {
        let mut limits = Limits::default();
        assert_eq!(check(&limits), Ok(()));

        limits.memory_bytes = MAX_MEMORY_BYTES + 1;
        assert_eq!(
            check(&limits).map_err(|error| error.what),
            Err("memory bytes")
        );

        limits.memory_bytes = MAX_MEMORY_BYTES;
        limits.table_elements += 1;
        assert_eq!(
            check(&limits).map_err(|error| error.what),
            Err("table elements")
        );
    }

    #[test]
    fn wasmtime_accepts_the_pool_configuration() {
        assert!(Engine::new(&engine_config(Some(pool()))).is_ok());
    }
}
