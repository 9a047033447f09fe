//! What the benchmarks share: scratch databases on the server under test, the runtime they
//! run on, percentiles.

use hatchery::runtime::{EngineConfig, Runtime, RuntimeConfig};
use sqlx::PgConnection;

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{database}"),
        None => format!("{url}/{database}"),
    }
}

/// Drops `database` if it exists (disconnecting its sessions) and creates it empty.
pub async fn recreate(admin: &mut PgConnection, database: &str) -> anyhow::Result<()> {
    drop_database(admin, database).await?;
    sqlx::query(&format!("CREATE DATABASE {database}"))
        .execute(&mut *admin)
        .await?;
    Ok(())
}

/// Drops `database` if it exists, disconnecting its sessions.
pub async fn drop_database(admin: &mut PgConnection, database: &str) -> anyhow::Result<()> {
    sqlx::query(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&mut *admin)
        .await?;
    Ok(())
}

/// The runtime every benchmark node runs on.
pub fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig {
        engine: EngineConfig::with_instances(64),
        ..RuntimeConfig::default()
    })?)
}

/// The `p` quantile (0..=1) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    // Empty (no samples asked for): NaN, which the tables print as such.
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    sorted
        .get(((last as f64) * p).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}
