//! The OpenAPI 3.1 document of the API, derived (utoipa) from the handlers' own request and
//! response types, served at `GET /api/v1/openapi.json`.
//!
//! Every operation lists its own successes and particular failures; the failures any operation
//! can answer (bad input, a missing token, an unknown id, an oversize body, a quota, an
//! unavailable database) are added to each here, so that no documented operation can answer a
//! status the document does not name.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::error::ErrorBody;
use super::{
    crons, egress, events, health, metrics, modules, quotas, rate_limits, runs, secrets, tenants,
    usage, workers, workflows,
};

/// The document's source: every endpoint of the router.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Hatchery",
        description = "Run WebAssembly tasks: deploy modules, start runs, watch them. Every \
                       `/api/v1` call but `openapi.json` takes `Authorization: Bearer <token>`: a \
                       tenant's token, or the admin's for `/api/v1/tenants/...` and `/api/v1/tokens/...`."
    ),
    paths(
        health::healthz,
        health::readyz,
        metrics::metrics,
        tenants::create_tenant,
        tenants::create_token,
        tenants::get_tenant,
        tenants::set_weight,
        tenants::set_retention,
        tenants::revoke_token,
        quotas::get_quotas,
        quotas::set_quotas,
        quotas::own_quotas,
        usage::own,
        usage::of_tenant,
        modules::deploy,
        modules::list_modules,
        workflows::list_workflows,
        workflows::get_workflow,
        workflows::set_task_fuel,
        runs::start,
        runs::start_bulk,
        runs::list,
        runs::get,
        runs::cancel,
        runs::replay,
        runs::reschedule,
        runs::logs,
        runs::children,
        workers::list_workers,
        crons::create,
        crons::list,
        crons::delete,
        events::push,
        events::push_bulk,
        events::list,
        events::get,
        events::create_filter,
        rate_limits::list,
        rate_limits::set,
        egress::set_ceiling,
        egress::set_allow,
        egress::get,
        secrets::list,
        secrets::set,
        secrets::delete,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Security, &CommonErrors)
)]
pub struct ApiDoc;

/// The bearer schemes the operations name.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                "tenant_token",
                "A tenant's token: the tenant it names owns what the call touches.",
            ),
            (
                "admin_token",
                "The node's admin token (HATCHERY_ADMIN_TOKEN).",
            ),
            (
                "metrics_token",
                "The node's metrics token (HATCHERY_METRICS_TOKEN).",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
    }
}

/// Adds the failures every operation can answer.
struct CommonErrors;

/// (status, meaning) of the failures any operation may answer.
const COMMON: [(&str, &str); 7] = [
    (
        "400",
        "The request is malformed: the message says what to fix",
    ),
    ("401", "The token is missing or invalid"),
    ("404", "No such object for this tenant, or no such endpoint"),
    ("405", "The path does not accept this method"),
    ("413", "The body or its input is too large"),
    (
        "429",
        "A quota or rate was reached: retry after `Retry-After` seconds",
    ),
    ("503", "The database is unavailable: retry later"),
];

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut Document) {
        let error = || {
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build()
        };
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                for (status, description) in COMMON {
                    operation
                        .responses
                        .responses
                        .entry(status.to_owned())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content("application/json", error())
                                    .build(),
                            )
                        });
                }
            }
        }
    }
}

/// `GET /api/v1/openapi.json`: the document (no token needed).
pub async fn document() -> Json<Document> {
    Json(ApiDoc::openapi())
}
