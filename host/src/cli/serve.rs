//! `hatchery serve` (one node: HTTP API, dispatcher and workers) and `hatchery migrate`.
//!
//! `serve` prints `listening on http://ADDR` on stdout once it accepts connections (with the
//! real port when asked for port 0); logs go to stderr through `tracing`.

use std::net::SocketAddr;

use anyhow::Context as _;

use super::CacheArgs;
use crate::api::{self, ApiConfig, AppState};
use crate::db::Db;
use crate::quota::Quotas;
use crate::runtime::{
    ArtifactKey, EgressLimits, EngineConfig, Limits, PoolShare, Runtime, RuntimeConfig,
};
use crate::scheduler::{Node, NodeConfig, RetentionConfig};
use crate::secrets::SecretBox;

/// Arguments of `hatchery serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
    /// How the node runs.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// How a node runs: every option of `hatchery serve` but the database, which `hatchery dev`
/// takes as they are (and finds a database for itself).
#[derive(Debug, Clone, clap::Args)]
pub struct NodeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "HATCHERY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Token of the admin, who creates tenants and tokens; unset disables those endpoints.
    #[arg(long, env = "HATCHERY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Token a Prometheus scraper sends to read `/metrics` (the admin token works too), so the
    /// scraper need not hold the admin's.
    #[arg(long, env = "HATCHERY_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Export traces (a span per API request, claim and task attempt, with run and task ids)
    /// to this OpenTelemetry collector over OTLP/HTTP, e.g. `http://127.0.0.1:4318`. Off when
    /// unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The OTLP encoding: `http/protobuf` or `http/json`.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: String,
    /// Task runs this node executes at once, over all modules.
    #[arg(long, env = "HATCHERY_CAPACITY", default_value_t = 64)]
    pub capacity: u32,
    /// Most of those one tenant may hold at once; default: all but an eighth of `--capacity`,
    /// kept free for the other tenants.
    #[arg(long, env = "HATCHERY_TENANT_SLOTS")]
    pub tenant_slots: Option<u32>,
    /// Threads that execute guests, apart from the API and the scheduler; default: one per
    /// core. CPU time on them is shared between tenants by weight, in 5 ms slices. 0 runs
    /// guests on the node's own threads: ~10 % more no-op tasks per second, but a busy guest
    /// then delays the API.
    #[arg(long, env = "HATCHERY_GUEST_THREADS")]
    pub guest_threads: Option<usize>,
    /// Slots of a module that does not ask for a number.
    #[arg(long, env = "HATCHERY_SLOTS", default_value_t = 32)]
    pub slots: u32,
    /// Memory limit of one task attempt, in MiB.
    #[arg(long, env = "HATCHERY_MEMORY_MIB", default_value_t = 64)]
    pub memory_mib: u64,
    /// Largest module upload, in MiB.
    #[arg(long, env = "HATCHERY_MAX_MODULE_MIB", default_value_t = 50)]
    pub max_module_mib: usize,
    /// Largest run input (with its metadata), in KiB.
    #[arg(long, env = "HATCHERY_MAX_PAYLOAD_KIB", default_value_t = 1024)]
    pub max_payload_kib: usize,
    /// Fuel (wasm instructions) one task attempt may execute before it fails with `out_of_fuel`;
    /// 0 = unlimited. The default is about a minute of busy CPU for compiled Rust; an
    /// interpreter spends ~1,200 per Python loop iteration (see docs/languages.md).
    #[arg(long, env = "HATCHERY_FUEL", default_value_t = 100_000_000_000)]
    pub fuel: u64,
    /// Most core module instances one module instance may create (Rust 3, Python 14, JavaScript 4).
    #[arg(long, env = "HATCHERY_MAX_CORE_INSTANCES_PER_MODULE", default_value_t = PoolShare::PER_INSTANCE.core_instances)]
    pub max_core_instances_per_module: u32,
    /// Most linear memories one module instance may define.
    #[arg(long, env = "HATCHERY_MAX_MEMORIES_PER_MODULE", default_value_t = PoolShare::PER_INSTANCE.memories)]
    pub max_memories_per_module: u32,
    /// Most tables one module instance may define.
    #[arg(long, env = "HATCHERY_MAX_TABLES_PER_MODULE", default_value_t = PoolShare::PER_INSTANCE.tables)]
    pub max_tables_per_module: u32,
    /// The fleet's secret (every node the same, at least 32 characters): encrypts tenants'
    /// secrets, and seals the compiled modules nodes share through the database, so only the
    /// node that takes an upload compiles it. Unset: no secrets can be stored, and every node
    /// compiles every module itself. A node refuses to start without it once secrets exist.
    #[arg(long, env = "HATCHERY_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Wall-clock limit of one outgoing HTTP request of a task, from sending to the end of the
    /// response body, in seconds.
    #[arg(long, env = "HATCHERY_EGRESS_TIMEOUT_S", default_value_t = 30)]
    pub egress_timeout_s: u64,
    /// Largest response body a task's HTTP request may read, in MiB.
    #[arg(long, env = "HATCHERY_EGRESS_MAX_RESPONSE_MIB", default_value_t = 10)]
    pub egress_max_response_mib: u64,
    /// Most HTTP requests one task attempt may make.
    #[arg(long, env = "HATCHERY_EGRESS_MAX_REQUESTS", default_value_t = 100)]
    pub egress_max_requests: u32,
    /// Days finished runs, their logs and events are kept, for tenants without a retention
    /// of their own; 0 keeps them forever (this node deletes nothing).
    #[arg(long, env = "HATCHERY_RETENTION_DAYS", default_value_t = 7)]
    pub retention_days: u32,
    /// Most unfinished (queued or running) runs a tenant may have, for tenants without a quota
    /// of their own; beyond it, starts answer 429. Unset: no limit.
    #[arg(long, env = "HATCHERY_MAX_QUEUED_RUNS")]
    pub max_queued_runs: Option<u64>,
    /// Most task runs of one tenant executing at once across the fleet, for tenants without a
    /// quota of their own. Unset: no limit (a node's `--tenant-slots` still applies).
    #[arg(long, env = "HATCHERY_MAX_EXECUTING")]
    pub max_executing: Option<u32>,
    /// Most MiB of modules a tenant may store, for tenants without a quota of their own.
    /// Unset: no limit.
    #[arg(long, env = "HATCHERY_MAX_MODULE_STORAGE_MIB")]
    pub max_module_storage_mib: Option<u64>,
    /// API requests a second one tenant may make of this node (a burst of one second's worth),
    /// for tenants without a quota of their own; beyond it, 429. Unset: no limit.
    #[arg(long, env = "HATCHERY_API_REQUESTS_PER_SECOND")]
    pub api_requests_per_second: Option<u32>,
    /// Module uploads an hour one tenant may make of this node (a burst of a tenth of that),
    /// for tenants without a quota of their own; beyond it, 429.
    #[arg(long, env = "HATCHERY_UPLOADS_PER_HOUR", default_value_t = 120)]
    pub uploads_per_hour: u32,
    /// Modules this node compiles at once (at the lowest CPU priority); default: half the
    /// cores, at least one.
    #[arg(long, env = "HATCHERY_COMPILE_CONCURRENCY")]
    pub compile_concurrency: Option<usize>,
    /// Connections of the node's database pool.
    #[arg(long, env = "HATCHERY_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Compile cache options.
    #[command(flatten)]
    pub cache: CacheArgs,
}

