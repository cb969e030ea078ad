//! # sakiko-server
//!
//! `sakiko serve`: the Sakiko-Lumina models stay resident on one device behind the HTTP APIs
//! image clients already speak, with a web page.
//!
//! - **Engine** ([`Engine`]): one worker thread owns the models and runs jobs from a bounded
//!   queue (full → 429 with `Retry-After`); jobs report progress and previews and can be
//!   cancelled between steps.
//! - **OpenAI Images**: `POST /v1/images/generations` (with `stream: true`: SSE
//!   `image_generation.partial_image` previews, then `image_generation.completed`),
//!   `GET /v1/models`.
//! - **AUTOMATIC1111**: `/sdapi/v1/txt2img`, `img2img`, `progress`, `interrupt`, `samplers`,
//!   `schedulers`, `sd-models`, `loras`, `options` (checkpoint switching).
//! - **Native jobs**: `POST /api/v1/jobs` → 202, `GET /api/v1/jobs/{id}`, its SSE `events`,
//!   `DELETE` to cancel, `GET /api/v1/images/{name}`.
//! - `GET /health`, `GET /metrics` (Prometheus), `GET /openapi.json`, and the page at `/`.
//!
//! Security: an optional API key (Bearer, `X-Api-Key`, or Basic with the key as password;
//! compared in constant time; `/health` and the page stay open), CORS off unless origins are
//! given, a request body limit, and per-request [`Limits`].
//!
//! ```no_run
//! use burn::backend::Flex;
//! use sakiko_pipeline::ModelFiles;
//! use sakiko_server::{Engine, EngineOptions, ServerConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let files = ModelFiles::models_dir("models")?;
//! let engine = Engine::start::<Flex>(files, [Default::default()], EngineOptions::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:7860").await?;
//! sakiko_server::serve(listener, engine, ServerConfig::default(), sakiko_server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```

mod a1111;
mod auth;
mod engine;
mod error;
mod info;
mod job;
mod jobs;
mod metrics;
mod openai;
mod page;
mod params;
mod worker;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

pub use engine::{Engine, EngineInfo, EngineOptions, KEPT_JOBS};
pub use error::{ApiError, ApiJson};
pub use job::{ImageOut, Job, JobState, Status};
pub use metrics::Metrics;
pub use params::{Context, Limits, LoraRef, Settings, decode_image};

/// How the HTTP side behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Required on every API route when set (see the crate docs for the accepted headers).
    pub api_key: Option<String>,
    /// Origins allowed to call from browsers (CORS); empty: CORS off.
    pub cors_origins: Vec<String>,
    /// The largest request body in bytes (img2img sends base64 images).
    pub body_limit: usize,
    /// Limits, adapters folder and preview cadence for requests.
    pub context: Context,
    /// Denoiser files that `POST /sdapi/v1/options` may switch to (A1111's checkpoints).
    pub checkpoints: Vec<std::path::PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            api_key: None,
            cors_origins: Vec::new(),
            body_limit: 64 << 20,
            context: Context {
                preview_every: 5,
                ..Context::default()
            },
            checkpoints: Vec::new(),
        }
    }
}

/// What every handler sees.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The configuration.
    pub config: Arc<ServerConfig>,
}

/// The whole HTTP application for `engine`.
pub fn router(engine: Arc<Engine>, config: ServerConfig) -> Result<Router, ApiError> {
    let cors = cors(&config.cors_origins)?;
    let body_limit = config.body_limit;
    let state = AppState {
        engine,
        config: Arc::new(config),
    };
    let api = Router::new()
        .merge(openai::routes())
        .merge(a1111::routes())
        .merge(jobs::routes())
        .merge(info::protected_routes())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_key,
        ));
    let mut app = Router::new()
        .merge(api)
        .merge(info::open_routes())
        .merge(page::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            error::rejection(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method".into(),
            )
        })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    if let Some(cors) = cors {
        app = app.layer(cors);
    }
    Ok(app)
}

fn cors(origins: &[String]) -> Result<Option<CorsLayer>, ApiError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let origins = origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o).map_err(|_| {
                ApiError::bad_request(format!("CORS origin `{o}` is not a header value"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
                HeaderName::from_static("x-api-key"),
            ]),
    ))
}

/// Serves `engine` on `listener` until `shutdown` resolves; then stops accepting, cancels the
/// running and queued jobs (the running one stops between steps) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(Arc::clone(&engine), config)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.message))?;
    let stopping = Arc::clone(&engine);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Cancel first: open event streams and waiting requests then finish, so the
            // graceful shutdown does not wait for them forever.
            tokio::task::spawn_blocking(move || stopping.shutdown())
                .await
                .ok();
        })
        .await;
    let joined = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    served.and(joined.map_err(std::io::Error::other))
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
