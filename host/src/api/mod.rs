//! The HTTP API (axum): JSON under `/api/v1`, a bearer token per tenant, one file per resource;
//! the web dashboard at `/` over the same API.
//!
//! Handlers only translate between HTTP and the library: every decision lives in `scheduler`,
//! every statement in `db`. Bad input is a 4xx that says what to fix; it never reaches a worker.

mod auth;
mod crons;
mod dashboard;
mod egress;
mod error;
mod events;
mod extract;
mod health;
mod metrics;
mod modules;
mod openapi;
mod page;
mod quotas;
mod rate_limits;
mod runs;
mod secrets;
mod tenants;
mod usage;
mod workers;
mod workflows;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use auth::{Admin, Scraper, Tenant, hash_token, new_token};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use openapi::ApiDoc;

/// The request and response types of `/api/v1`, as the handlers read and write them and the
/// OpenAPI document describes them: the CLI and the tests speak the API through them.
pub mod types {
    pub use super::crons::{CreateCron, Cron, CronList};
    pub use super::egress::{Ceiling, Egress};
    pub use super::events::{Event, EventFilter, EventPage, Pushed, PushedList};
    pub use super::health::Health;
    pub use super::modules::{Deployed, Module, ModulePage};
    pub use super::quotas::{OwnQuotas, QuotaUse, QuotasView};
    pub use super::rate_limits::{RateLimit, RateLimitList, SetRateLimit};
    pub use super::runs::{
        LogLine, LogPage, RescheduleBody, Run, RunAccepted, RunBody, RunDetail, RunPage,
        RunsAccepted, TaskRun, Trigger, Waiting,
    };
    pub use super::secrets::{Secret, SecretList, SetSecret};
    pub use super::tenants::{
        CreateTenant, CreateToken, RetentionSet, TenantCreated, TenantSettings, TokenCreated,
        WeightSet,
    };
    pub use super::usage::{UsageReport, UsageTotals};
    pub use super::workers::{Worker, WorkerList};
    pub use super::workflows::{
        SetFuel, TaskFuel, Workflow, WorkflowDetail, WorkflowPage, WorkflowVersionSummary,
    };
    pub use crate::db::usage::UsageRow;
    pub use crate::manifest::RateLimitDuration;
    pub use crate::quota::Quotas;
    pub use crate::scheduler::events::EventRequest;
}

use crate::db::Db;
use crate::runtime::Runtime;
use crate::scheduler::NodeHandle;
use crate::scheduler::runs::RunStarter;

/// Limits and secrets of the API.
#[derive(Clone)]
pub struct ApiConfig {
    /// The admin token (creates tenants and tokens); `None` disables the admin endpoints.
    pub admin_token: Option<String>,
    /// A token that may read `/metrics` and nothing else (the admin token may too).
    pub metrics_token: Option<String>,
    /// Largest module upload.
    pub max_module_bytes: usize,
    /// Largest run input (with its metadata), as JSON text.
    pub max_payload_bytes: usize,
    /// Largest body of a bulk start.
    pub max_bulk_bytes: usize,
    /// Most runs in one bulk start.
    pub max_bulk_runs: usize,
    /// Longest `?wait=` of a run start.
    pub max_wait: Duration,
    /// How long a verified token is trusted without asking the database again (revocations
    /// on another node take at most this long to apply; on this node they apply at once).
    pub token_cache_ttl: Duration,
    /// Seals secrets stored through the API; `None`: secrets cannot be stored here.
    pub secrets: Option<crate::secrets::SecretBox>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .field("max_module_bytes", &self.max_module_bytes)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .field("max_bulk_bytes", &self.max_bulk_bytes)
            .field("max_bulk_runs", &self.max_bulk_runs)
            .field("max_wait", &self.max_wait)
            .field("token_cache_ttl", &self.token_cache_ttl)
            .finish()
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            metrics_token: None,
            max_module_bytes: 50 << 20,
            max_payload_bytes: 1 << 20,
            max_bulk_bytes: 32 << 20,
            max_bulk_runs: 1_000,
            max_wait: Duration::from_secs(60),
            token_cache_ttl: Duration::from_secs(5),
            secrets: None,
        }
    }
}

/// What every handler can reach. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// The node's runtime (validates uploads).
    pub runtime: Runtime,
    /// The node serving runs in this process, if any (worker stats, fast run waits).
    pub node: Option<NodeHandle>,
    /// Limits and secrets.
    pub config: Arc<ApiConfig>,
    /// Starts single runs with shared commits.
    pub starter: RunStarter,
    tokens: Arc<auth::TokenCache>,
    quota_cache: Arc<quotas::QuotaCache>,
    request_buckets: Arc<crate::quota::Buckets>,
    upload_buckets: Arc<crate::quota::Buckets>,
}