impl NodeArgs {
    /// Where to export traces, if anywhere.
    pub fn otlp(&self) -> Option<crate::telemetry::Otlp> {
        let endpoint = self.otlp_endpoint.clone().filter(|e| !e.is_empty())?;
        Some(crate::telemetry::Otlp {
            endpoint,
            protocol: self.otlp_protocol.clone(),
        })
    }

    /// The quotas of tenants without their own.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            max_queued_runs: self.max_queued_runs,
            max_executing: self.max_executing,
            max_module_bytes: self
                .max_module_storage_mib
                .map(|mib| mib.saturating_mul(1 << 20)),
            api_requests_per_second: self.api_requests_per_second.filter(|rate| *rate > 0),
            uploads_per_hour: Some(self.uploads_per_hour),
        }
    }

    /// The engine for this node: room for every slot plus parents waiting on their children,
    /// and a pool whose totals hold that many interpreter-sized instances.
    pub fn engine_config(&self) -> EngineConfig {
        let max_instances = self.capacity.saturating_mul(2).max(16);
        let per_instance = PoolShare {
            core_instances: self.max_core_instances_per_module.max(1),
            memories: self.max_memories_per_module.max(1),
            tables: self.max_tables_per_module.max(1),
        };
        let defaults = PoolShare::default_total(max_instances);
        EngineConfig {
            per_instance,
            pool_total: PoolShare {
                core_instances: defaults.core_instances.max(per_instance.core_instances),
                memories: defaults.memories.max(per_instance.memories),
                tables: defaults.tables.max(per_instance.tables),
            },
            ..EngineConfig::with_instances(max_instances)
        }
    }
}

/// Arguments of `hatchery migrate`.
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,
}

/// Applies the migrations this binary embeds.
pub async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let db = Db::connect(&args.database_url, 2)
        .await
        .context("cannot connect to the database")?;
    db.migrate()
        .await
        .context("applying the migrations failed")?;
    println!("migrations applied");
    Ok(())
}

/// Runs one node until SIGTERM or ctrl-c, then shuts down gracefully: the server stops
/// accepting and finishes its requests, the node lets attempts finish or hands them back.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let server = Server::start(&args.database_url, &args.node).await?;
    println!("listening on http://{}", server.addr());
    server.run().await
}

