//! `GET /openapi.json`: the OpenAPI 3.1 description, generated from the
//! handlers' `#[utoipa::path]` attributes and the wire types' `ToSchema`
//! derives, so it cannot drift from the code silently (tests/api/openapi.rs
//! checks it against the registered routes).

use std::sync::OnceLock;

use actix_web::HttpResponse;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::Problem;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "offer-engine",
        description = "Real-time next-best-offer engine for airline loyalty programmes. \
                       Every error is an RFC 9457 application/problem+json document."
    ),
    paths(
        super::offers::post_offers,
        super::offers::offer_stats,
        super::offers::offers_plot,
        super::events::post_events,
        super::members::post_members,
        super::members::get_member,
        super::members::put_member,
        super::members::delete_member,
        super::members::post_member_events,
        super::campaigns::post_campaigns,
        super::campaigns::runs,
        super::experiments::list,
        super::experiments::report,
        super::experiments::timeseries,
        super::experiments::forest_plot,
        super::experiments::timeseries_plot,
        super::console::index,
        super::console::script,
        super::console::style,
        super::health::healthz,
        super::health::readyz,
        super::health::metrics,
        super::admin::reload,
        super::admin::snapshot,
        super::admin::keys,
        super::admin::state,
        openapi_json,
    ),
    components(schemas(Problem, super::error::ProblemField)),
    modifiers(&CommonResponses),
)]
pub struct ApiDoc;

/// Adds what every route shares rather than repeating it on each handler:
/// the bearer scheme on `/v1/*`, and the problem responses the middleware and
/// router give (auth 401/403, rate limit 429, overload 503, unknown route 404,
/// wrong method 405).
struct CommonResponses;

fn problem(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            Content::new(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                Problem::name(),
            )))),
        )
        .into()
}

impl Modify for CommonResponses {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("API key: `Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
        for (path, item) in api.paths.paths.iter_mut() {
            let v1 = path.starts_with("/v1/");
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                let mut add = |code: &str, description: &str| {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| problem(description));
                };
                add("404", "no such route");
                add("405", "the route does not take this method");
                if v1 {
                    add("401", "missing or unknown API key");
                    add("403", "the API key may not do this");
                    add("429", "rate limit exceeded; see Retry-After");
                    add(
                        "503",
                        "overloaded or the event log is unavailable; see Retry-After",
                    );
                    op.security = Some(vec![SecurityRequirement::new(
                        "bearer",
                        Vec::<String>::new(),
                    )]);
                }
            }
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "this document", body = serde_json::Value)),
)]
pub async fn openapi_json() -> HttpResponse {
    // Generated once: the description is fixed for the life of the binary.
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|_| String::from("{}"))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .body(body.as_str())
}
