//! The one API error type at the HTTP edge and its exhaustive mapping to
//! `application/problem+json` (RFC 9457). Internal error text goes to the
//! log, never into a response.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::FieldError;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The body is not JSON at all.
    #[error("malformed JSON: {0}")]
    MalformedJson(FieldError),
    /// A field is missing, mistyped or out of range.
    #[error("invalid field {0}")]
    InvalidField(FieldError),
    /// Several fields are at fault, all reported at once (the first is
    /// `field`/`detail`, all are in `errors`). Never empty.
    #[error("invalid fields {0:?}")]
    InvalidFields(Vec<FieldError>),
    /// The body is larger than the limit.
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit, bytes.
        limit: usize,
    },
    /// The content type is not JSON.
    #[error("unsupported content type")]
    UnsupportedMediaType,
    /// No such route.
    #[error("not found")]
    NotFound,
    /// A resource a field names does not exist (unknown decision, member).
    #[error("{field}: {detail}")]
    UnknownResource {
        /// The field naming it.
        field: String,
        /// What is unknown.
        detail: String,
    },
    /// The request conflicts with the state (already accepted, sold out, too few points).
    #[error("{field}: {detail}")]
    Conflict {
        /// The field at fault.
        field: String,
        /// Why.
        detail: String,
    },
    /// The offer has expired.
    #[error("{field}: {detail}")]
    Expired {
        /// The field at fault.
        field: String,
        /// Why.
        detail: String,
    },
    /// The event log cannot take writes (full disk, I/O error).
    #[error("event log unavailable: {0}")]
    Storage(#[source] crate::durable::LogError),
    /// A request header is malformed (named in `field`).
    #[error("header {header}: {detail}")]
    InvalidHeader {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// An `Idempotency-Key` already used with a different request.
    #[error("idempotency key reused with another request")]
    IdempotencyKeyReused,
    /// Route exists, method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Not ready to serve (still loading, or a dependency is down).
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// No key, or a key the service does not know.
    #[error("missing or unknown API key")]
    Unauthorized,
    /// The key lacks the scope the route needs.
    #[error("the key lacks scope {scope}")]
    Forbidden {
        /// The scope needed.
        scope: &'static str,
    },
    /// The key's request rate is used up.
    #[error("rate limit of key {key} reached")]
    RateLimited {
        /// The key id (not secret).
        key: String,
        /// Seconds until a request is allowed again.
        retry_after_secs: u64,
    },
    /// Too many requests in flight.
    #[error("overloaded")]
    Overloaded,
    /// The request ran past its deadline.
    #[error("request timed out")]
    Timeout,
    /// A configuration or model file failed to load; the running version stays.
    #[error("{file}: {detail}")]
    InvalidFile {
        /// The file.
        file: String,
        /// Why (the parse error; shown to admin-scope callers only).
        detail: String,
    },
    /// A bug or an I/O failure; the text is logged, not returned.
    #[error("internal error: {0}")]
    Internal(#[from] anyhow::Error),
}

/// The problem document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Problem type URI.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Short summary of the problem type.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// What went wrong in this instance.
    pub detail: String,
    /// The field at fault, when there is one (the first, when there are several).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every field at fault in the request (RFC 9457 extension member), on
    /// 422 invalid-field answers; the first is the one in `field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ProblemField>>,
}

/// One field at fault, in a problem's `errors`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProblemField {
    /// Dotted path of the field (`itinerary.passengers`, `[2].revenue`).
    pub field: String,
    /// What is wrong with it.
    pub detail: String,
}

impl ProblemField {
    fn of(e: &FieldError) -> ProblemField {
        ProblemField {
            field: e.field.clone(),
            detail: e.message.clone(),
        }
    }
}