/// A node that is migrated, started and bound to its address, but does not serve HTTP yet.
/// `hatchery serve` and `hatchery dev` both start one and then `run` it.
pub struct Server {
    db: Db,
    runtime: Runtime,
    node: Node,
    state: AppState,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
}

impl Server {
    /// Connects to the database, applies the migrations, starts the node (dispatcher and
    /// workers) and binds the listen address.
    pub async fn start(database_url: &str, args: &NodeArgs) -> anyhow::Result<Self> {
        let db = Db::connect(database_url, args.db_connections.max(2))
            .await
            .context("cannot connect to the database")?
            .with_quotas(args.quotas());
        db.migrate()
            .await
            .context("applying the migrations failed")?;
        let secret = args.secret_key.as_deref().filter(|key| !key.is_empty());
        if let Some(secret) = secret
            && secret.chars().count() < 32
        {
            anyhow::bail!(
                "HATCHERY_SECRET_KEY must be at least 32 characters (e.g. `openssl rand -hex 32`)"
            );
        }
        if secret.is_none() {
            let mut conn = db.pool.acquire().await?;
            if crate::db::secret::secrets_exist(&mut conn).await? {
                anyhow::bail!(
                    "tenants have stored secrets, but HATCHERY_SECRET_KEY is not set: start the \
                     node with the key the secrets were stored under (`--secret-key`), or its \
                     tasks could not read them"
                );
            }
            tracing::info!(
                "HATCHERY_SECRET_KEY is not set: this node compiles every module itself rather than loading what another node compiled"
            );
        }
        // Installed before anything records, so nothing is lost before the first scrape.
        crate::metrics::handle();
        let runtime = Runtime::new(RuntimeConfig {
            engine: args.engine_config(),
            cache_dir: args.cache.dir(),
            artifact_key: secret.map(ArtifactKey::derive),
            egress_limits: EgressLimits {
                request_timeout: std::time::Duration::from_secs(args.egress_timeout_s.max(1)),
                max_response_bytes: args.egress_max_response_mib.max(1) << 20,
                max_requests: args.egress_max_requests,
            },
            guest_threads: args
                .guest_threads
                .unwrap_or_else(crate::runtime::default_guest_threads),
            compile_concurrency: args
                .compile_concurrency
                .unwrap_or_else(crate::runtime::default_compile_concurrency),
            ..RuntimeConfig::default()
        })?;
        let node = Node::start(
            db.clone(),
            runtime.clone(),
            NodeConfig {
                capacity: args.capacity.max(1),
                tenant_slots: args.tenant_slots,
                default_slots: args.slots.max(1),
                limits: Limits {
                    memory_bytes: args.memory_mib << 20,
                    fuel: (args.fuel > 0).then_some(args.fuel),
                    ..Limits::default()
                },
                secrets: secret.map(SecretBox::derive),
                retention: (args.retention_days > 0).then(|| RetentionConfig {
                    default_retention: std::time::Duration::from_secs(
                        u64::from(args.retention_days.min(3_650)) * 86_400,
                    ),
                    ..RetentionConfig::default()
                }),
                ..NodeConfig::default()
            },
        )
        .await
        .context("cannot start the node")?;
        let config = ApiConfig {
            admin_token: args.admin_token.clone().filter(|token| !token.is_empty()),
            metrics_token: args.metrics_token.clone().filter(|token| !token.is_empty()),
            max_module_bytes: args.max_module_mib << 20,
            max_payload_bytes: args.max_payload_kib << 10,
            secrets: secret.map(SecretBox::derive),
            ..ApiConfig::default()
        };
        if config.admin_token.is_none() {
            tracing::warn!("HATCHERY_ADMIN_TOKEN is not set: tenants and tokens cannot be created");
        }
        let state = AppState::new(db.clone(), runtime.clone(), Some(node.handle()), config);
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        Ok(Self {
            db,
            runtime,
            node,
            state,
            listener,
            addr,
        })
    }

    /// The address the node listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node's database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The node's runtime (validates and loads modules).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Serves HTTP until SIGTERM or ctrl-c, then drains: the server finishes its requests and
    /// the node lets attempts finish or hands them back.
    pub async fn run(self) -> anyhow::Result<()> {
        tracing::info!(addr = %self.addr, node_id = %self.node.id(), "node serving");
        let served = axum::serve(self.listener, api::router(self.state))
            .with_graceful_shutdown(shutdown_signal())
            .await;
        tracing::info!("shutting down: letting attempts finish");
        self.node.shutdown().await;
        served.context("the HTTP server failed")
    }
}

/// Resolves on SIGTERM or ctrl-c.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    // A second signal while draining stops at once.
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}
