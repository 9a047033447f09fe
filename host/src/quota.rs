//! Quotas per tenant: what each may hold and how fast it may ask (docs/tenancy.md). The
//! limits themselves, their defaults, and the token buckets that pace API requests and uploads;
//! the database enforces the rest (`db::quota`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::db::quota::TenantQuotasRow;

/// A tenant's quotas. `None` is no limit.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
pub struct Quotas {
    /// Most workflow runs not finished (queued or running) at once; starts beyond it answer
    /// 429. Runs scheduled for later count from when they are due.
    pub max_queued_runs: Option<u64>,
    /// Most task runs executing at once across the fleet (claimed and not yet completed).
    pub max_executing: Option<u32>,
    /// Most bytes of modules stored.
    pub max_module_bytes: Option<u64>,
    /// API requests per second (a burst of one second's worth).
    pub api_requests_per_second: Option<u32>,
    /// Module uploads per hour (a burst of a tenth of an hour's worth, at least one).
    pub uploads_per_hour: Option<u32>,
}

impl Quotas {
    /// The quotas in force for a tenant whose own settings are `own`, over these defaults.
    pub fn over(&self, own: &TenantQuotasRow) -> Self {
        fn pick<T: TryFrom<i64>>(own: Option<i64>, default: Option<T>) -> Option<T> {
            match own {
                Some(value) => T::try_from(value).ok(),
                None => default,
            }
        }
        Self {
            max_queued_runs: pick(own.max_queued_runs, self.max_queued_runs),
            max_executing: pick(own.max_executing.map(i64::from), self.max_executing),
            max_module_bytes: pick(own.max_module_bytes, self.max_module_bytes),
            api_requests_per_second: pick(
                own.api_requests_per_second.map(i64::from),
                self.api_requests_per_second,
            ),
            uploads_per_hour: pick(own.uploads_per_hour.map(i64::from), self.uploads_per_hour),
        }
    }
}

/// Why a tenant's request was refused by a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    /// Starting these runs would leave more unfinished runs than allowed.
    #[error(
        "the tenant has {unfinished} unfinished runs and may have at most {max}: \
         {asked} more would exceed its quota (max_queued_runs)"
    )]
    QueuedRuns {
        /// The quota.
        max: u64,
        /// Unfinished runs now.
        unfinished: u64,
        /// Runs asked for.
        asked: u64,
    },
    /// Too many requests in the last second.
    #[error("more than {per_second} API requests a second (api_requests_per_second)")]
    ApiRate {
        /// The quota.
        per_second: u32,
        /// When a request would be accepted again.
        retry_after: Duration,
    },
    /// Too many uploads in the last hour.
    #[error("more than {per_hour} module uploads an hour (uploads_per_hour)")]
    Uploads {
        /// The quota.
        per_hour: u32,
        /// When an upload would be accepted again.
        retry_after: Duration,
    },
    /// The module would take the tenant's stored modules past its quota.
    #[error(
        "the tenant's modules take {stored} bytes and may take at most {max}: this one \
         ({size} bytes) would exceed its quota (max_module_bytes)"
    )]
    ModuleBytes {
        /// The quota.
        max: u64,
        /// Bytes stored now.
        stored: u64,
        /// This module's size.
        size: u64,
    },
}

impl QuotaExceeded {
    /// How long a client should wait before asking again (`Retry-After`), when waiting helps.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            // Room comes back as runs finish, which the caller cannot see coming.
            Self::QueuedRuns { .. } => Some(Duration::from_secs(1)),
            Self::ApiRate { retry_after, .. } | Self::Uploads { retry_after, .. } => {
                Some(*retry_after)
            }
            Self::ModuleBytes { .. } => None,
        }
    }
}

/// One token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per tenant, in this process: requests pace per node, which is where they
/// arrive (a fleet of n nodes behind a balancer admits up to n times the rate).
#[derive(Debug, Default)]
pub struct Buckets(Mutex<HashMap<Uuid, Bucket>>);

/// Most tenants whose buckets are kept; full buckets are forgotten past it.
const MAX_BUCKETS: usize = 100_000;

impl Buckets {
    /// Takes a token of `tenant`'s bucket (`rate` a second, `burst` at most), or says how long
    /// until one is there.
    pub fn take(&self, tenant: Uuid, rate: f64, burst: f64) -> Result<(), Duration> {
        self.take_at(tenant, rate, burst, Instant::now())
    }

    fn take_at(&self, tenant: Uuid, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&tenant) {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let bucket = buckets.entry(tenant).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate() {
        let buckets = Buckets::default();
        let tenant = Uuid::from_u128(7);
        let start = Instant::now();
        for _ in 0..5 {
            assert!(buckets.take_at(tenant, 5.0, 5.0, start).is_ok());
        }
        let wait = buckets
            .take_at(tenant, 5.0, 5.0, start)
            .expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(200));
        // Another tenant has its own bucket.
        assert!(buckets.take_at(Uuid::from_u128(8), 5.0, 5.0, start).is_ok());
        let later = start + Duration::from_millis(200);
        assert!(buckets.take_at(tenant, 5.0, 5.0, later).is_ok());
        assert!(buckets.take_at(tenant, 5.0, 5.0, later).is_err());
        // Never more than the burst saved up.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(buckets.take_at(tenant, 5.0, 5.0, much_later).is_ok());
        }
        assert!(buckets.take_at(tenant, 5.0, 5.0, much_later).is_err());
    }

    #[test]
    fn a_tenants_own_quota_wins_over_the_default() {
        let defaults = Quotas {
            max_queued_runs: Some(100),
            max_executing: Some(4),
            ..Quotas::default()
        };
        let own = TenantQuotasRow {
            max_queued_runs: Some(0),
            max_executing: None,
            max_module_bytes: Some(1 << 20),
            api_requests_per_second: None,
            uploads_per_hour: None,
        };
        let quotas = defaults.over(&own);
        assert_eq!(quotas.max_queued_runs, Some(0));
        assert_eq!(quotas.max_executing, Some(4));
        assert_eq!(quotas.max_module_bytes, Some(1 << 20));
        assert_eq!(quotas.api_requests_per_second, None);
    }
}