impl AppState {
    /// State over `db` and `runtime`, with the local `node` if there is one.
    pub fn new(db: Db, runtime: Runtime, node: Option<NodeHandle>, config: ApiConfig) -> Self {
        Self {
            starter: RunStarter::new(db.clone()),
            db,
            runtime,
            node,
            config: Arc::new(config),
            tokens: Arc::default(),
            quota_cache: Arc::default(),
            request_buckets: Arc::default(),
            upload_buckets: Arc::default(),
        }
    }
}

/// Slack over the payload limit for the rest of a single-run request body.
const BODY_SLACK: usize = 64 << 10;

/// The API's routes over `state`.
pub fn router(state: AppState) -> Router {
    let config = state.config.clone();
    let module_limit = DefaultBodyLimit::max(config.max_module_bytes);
    let bulk_limit = DefaultBodyLimit::max(config.max_bulk_bytes);
    Router::new()
        .route("/", get(dashboard::index))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/tenants", post(tenants::create_tenant))
        .route("/api/v1/tenants/{id}/tokens", post(tenants::create_token))
        .route("/api/v1/tenants/{id}", get(tenants::get_tenant))
        .route("/api/v1/tenants/{id}/weight", put(tenants::set_weight))
        .route(
            "/api/v1/tenants/{id}/quotas",
            get(quotas::get_quotas).put(quotas::set_quotas),
        )
        .route("/api/v1/quotas", get(quotas::own_quotas))
        .route(
            "/api/v1/tenants/{id}/retention",
            put(tenants::set_retention),
        )
        .route("/api/v1/tenants/{id}/usage", get(usage::of_tenant))
        .route("/api/v1/tokens/{id}", delete(tenants::revoke_token))
        .route(
            "/api/v1/modules",
            get(modules::list_modules)
                .post(modules::deploy)
                .layer(module_limit),
        )
        .route("/api/v1/workflows", get(workflows::list_workflows))
        .route("/api/v1/workflows/{name}", get(workflows::get_workflow))
        .route(
            "/api/v1/workflows/{name}/tasks/{task}/fuel",
            put(workflows::set_task_fuel),
        )
        .route("/api/v1/workflows/{name}/runs", post(runs::start))
        .route(
            "/api/v1/workflows/{name}/runs/bulk",
            post(runs::start_bulk).layer(bulk_limit),
        )
        .route("/api/v1/runs", get(runs::list))
        .route("/api/v1/runs/{id}", get(runs::get))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{id}/replay", post(runs::replay))
        .route("/api/v1/runs/{id}/reschedule", post(runs::reschedule))
        .route("/api/v1/runs/{id}/logs", get(runs::logs))
        .route("/api/v1/runs/{id}/children", get(runs::children))
        .route("/api/v1/workers", get(workers::list_workers))
        .route("/api/v1/usage", get(usage::own))
        .route("/api/v1/workflows/{name}/crons", post(crons::create))
        .route(
            "/api/v1/workflows/{name}/event-filters",
            post(events::create_filter),
        )
        .route("/api/v1/events", get(events::list).post(events::push))
        .route(
            "/api/v1/events/bulk",
            post(events::push_bulk).layer(DefaultBodyLimit::max(config.max_bulk_bytes)),
        )
        .route("/api/v1/events/{id}", get(events::get))
        .route("/api/v1/crons", get(crons::list))
        .route("/api/v1/crons/{id}", delete(crons::delete))
        .route("/api/v1/rate-limits", get(rate_limits::list))
        .route("/api/v1/tenants/{id}/egress", put(egress::set_ceiling))
        .route("/api/v1/secrets", get(secrets::list))
        .route(
            "/api/v1/secrets/{name}",
            put(secrets::set).delete(secrets::delete),
        )
        .route("/api/v1/egress", get(egress::get).put(egress::set_allow))
        .route("/api/v1/rate-limits/{key}", put(rate_limits::set))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_payload_bytes + BODY_SLACK))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .with_state(state)
}

/// The span of one request, named for traces by method and path (`otel.name`); the path is
/// the request's own, so ids in it stay in the span, not in metric labels.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    tracing::info_span!(
        "request",
        otel.name = format!("{} {}", request.method(), request.uri().path()),
        otel.kind = "server",
        http.request.method = %request.method(),
        url.path = request.uri().path(),
    )
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint `{}`", uri.path()))
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("`{}` does not accept {method}", uri.path()),
    )
}
