//! The web page at `/`: one HTML file embedded in the binary (no build step), talking to the
//! native job API.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

/// The page.
pub const INDEX: &str = include_str!("../static/index.html");

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // Everything the page loads comes from this server.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data: blob:; style-src 'unsafe-inline'; script-src 'unsafe-inline'",
            ),
        ],
        INDEX,
    )
}
