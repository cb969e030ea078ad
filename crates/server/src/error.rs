//! Every failure a client can see: a status code and a JSON body
//! `{"error": {"message", "type", "code"}}` (the OpenAI shape, which A1111 clients also print).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An HTTP error answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// The status code (4xx for the client's mistakes, 5xx for ours).
    pub status: StatusCode,
    /// A short machine-readable kind (`invalid_request_error`, `authentication_error`, …).
    pub kind: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400: the request cannot be run as given.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 401: no or a wrong API key.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "authentication_error", message)
    }

    /// 404: no such route, job or image.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found_error", message)
    }

    /// 409: the job is already finished.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict_error", message)
    }

    /// 429: the queue is full.
    pub fn queue_full(capacity: usize) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!("the job queue is full ({capacity} waiting); retry later"),
            )
        }
    }

    /// 503: the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500: generation failed for a reason that is not the request's.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind, "code": self.status.as_u16()}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // Bearer, not Basic: browsers answer a Basic challenge on the page's own `fetch` calls
            // with a login dialog (headless ones wait forever). A1111 clients send their Basic
            // credentials up front, which are still accepted.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"sakiko\""),
            );
        }
        response
    }
}

impl From<sakiko_pipeline::PipelineError> for ApiError {
    fn from(e: sakiko_pipeline::PipelineError) -> Self {
        use sakiko_pipeline::PipelineError as P;
        match e {
            P::Request { .. } | P::Prompt(_) | P::Sampling(_) => Self::bad_request(e.to_string()),
            other => Self::internal(other.to_string()),
        }
    }
}

/// Axum's own rejections (malformed JSON, wrong types, missing content type, body too large,
/// bad paths and queries) as JSON errors with their status.
pub fn rejection(status: StatusCode, message: String) -> ApiError {
    ApiError::new(status, "invalid_request_error", message)
}

/// `Json<T>` whose rejections are [`ApiError`]s (JSON bodies) instead of axum's plain text.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(r) => Err(rejection(r.status(), r.body_text())),
        }
    }
}