impl ApiError {
    fn problem(&self) -> Problem {
        let errors = match self {
            ApiError::InvalidField(e) => Some(vec![ProblemField::of(e)]),
            ApiError::InvalidFields(v) => Some(v.iter().map(ProblemField::of).collect()),
            _ => None,
        };
        let (kind, title, detail, field) = match self {
            ApiError::MalformedJson(e) => (
                "/problems/malformed-json",
                "Malformed JSON",
                e.message.clone(),
                Some(e.field.clone()),
            ),
            ApiError::InvalidField(e) => (
                "/problems/invalid-field",
                "Invalid field",
                format!("{}: {}", e.field, e.message),
                Some(e.field.clone()),
            ),
            ApiError::InvalidFields(v) => {
                let first = v
                    .first()
                    .cloned()
                    .unwrap_or_else(|| FieldError::new("body", "is invalid"));
                let more = v.len().saturating_sub(1);
                let detail = match more {
                    0 => format!("{}: {}", first.field, first.message),
                    1 => format!(
                        "{}: {} (and 1 more field in errors)",
                        first.field, first.message
                    ),
                    n => format!(
                        "{}: {} (and {n} more fields in errors)",
                        first.field, first.message
                    ),
                };
                (
                    "/problems/invalid-field",
                    "Invalid field",
                    detail,
                    Some(first.field),
                )
            }
            ApiError::PayloadTooLarge { limit } => (
                "/problems/payload-too-large",
                "Payload too large",
                format!("request body is larger than {limit} bytes"),
                Some("body".to_string()),
            ),
            ApiError::UnsupportedMediaType => (
                "/problems/unsupported-media-type",
                "Unsupported media type",
                "send the body as JSON with Content-Type: application/json".to_string(),
                None,
            ),
            ApiError::NotFound => (
                "/problems/not-found",
                "Not found",
                "no such resource".to_string(),
                None,
            ),
            ApiError::UnknownResource { field, detail } => (
                "/problems/unknown-resource",
                "Unknown resource",
                format!("{field}: {detail}"),
                Some(field.clone()),
            ),
            ApiError::Conflict { field, detail } => (
                "/problems/conflict",
                "Conflict",
                format!("{field}: {detail}"),
                Some(field.clone()),
            ),
            ApiError::Expired { field, detail } => (
                "/problems/expired",
                "Offer expired",
                format!("{field}: {detail}"),
                Some(field.clone()),
            ),
            ApiError::Storage(_) => (
                "/problems/storage-unavailable",
                "Storage unavailable",
                "the write was not stored and not applied; retry later".to_string(),
                None,
            ),
            ApiError::InvalidHeader { header, detail } => (
                "/problems/invalid-header",
                "Invalid header",
                format!("{header}: {detail}"),
                Some(header.to_string()),
            ),
            ApiError::IdempotencyKeyReused => (
                "/problems/idempotency-key-reused",
                "Idempotency key reused",
                "Idempotency-Key: was already used with a different request (body, query or \
                 Accept-Language); use a new key for a new request"
                    .to_string(),
                Some("Idempotency-Key".to_string()),
            ),
            ApiError::MethodNotAllowed => (
                "/problems/method-not-allowed",
                "Method not allowed",
                "this route does not take that method".to_string(),
                None,
            ),
            ApiError::Unavailable(why) => (
                "/problems/unavailable",
                "Service unavailable",
                why.clone(),
                None,
            ),
            ApiError::Unauthorized => (
                "/problems/unauthorized",
                "Unauthorized",
                "send a valid API key as Authorization: Bearer KEY".to_string(),
                None,
            ),
            ApiError::Forbidden { scope } => (
                "/problems/forbidden",
                "Forbidden",
                format!("this route needs a key with scope {scope}"),
                None,
            ),
            ApiError::RateLimited {
                retry_after_secs, ..
            } => (
                "/problems/rate-limited",
                "Too many requests",
                format!("this key's request rate is used up; retry in {retry_after_secs} s"),
                None,
            ),
            ApiError::Overloaded => (
                "/problems/overloaded",
                "Overloaded",
                "too many requests in flight; retry shortly".to_string(),
                None,
            ),
            ApiError::Timeout => (
                "/problems/timeout",
                "Request timed out",
                "the request ran past its deadline; a write may or may not have been applied"
                    .to_string(),
                None,
            ),
            ApiError::InvalidFile { file, detail } => (
                "/problems/invalid-file",
                "Invalid file",
                format!("{file}: {detail}; the running version stays in service"),
                Some(file.clone()),
            ),
            ApiError::Internal(_) => (
                "/problems/internal",
                "Internal error",
                "the server failed; the error is logged".to_string(),
                None,
            ),
        };
        Problem {
            kind,
            title,
            status: self.status_code().as_u16(),
            detail,
            field,
            errors,
        }
    }
}

