//! `GET /console`: the marketers' console. Plain HTML, CSS and one small
//! script, compiled into the binary (nothing is fetched from elsewhere at run
//! time). The pages hold no data: the script reads the same APIs as every
//! other caller, with the caller's key (kept in the browser session, sent as
//! `Authorization: Bearer`, never in a URL).

use actix_web::HttpResponse;

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        // The page runs only its own script and style, and talks only to
        // this server.
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        ))
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

/// `GET /console`: the page; the script routes by the URL fragment
/// (`#/experiments`, `#/experiment/{id}`).
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    responses((status = 200, description = "the console's page (HTML; open: it holds no data, its script reads the APIs with the caller's key)", content_type = "text/html", body = String)),
)]
pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /console/console.js`.
#[utoipa::path(
    get,
    path = "/console/console.js",
    tag = "console",
    responses((status = 200, description = "the console's script", content_type = "text/javascript", body = String)),
)]
pub async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console/console.css`.
#[utoipa::path(
    get,
    path = "/console/console.css",
    tag = "console",
    responses((status = 200, description = "the console's style", content_type = "text/css", body = String)),
)]
pub async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE)
}
