//! `POST /v1/campaigns`: runs a campaign on the live state and streams its
//! NDJSON lines back while it scores. The body is checked completely first
//! (422 naming the field); scoring runs on a blocking thread, and the stream
//! applies backpressure: a slow reader slows the scan, memory stays bounded.
//! Every decision is remembered and logged like a checkout decision.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use tokio::sync::mpsc;

use super::error::ApiError;
use crate::parse::from_json;
use crate::service::campaigns::{CampaignDto, CampaignSink, Format};
use crate::service::SharedState;

/// Bytes per streamed chunk.
const CHUNK: usize = 64 * 1024;

struct HttpSink {
    tx: mpsc::Sender<web::Bytes>,
    buf: Vec<u8>,
    stop: Arc<AtomicBool>,
}

impl HttpSink {
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = web::Bytes::from(std::mem::take(&mut self.buf));
        self.tx.blocking_send(chunk).map_err(|_| {
            self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away")
        })
    }
}

impl CampaignSink for HttpSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }
}

/// `POST /v1/campaigns`.
#[utoipa::path(
    post,
    path = "/v1/campaigns",
    tag = "campaigns",
    request_body = crate::service::campaigns::CampaignDto,
    responses(
        (status = 200, description = "NDJSON: one line per member with offers, streamed", body = String, content_type = "application/x-ndjson"),
        (status = 400, description = "malformed JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "body too large", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "not JSON", body = crate::http::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "a field is invalid (named in `field`)", body = crate::http::error::Problem, content_type = "application/problem+json"),
    ),
)]
#[tracing::instrument(name = "post_campaigns", skip_all)]
pub async fn post_campaigns(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<SharedState>,
) -> Result<HttpResponse, ApiError> {
    let max = state.settings().server.max_body_bytes;
    let body = super::read_json_body(&req, payload, max).await?;
    let dto: CampaignDto = from_json(&body)?;
    let segment = dto.segment_json();
    let campaign = dto.into_campaign_all(chrono::Utc::now())?;
    let (tx, mut rx) = mpsc::channel::<web::Bytes>(4);
    let stop = Arc::new(AtomicBool::new(false));
    let state = state.get_ref().clone();
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _rt = handle.enter();
        let mut sink = HttpSink {
            tx,
            buf: Vec::with_capacity(CHUNK),
            stop: stop.clone(),
        };
        let result = state
            .run_campaign(&campaign, &segment, Format::Ndjson, &mut sink, &stop)
            .and_then(|s| sink.flush().map(|()| s));
        match result {
            Ok(s) => tracing::info!(
                campaign = %s.campaign_id,
                scanned = s.members_scanned,
                matched = s.members_matched,
                written = s.members_written,
                no_consent = s.left_out.no_consent,
                holdout = s.left_out.holdout,
                daily_cap = s.left_out.daily_cap,
                suppressed = s.left_out.suppressed,
                no_eligible_offer = s.left_out.no_eligible_offer,
                seconds = s.seconds,
                "campaign done"
            ),
            Err(e) => tracing::warn!(error = %e, "campaign stopped early"),
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, actix_web::Error>))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .streaming(stream))
}

/// `GET /v1/campaigns/runs`: the campaign runs so far (the console's
/// Campaigns page).
#[utoipa::path(
    get,
    path = "/v1/campaigns/runs",
    tag = "campaigns",
    responses((status = 200, description = "`{\"runs\": [...]}`, newest first (the latest 1000): campaign id, channel, segment (the filter as given, JSON text), started_at, duration_ms, members_scanned, members_scored, members_written, held_out, decisions_recorded, and accepts (less refunds) of the decisions issued under the campaign id. Kept from the log, so every replica answers alike", body = serde_json::Value)),
)]
pub async fn runs(state: web::Data<SharedState>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({ "runs": state.campaign_runs() }))
}
