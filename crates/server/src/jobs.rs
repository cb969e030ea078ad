//! The native job API: submit (202), poll, follow as server-sent events, cancel, fetch images.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use futures_util::Stream;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::job::{Job, JobState, Status};
use crate::{ApiError, ApiJson, AppState, Settings};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs", axum::routing::post(submit))
        .route("/api/v1/jobs/{id}", get(status).delete(cancel))
        .route("/api/v1/jobs/{id}/events", get(events))
        .route("/api/v1/images/{name}", get(image))
}

/// Base64 of bytes.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A job as JSON (`GET /api/v1/jobs/{id}` and the `complete` event).
pub fn job_json(job: &Job, state: &JobState) -> Value {
    let r = &job.request;
    json!({
        "id": job.id,
        "status": state.status,
        "stage": state.stage,
        "step": state.step,
        "steps": state.steps,
        "created": job.created,
        "seconds": state.seconds,
        "seed": r.seed,
        "width": r.width,
        "height": r.height,
        "warnings": state.warnings,
        "images": state.images.iter().map(|i| json!({
            "name": i.name,
            "url": format!("/api/v1/images/{}", i.name),
            "infotext": i.infotext,
        })).collect::<Vec<_>>(),
        "error": state.error.as_ref().map(|e| e.body()["error"].clone()),
    })
}

async fn submit(
    State(state): State<AppState>,
    ApiJson(settings): ApiJson<Settings>,
) -> Result<Response, ApiError> {
    let request = settings.to_request(&state.config.context)?;
    let job = state.engine.submit(request)?;
    let body = json!({
        "id": job.id,
        "status": Status::Queued,
        "seed": job.request.seed,
        "url": format!("/api/v1/jobs/{}", job.id),
        "events_url": format!("/api/v1/jobs/{}/events", job.id),
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

fn find(state: &AppState, id: &str) -> Result<Arc<Job>, ApiError> {
    state.engine.job(id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no job `{id}` (finished jobs are kept for a while, then forgotten)"
        ))
    })
}

async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = find(&state, &id)?;
    Ok(Json(job_json(&job, &job.state())))
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = find(&state, &id)?;
    if !job.cancel() {
        return Err(ApiError::conflict(format!(
            "job `{id}` has already finished ({:?})",
            job.status()
        )));
    }
    Ok(Json(json!({"id": id, "cancelling": true})))
}

async fn image(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let image = state
        .engine
        .image(&name)
        .ok_or_else(|| ApiError::not_found(format!("no image `{name}`")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=86400, immutable"),
        ],
        image.png.as_ref().clone(),
    )
        .into_response())
}

/// The stream of a job's states until it is final: each state once (a slow reader skips to the
/// latest), then the final one, then the end.
pub fn states(rx: watch::Receiver<JobState>) -> impl Stream<Item = JobState> + Send {
    futures_util::stream::unfold((rx, false, true), |(mut rx, done, first)| async move {
        if done {
            return None;
        }
        if !first && rx.changed().await.is_err() {
            return None;
        }
        let state = rx.borrow_and_update().clone();
        let done = state.status.is_final();
        Some((state, (rx, done, false)))
    })
}

async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    use futures_util::StreamExt;
    let job = find(&state, &id)?;
    let rx = job.subscribe();
    let mut last_preview = None;
    let stream = states(rx).map(move |s| {
        let event = match s.status {
            Status::Queued => SseEvent::default()
                .event("queued")
                .json_data(json!({"id": job.id, "queue_length": state.engine.queue_len()})),
            Status::Running => {
                // A preview travels once, with the first progress event after it was made.
                let preview = s.preview.as_ref().and_then(|(step, png)| {
                    (last_preview != Some(*step)).then(|| {
                        last_preview = Some(*step);
                        format!("data:image/png;base64,{}", b64(png))
                    })
                });
                SseEvent::default().event("progress").json_data(json!({
                    "id": job.id,
                    "stage": s.stage,
                    "step": s.step,
                    "steps": s.steps,
                    "preview": preview,
                }))
            }
            Status::Completed => SseEvent::default()
                .event("complete")
                .json_data(job_json(&job, &s)),
            Status::Failed => SseEvent::default()
                .event("error")
                .json_data(job_json(&job, &s)),
            Status::Cancelled => SseEvent::default()
                .event("cancelled")
                .json_data(json!({"id": job.id})),
        };
        Ok(event.unwrap_or_else(|_| SseEvent::default().event("error").data("{}")))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
