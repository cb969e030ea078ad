//! The OpenAI Images API: `POST /v1/images/generations` (also streamed) and `GET /v1/models`.
//!
//! Extras beyond OpenAI's fields are accepted at the top level (`negative_prompt`, `seed`,
//! `steps`, `cfg_scale`, `sampler`, `scheduler`, `shift`, `loras`; OpenAI SDKs send them with
//! `extra_body`). `model` may be any name: clients send their default, and this server has one
//! model at a time.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::job::{JobState, Status};
use crate::jobs::{b64, states};
use crate::{ApiError, ApiJson, AppState, LoraRef, Settings};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/images/generations", post(generations))
        .route("/v1/models", get(models))
}

#[derive(Debug, Deserialize)]
struct ImageRequest {
    prompt: String,
    n: Option<usize>,
    size: Option<String>,
    response_format: Option<String>,
    #[serde(default)]
    stream: bool,
    partial_images: Option<usize>,
    output_format: Option<String>,
    // Extras.
    #[serde(default)]
    negative_prompt: String,
    seed: Option<i64>,
    steps: Option<usize>,
    cfg_scale: Option<f32>,
    sampler: Option<String>,
    scheduler: Option<String>,
    shift: Option<f32>,
    #[serde(default)]
    loras: Vec<LoraRef>,
    // Other fields (`model`, `quality`, `style`, `background`, `user`, …) are ignored: they
    // choose among OpenAI's own models' behaviours.
}

/// `"1024x768"` → (1024, 768); `"auto"` → the model's 1024².
fn size(s: Option<&str>) -> Result<(usize, usize), ApiError> {
    let s = s.unwrap_or("auto");
    if s == "auto" {
        return Ok((1024, 1024));
    }
    s.split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "size `{s}`: expected WIDTHxHEIGHT, e.g. 1024x1024, or auto"
            ))
        })
}

/// Cancels the job if the client goes away before it finished (a waiting request dropped).
struct CancelOnDrop(Option<std::sync::Arc<crate::Job>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.cancel();
        }
    }
}

async fn generations(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ImageRequest>,
) -> Result<Response, ApiError> {
    let (width, height) = size(body.size.as_deref())?;
    let url = match body.response_format.as_deref() {
        None | Some("b64_json") => false,
        Some("url") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "response_format `{other}`: b64_json or url"
            )));
        }
    };
    if let Some(f) = body.output_format.as_deref().filter(|f| *f != "png") {
        return Err(ApiError::bad_request(format!(
            "output_format `{f}`: this server writes png"
        )));
    }
    let steps = body.steps.unwrap_or(30);
    let preview_every = match body.partial_images {
        Some(0) => Some(0),
        Some(k) => Some(steps.div_ceil(k.min(steps)).max(1)),
        None if body.stream => None,
        None => Some(0),
    };
    let settings = Settings {
        prompt: body.prompt,
        negative_prompt: body.negative_prompt,
        width: Some(width),
        height: Some(height),
        steps: body.steps,
        cfg_scale: body.cfg_scale,
        sampler: body.sampler,
        scheduler: body.scheduler,
        shift: body.shift,
        seed: body.seed,
        n: body.n,
        loras: body.loras,
        preview_every,
        ..Settings::default()
    };
    let request = settings.to_request(&state.config.context)?;
    let job = state.engine.submit(request)?;
    let base = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| format!("http://{h}"))
        .unwrap_or_default();
    let size = format!("{width}x{height}");
    if body.stream {
        let guard = CancelOnDrop(Some(job.clone()));
        let mut index = 0usize;
        let mut last = None;
        let stream = states(job.subscribe()).flat_map(move |s| {
            let _keep = &guard;
            let created = job.created;
            let mut out: Vec<Result<SseEvent, Infallible>> = Vec::new();
            let mut send = |name: &str, data: Value| {
                out.push(Ok(SseEvent::default()
                    .event(name)
                    .json_data(data)
                    .unwrap_or_else(|_| SseEvent::default())));
            };
            match s.status {
                Status::Running => {
                    if let Some((step, png)) = &s.preview
                        && last != Some(*step)
                    {
                        last = Some(*step);
                        send(
                            "image_generation.partial_image",
                            json!({
                                "type": "image_generation.partial_image",
                                "b64_json": b64(png),
                                "partial_image_index": index,
                                "created_at": created,
                                "size": size,
                                "quality": "auto",
                                "background": "opaque",
                                "output_format": "png",
                            }),
                        );
                        index += 1;
                    }
                }
                Status::Completed => {
                    for image in &s.images {
                        send(
                            "image_generation.completed",
                            json!({
                                "type": "image_generation.completed",
                                "b64_json": b64(&image.png),
                                "created_at": created,
                                "size": size,
                                "quality": "auto",
                                "background": "opaque",
                                "output_format": "png",
                                "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
                            }),
                        );
                    }
                }
                Status::Failed | Status::Cancelled => {
                    let error = s
                        .error
                        .clone()
                        .unwrap_or_else(|| ApiError::conflict("the job was cancelled"));
                    send(
                        "error",
                        json!({"type": "error", "error": error.body()["error"]}),
                    );
                }
                Status::Queued => {}
            }
            futures_util::stream::iter(out)
        });
        return Ok(Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let guard = CancelOnDrop(Some(job.clone()));
    let done = job.finished().await;
    drop(guard);
    let images = result(done)?;
    let data: Vec<Value> = images
        .iter()
        .map(|i| {
            if url {
                json!({"url": format!("{base}/api/v1/images/{}", i.name)})
            } else {
                json!({"b64_json": b64(&i.png)})
            }
        })
        .collect();
    Ok(Json(json!({"created": job.created, "data": data})).into_response())
}

/// A final state's images, or its error.
pub fn result(state: JobState) -> Result<Vec<crate::ImageOut>, ApiError> {
    match state.status {
        Status::Completed => Ok(state.images),
        Status::Cancelled => Err(ApiError::conflict("the job was cancelled")),
        _ => Err(state
            .error
            .unwrap_or_else(|| ApiError::internal("the job failed"))),
    }
}

async fn models(State(state): State<AppState>) -> Json<Value> {
    let info = state.engine.info();
    Json(json!({
        "object": "list",
        "data": [{
            "id": info.model_name(),
            "object": "model",
            "created": 0,
            "owned_by": "sakiko-lumina",
        }],
    }))
}
