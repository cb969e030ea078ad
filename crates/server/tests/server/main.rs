//! `sakiko-server` end to end: a real server on loopback with the tiny fixture models, driven by
//! real HTTP clients (reqwest; async-openai for the OpenAI API).

#[path = "../common/mod.rs"]
mod common;

mod automatic1111;
mod guards;
mod jobs;
mod openai;

use common::{TestServer, b64_decode, error_of, small};
use sakiko_server::{Context, EngineOptions, ServerConfig};
use serde_json::{Value, json};

/// A PNG's pixels.
fn rgb(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).expect("a PNG").to_rgb8()
}

/// Adapters per request from the adapters folder: applied, then removed again without reloading
/// the base (the next plain request gives the plain image).
#[tokio::test(flavor = "multi_thread")]
async fn adapters_per_request() {
    let server = TestServer::start(
        ServerConfig {
            context: Context {
                lora_dir: Some(common::pipeline_fixture("e2e_adapters/loras")),
                ..Context::default()
            },
            ..ServerConfig::default()
        },
        EngineOptions::default(),
    )
    .await;
    let image = |body: Value| {
        let server = &server;
        async move {
            let r: Value = server
                .post("/sdapi/v1/txt2img", &body)
                .await
                .json()
                .await
                .unwrap();
            b64_decode(r["images"][0].as_str().unwrap_or_else(|| panic!("{r}")))
        }
    };
    let plain = image(small("1girl", 11, 3)).await;
    let tagged = image(small("1girl <lora:tiny_dit_lora:0.8>", 11, 3)).await;
    let listed = image(
        json!({"prompt": "1girl", "width": 64, "height": 48, "steps": 3, "seed": 11,
                              "loras": [{"name": "tiny_dit_lora", "strength": 0.8}]}),
    )
    .await;
    let again = image(small("1girl", 11, 3)).await;
    assert_ne!(rgb(&plain), rgb(&tagged), "the adapter changes the image");
    assert_eq!(
        rgb(&tagged),
        rgb(&listed),
        "tag and list are the same adapter"
    );
    assert_eq!(rgb(&plain), rgb(&again), "unmerged exactly");
    let loras: Value = server.get("/sdapi/v1/loras").await.json().await.unwrap();
    let names: Vec<&str> = loras
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tiny_dit_lora", "tiny_te_lokr"]);
    let (status, message) = error_of(
        server
            .post(
                "/sdapi/v1/txt2img",
                &small("1girl <lora:tiny_dit_lor>", 1, 2),
            )
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("tiny_dit_lora"), "a suggestion: {message}");
    server.shutdown().await.unwrap();
}

/// The OpenAPI description lists every route the server answers, and only those.
#[tokio::test(flavor = "multi_thread")]
async fn openapi_lists_the_routes() {
    let server = TestServer::default().await;
    let spec: Value = server.get("/openapi.json").await.json().await.unwrap();
    let paths = spec["paths"].as_object().expect("paths");
    assert!(paths.len() >= 20, "{}", paths.len());
    for (path, methods) in paths {
        let concrete = path
            .replace("{id}", "job-none")
            .replace("{name}", "none.png");
        for method in methods.as_object().unwrap().keys() {
            let r = server
                .client
                .request(
                    method.to_uppercase().parse().unwrap(),
                    server.url(&concrete),
                )
                .send()
                .await
                .unwrap();
            assert_ne!(r.status(), 405, "{method} {path}");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            assert!(
                status != 404 || body.contains("job") || body.contains("image"),
                "{method} {path}: {body}"
            );
        }
    }
    server.shutdown().await.unwrap();
}
