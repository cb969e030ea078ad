//! The OpenAI Images API: `POST /v1/images/generations` and `/v1/images/edits` (both also
//! streamed) and `GET /v1/models`. An edit is image-to-image from the uploaded picture (`strength`,
//! default 0.75, is how much of it is redrawn); masks (inpainting) are refused with a clear error.
//!
//! Extras beyond OpenAI's fields are accepted at the top level (`negative_prompt`, `seed`,
//! `steps`, `cfg_scale`, `sampler`, `scheduler`, `shift`, `loras`; OpenAI SDKs send them with
//! `extra_body`). `model` may be any name: clients send their default, and this server has one
//! model at a time.

use std::convert::Infallible;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::rejection;
use crate::job::{JobState, Status};
use crate::jobs::{b64, states};
use crate::{ApiError, ApiJson, AppState, LoraRef, Settings};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/images/generations", post(generations))
        .route("/v1/images/edits", post(edits))
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
    /// Edits: how much of the image is redrawn, in (0, 1].
    strength: Option<f64>,
    // Other fields (`model`, `quality`, `style`, `background`, `user`, …) are ignored: they
    // choose among OpenAI's own models' behaviours.
}

/// `"1024x768"` → (1024, 768); `"auto"` → `auto`.
fn size(s: Option<&str>, auto: (usize, usize)) -> Result<(usize, usize), ApiError> {
    let s = s.unwrap_or("auto");
    if s == "auto" {
        return Ok(auto);
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
    if body.strength.is_some() {
        return Err(ApiError::bad_request(
            "`strength` is for /v1/images/edits (it needs an image)",
        ));
    }
    let size = size(body.size.as_deref(), (1024, 1024))?;
    images(state, headers, body, size, None).await
}

/// Edit-form fields that stay text; every other field is read as JSON when it parses (numbers,
/// `loras`), as the form has no types.
const TEXT_FIELDS: [&str; 13] = [
    "prompt",
    "negative_prompt",
    "size",
    "response_format",
    "output_format",
    "sampler",
    "scheduler",
    "model",
    "quality",
    "background",
    "user",
    "input_fidelity",
    "moderation",
];

async fn edits(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let mut form = form.map_err(|r| rejection(r.status(), r.body_text()))?;
    let mut image = None;
    let mut fields = serde_json::Map::new();
    let bad_form =
        |e: axum::extract::multipart::MultipartError| rejection(e.status(), e.body_text());
    while let Some(field) = form.next_field().await.map_err(bad_form)? {
        let name = field.name().unwrap_or_default().to_owned();
        match name.as_str() {
            "image" | "image[]" => {
                if image.is_some() {
                    return Err(ApiError::bad_request(
                        "one `image` per edit: this model starts from a single picture",
                    ));
                }
                image = Some(field.bytes().await.map_err(bad_form)?);
            }
            "mask" => {
                return Err(ApiError::bad_request(
                    "`mask`: inpainting is not supported yet; send the image alone to redraw all \
                     of it (image-to-image, `strength` in (0, 1])",
                ));
            }
            _ => {
                let text = field.text().await.map_err(bad_form)?;
                let value = if TEXT_FIELDS.contains(&name.as_str()) {
                    Value::String(text)
                } else {
                    serde_json::from_str(&text).unwrap_or(Value::String(text))
                };
                fields.insert(name, value);
            }
        }
    }
    let image = image.ok_or_else(|| {
        ApiError::bad_request(
            "an edit needs `image` (multipart/form-data): the picture to start from",
        )
    })?;
    let body: ImageRequest = serde_json::from_value(Value::Object(fields))
        .map_err(|e| ApiError::bad_request(format!("edit form: {e}")))?;
    // `auto`: the picture's own size, down to the model's multiple of 16.
    let (w, h) = image::ImageReader::new(std::io::Cursor::new(&image))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .ok_or_else(|| ApiError::bad_request("`image`: not a PNG, JPEG or WebP picture"))?;
    let side = |v: u32| (v as usize / 16 * 16).max(16);
    let size = size(body.size.as_deref(), (side(w), side(h)))?;
    let strength = body.strength.unwrap_or(0.75);
    images(state, headers, body, size, Some((b64(&image), strength))).await
}

/// Runs `body` (with `init`: a base64 picture and the strength) and answers as OpenAI does:
/// the images, or an SSE stream of partial images (`image_generation.*`, or `image_edit.*` for
/// edits) and the finished ones.
async fn images(
    state: AppState,
    headers: HeaderMap,
    body: ImageRequest,
    (width, height): (usize, usize),
    init: Option<(String, f64)>,
) -> Result<Response, ApiError> {
    let kind = if init.is_some() {
        "image_edit"
    } else {
        "image_generation"
    };
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
        denoising_strength: init.as_ref().map(|(_, strength)| *strength),
        init_image: init.map(|(image, _)| image),
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
                        let event = format!("{kind}.partial_image");
                        send(
                            &event,
                            json!({
                                "type": event,
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
                        let event = format!("{kind}.completed");
                        send(
                            &event,
                            json!({
                                "type": event,
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
