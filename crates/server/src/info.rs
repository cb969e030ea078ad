//! `/health`, `/metrics`, `/openapi.json` and `/api/v1/prompt/check`.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiJson, AppState};

/// Routes open without the API key (load balancers probe `/health`).
pub fn open_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
}

/// Routes behind the key.
pub fn protected_routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/prompt/check", post(check))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let engine = &state.engine;
    let info = engine.info();
    Json(json!({
        "status": "ok",
        "queue_length": engine.queue_len(),
        "queue_capacity": engine.capacity(),
        "running": engine.running().iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        "backend": info.backend,
        "devices": info.devices,
        "dtype": info.dtype,
        "models": {
            "dit": info.dit,
            "text_encoder": info.text_encoder,
            "vae": info.vae,
        },
    }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let running = state.engine.current().is_some();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.engine.metrics().render(running),
    )
}

/// The API description (kept in step with the routes by a test).
pub const OPENAPI: &str = include_str!("../static/openapi.json");

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckRequest {
    prompt: String,
}

/// A prompt's diagnostics (errors and warnings with line:col), as the page shows them.
async fn check(ApiJson(body): ApiJson<CheckRequest>) -> Json<Value> {
    let (text, _) =
        sakiko_adapters::extract_tags(&body.prompt).unwrap_or((body.prompt.clone(), Vec::new()));
    let report = sakiko_prompt::check(&text);
    let diagnostics: Vec<Value> = report
        .diagnostics
        .iter()
        .map(|d| {
            json!({
                "severity": d.severity.to_string(),
                "line": d.position.line,
                "column": d.position.column,
                "message": d.message,
                "suggestion": d.suggestion,
                "text": d.to_string(),
            })
        })
        .collect();
    let valid = !report
        .diagnostics
        .iter()
        .any(|d| d.severity == sakiko_prompt::Severity::Error);
    Json(json!({"valid": valid, "diagnostics": diagnostics}))
}
