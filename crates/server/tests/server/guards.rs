//! What guards the server: the API key, CORS, and 4xx JSON for bad requests.

use crate::common::{TestServer, error_of};
use sakiko_server::{EngineOptions, ServerConfig};
use serde_json::{Value, json};

/// The API key: missing or wrong → 401 JSON; Bearer, X-Api-Key and Basic accepted; /health and
/// the page stay open.
#[tokio::test(flavor = "multi_thread")]
async fn api_key() {
    let server = TestServer::start(
        ServerConfig {
            api_key: Some("s3cret".into()),
            ..ServerConfig::default()
        },
        EngineOptions::default(),
    )
    .await;
    let c = &server.client;
    let (status, message) = error_of(server.get("/v1/models").await).await;
    assert_eq!(status, 401);
    assert!(message.contains("API key"), "{message}");
    let r = c
        .get(server.url("/v1/models"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"sakiko\"");
    assert_eq!(error_of(r).await, (401, "wrong API key".into()));
    for r in [
        c.get(server.url("/v1/models")).bearer_auth("s3cret"),
        c.get(server.url("/v1/models"))
            .header("X-Api-Key", "s3cret"),
        c.get(server.url("/sdapi/v1/sd-models"))
            .basic_auth("anyone", Some("s3cret")),
    ] {
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    let r = c
        .get(server.url("/sdapi/v1/sd-models"))
        .basic_auth("s3cret", Some("nope"));
    assert_eq!(
        r.send().await.unwrap().status(),
        401,
        "the key is the password"
    );
    for open in ["/health", "/", "/openapi.json"] {
        assert_eq!(server.get(open).await.status(), 200, "{open}");
    }
    server.shutdown().await.unwrap();
}

/// CORS is off by default and allows exactly the configured origins.
#[tokio::test(flavor = "multi_thread")]
async fn cors() {
    let preflight = |server: &TestServer, origin: &str| {
        server
            .client
            .request(reqwest::Method::OPTIONS, server.url("/v1/models"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .send()
    };
    let closed = TestServer::default().await;
    let r = preflight(&closed, "http://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = closed
        .client
        .get(closed.url("/v1/models"))
        .header("Origin", "http://a.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    closed.shutdown().await.unwrap();

    let open = TestServer::start(
        ServerConfig {
            cors_origins: vec!["http://ui.example".into()],
            ..ServerConfig::default()
        },
        EngineOptions::default(),
    )
    .await;
    let r = preflight(&open, "http://ui.example").await.unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://ui.example"
    );
    let r = preflight(&open, "http://evil.example").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    open.shutdown().await.unwrap();
}

/// Bad requests get a 4xx JSON error and the server keeps running.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_4xx_json() {
    let server = TestServer::start(
        ServerConfig {
            body_limit: 4096,
            ..ServerConfig::default()
        },
        EngineOptions::default(),
    )
    .await;
    let raw = |path: &str, body: &str| {
        server
            .client
            .post(server.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    let (status, _) = error_of(raw("/api/v1/jobs", "{\"prompt\": ").await.unwrap()).await;
    assert_eq!(status, 400, "malformed JSON");
    let (status, message) = error_of(raw("/api/v1/jobs", "{\"prompt\": 3}").await.unwrap()).await;
    assert_eq!(status, 422, "wrong type: {message}");
    let (status, message) = error_of(
        raw("/api/v1/jobs", "{\"prompt\": \"x\", \"colour\": 1}")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 422, "unknown field: {message}");
    let (status, message) = error_of(
        raw(
            "/sdapi/v1/txt2img",
            "{\"prompt\": \"x\", \"steps\": \"many\"}",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{message}");
    let r = server
        .client
        .post(server.url("/api/v1/jobs"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 415, "no content type");
    let big = format!("{{\"prompt\": \"{}\"}}", "a".repeat(8192));
    assert_eq!(
        error_of(raw("/api/v1/jobs", &big).await.unwrap()).await.0,
        413
    );

    for (body, expect) in [
        (json!({"prompt": "x", "size": "huge"}), "size `huge`"),
        (
            json!({"prompt": "x", "size": "1000x1000"}),
            "multiple of 16",
        ),
        (
            json!({"prompt": "x", "size": "4096x4096"}),
            "over this server's limit",
        ),
        (json!({"prompt": "x", "sampler": "ddim"}), "sampler"),
        (json!({"prompt": "x", "n": 99}), "images per request"),
        (json!({"prompt": "<tags>\n<general>blue hair</tags>"}), "2:"),
        (
            json!({"prompt": "x <lora:style:0.5>"}),
            "no adapters folder",
        ),
    ] {
        let (status, message) = error_of(server.post("/v1/images/generations", &body).await).await;
        assert_eq!(status, 400, "{body}: {message}");
        assert!(message.contains(expect), "{body}: {message}");
    }
    assert_eq!(error_of(server.get("/nope").await).await.0, 404);
    assert_eq!(
        error_of(server.get("/api/v1/images/none.png").await)
            .await
            .0,
        404
    );
    assert_eq!(
        error_of(server.get("/v1/images/generations").await).await.0,
        405
    );

    let check: Value = server
        .post(
            "/api/v1/prompt/check",
            &json!({"prompt": "<tags>\n<general>blue hair</tags>"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(check["valid"], false);
    assert_eq!(check["diagnostics"][0]["line"], 2);

    let health: Value = server.get("/health").await.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    server.shutdown().await.unwrap();
}
