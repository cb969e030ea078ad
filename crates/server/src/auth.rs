//! The optional API key: `Authorization: Bearer KEY`, `X-Api-Key: KEY`, or `Authorization:
//! Basic` with the key as password (what A1111 clients such as SillyTavern and Open WebUI send;
//! the user name is ignored). Compared in constant time.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::{ApiError, AppState};

/// The keys a request offers, in every accepted form.
fn offered(headers: &HeaderMap) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    if let Some(key) = headers.get("x-api-key") {
        keys.push(key.as_bytes().to_vec());
    }
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            keys.push(rest.trim().as_bytes().to_vec());
        } else if scheme.eq_ignore_ascii_case("basic")
            && let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim())
        {
            let password = match decoded.iter().position(|&b| b == b':') {
                Some(colon) => decoded[colon + 1..].to_vec(),
                None => decoded,
            };
            keys.push(password);
        }
    }
    keys
}

/// Lets the request through when no key is configured or one offered key matches.
pub async fn require_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = state.config.api_key.as_deref() else {
        return next.run(request).await;
    };
    let offers = offered(request.headers());
    // Every offer is compared (no early exit on the first mismatch).
    let matched = offers.iter().fold(subtle::Choice::from(0), |acc, o| {
        acc | o.as_slice().ct_eq(key.as_bytes())
    });
    if bool::from(matched) {
        next.run(request).await
    } else if offers.is_empty() {
        ApiError::unauthorized("this server needs an API key (Authorization: Bearer KEY)")
            .into_response()
    } else {
        ApiError::unauthorized("wrong API key").into_response()
    }
}