impl From<Vec<FieldError>> for ApiError {
    /// One error is [`ApiError::from`] a [`FieldError`] (malformed JSON stays
    /// a 400); several are [`ApiError::InvalidFields`].
    fn from(mut v: Vec<FieldError>) -> Self {
        match v.len() {
            0 => ApiError::InvalidField(FieldError::new("body", "is invalid")),
            1 => ApiError::from(v.remove(0)),
            _ => ApiError::InvalidFields(v),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        if e.message.starts_with("malformed JSON") {
            ApiError::MalformedJson(e)
        } else {
            ApiError::InvalidField(e)
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::MalformedJson(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidField(_) | ApiError::InvalidFields(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::InvalidHeader { .. } => StatusCode::BAD_REQUEST,
            ApiError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnknownResource { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::Expired { .. } => StatusCode::GONE,
            ApiError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InvalidFile { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            ApiError::Internal(e) => tracing::error!(error = ?e, "request failed"),
            ApiError::Unavailable(why) => tracing::warn!(%why, "unavailable"),
            ApiError::Storage(e) => {
                tracing::error!(error = %e, "write refused: event log unavailable")
            }
            ApiError::InvalidFile { file, detail } => {
                tracing::warn!(%file, %detail, "reload refused; the running version stays")
            }
            _ => tracing::debug!(error = %self, "request refused"),
        }
        let mut b = HttpResponse::build(self.status_code());
        b.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        match self {
            ApiError::Unavailable(_)
            | ApiError::Storage(_)
            | ApiError::Overloaded
            | ApiError::Timeout => {
                b.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::RateLimited {
                retry_after_secs, ..
            } => {
                b.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Unauthorized => {
                b.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        b.json(self.problem())
    }
}

impl From<crate::durable::LogError> for ApiError {
    fn from(e: crate::durable::LogError) -> ApiError {
        ApiError::Storage(e)
    }
}

impl From<crate::service::outcomes::OutcomeError> for ApiError {
    fn from(e: crate::service::outcomes::OutcomeError) -> ApiError {
        use crate::service::outcomes::OutcomeError as E;
        match e {
            E::Invalid(v) => ApiError::from(v),
            E::UnknownDecision { field, detail } => ApiError::UnknownResource { field, detail },
            E::Conflict { field, detail } => ApiError::Conflict { field, detail },
            E::Expired { field, detail } => ApiError::Expired { field, detail },
            E::Log(e) => ApiError::Storage(e),
        }
    }
}

impl From<crate::service::members::MemberError> for ApiError {
    fn from(e: crate::service::members::MemberError) -> ApiError {
        use crate::service::members::MemberError as E;
        match e {
            E::Invalid(f) => ApiError::InvalidField(f),
            E::Unknown => ApiError::UnknownResource {
                field: "member_id".into(),
                detail: "no such member".into(),
            },
            E::InsufficientPoints { balance } => ApiError::Conflict {
                field: "points".into(),
                detail: format!("the balance is {balance} points"),
            },
            E::Log(e) => ApiError::Storage(e),
        }
    }
}

impl From<crate::service::reload::ReloadError> for ApiError {
    fn from(e: crate::service::reload::ReloadError) -> ApiError {
        ApiError::InvalidFile {
            file: e.file,
            detail: e.detail,
        }
    }
}
