//! The `Idempotency-Key` header on `POST /v1/offers` and `POST /v1/events`:
//! the HTTP side of [`crate::service::idempotency`]. A request without the
//! header runs as before; with it, the answer is kept and a retry gets it
//! again (with `Idempotent-Replayed: true`).

use std::future::Future;

use actix_web::http::header::{HeaderName, HeaderValue, ACCEPT_LANGUAGE};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError};

use super::error::ApiError;
use crate::service::idempotency::{check_key, fingerprint, Answer, Outcome, Route, Scope};
use crate::service::SharedState;

/// The header.
pub const HEADER: &str = "Idempotency-Key";

/// Set on a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// The caller's API key id, set by the access-control middleware.
#[derive(Debug, Clone)]
pub struct Caller(pub Box<str>);

/// Runs `run` under the request's `Idempotency-Key`, if it has one.
pub async fn keyed<F, Fut>(
    req: &HttpRequest,
    state: &SharedState,
    route: Route,
    body: &[u8],
    run: F,
) -> Result<HttpResponse, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<HttpResponse, ApiError>>,
{
    let Some(raw) = req.headers().get(HEADER) else {
        return run().await;
    };
    let key = check_key(raw.as_bytes()).map_err(|e| ApiError::InvalidHeader {
        header: HEADER,
        detail: e.to_string(),
    })?;
    let caller = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.clone())
        .unwrap_or_default();
    // What can change the answer: the body, the query (`?explain`) and
    // the language of the explanations.
    let lang = req
        .headers()
        .get(ACCEPT_LANGUAGE)
        .map_or(&b""[..], HeaderValue::as_bytes);
    let fp = fingerprint(&[req.query_string().as_bytes(), lang, body]);
    let scope = Scope {
        route,
        caller,
        key: key.into(),
    };
    let outcome = state
        .replays()
        .run(scope, fp, async {
            let response = run().await.unwrap_or_else(|e| e.error_response());
            to_answer(response).await
        })
        .await;
    let label = |outcome: &str| {
        state
            .metrics()
            .idempotent_requests
            .with_label_values(&[route.as_str(), outcome])
            .inc();
    };
    match outcome {
        Ok(Outcome::First(a)) => {
            label("first");
            Ok(from_answer(&a, false))
        }
        Ok(Outcome::Replayed(a)) => {
            label("replayed");
            Ok(from_answer(&a, true))
        }
        Err(_) => {
            label("key_reused");
            Err(ApiError::IdempotencyKeyReused)
        }
    }
}

async fn to_answer(response: HttpResponse) -> Answer {
    let status = response.status().as_u16();
    let headers: Vec<(String, Vec<u8>)> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    match actix_web::body::to_bytes(response.into_body()).await {
        Ok(body) => Answer {
            fingerprint: [0; 32],
            status,
            headers,
            body: body.to_vec(),
        },
        // Bodies here are built in memory; should one fail to read, the
        // caller gets a 500 (never kept: not a 2xx).
        Err(_) => {
            let e = ApiError::Internal(anyhow::anyhow!("reading a response body failed"));
            Answer {
                fingerprint: [0; 32],
                status: e.status_code().as_u16(),
                headers: vec![(
                    "content-type".into(),
                    b"application/problem+json".to_vec(),
                )],
                body: br#"{"type":"/problems/internal","title":"Internal error","status":500,"detail":"the server failed; the error is logged"}"#.to_vec(),
            }
        }
    }
}

fn from_answer(a: &Answer, replayed: bool) -> HttpResponse {
    let status = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut b = HttpResponse::build(status);
    for (k, v) in &a.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_bytes(v),
        ) {
            b.append_header((k, v));
        }
    }
    if replayed {
        b.insert_header((REPLAYED, "true"));
    }
    b.body(a.body.clone())
}
