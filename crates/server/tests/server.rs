//! `sakiko-server` end to end: a real server on loopback with the tiny fixture models, driven by
//! real HTTP clients (reqwest; async-openai for the OpenAI API).

mod common;

use std::collections::HashSet;
use std::ops::ControlFlow;

use burn::backend::Flex;
use common::{TestServer, b64_decode, error_of, parse_sse, small, wait_running};
use sakiko_pipeline::{GenerationRequest, Pipeline};
use sakiko_server::{Context, EngineOptions, Limits, ServerConfig};
use serde_json::{Value, json};

fn long_steps() -> ServerConfig {
    ServerConfig {
        context: Context {
            limits: Limits {
                max_steps: 1000,
                ..Limits::default()
            },
            preview_every: 1,
            ..Context::default()
        },
        ..ServerConfig::default()
    }
}

fn rgb(png: &[u8]) -> image::RgbImage {
    image::load_from_memory(png).expect("a PNG").to_rgb8()
}

/// The native API: 202, events (queued/progress with previews/complete), the job, its image with
/// the parameters; the image equals the library's own generation of the same request.
#[tokio::test(flavor = "multi_thread")]
async fn native_job_events_and_image_match_the_library() {
    let server = TestServer::start(
        ServerConfig {
            context: Context {
                preview_every: 2,
                ..Context::default()
            },
            ..ServerConfig::default()
        },
        EngineOptions::default(),
    )
    .await;
    let submitted = server
        .post("/api/v1/jobs", &small("1girl, smile", 42, 4))
        .await;
    assert_eq!(submitted.status(), 202);
    let job: Value = submitted.json().await.unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    assert_eq!(job["seed"], 42);

    let text = server
        .get(job["events_url"].as_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    let events = parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names.last(), Some(&"complete"), "{names:?}");
    let previews: Vec<&Value> = events
        .iter()
        .filter_map(|(e, d)| (e == "progress").then_some(&d["preview"]))
        .filter(|p| !p.is_null())
        .collect();
    assert!(!previews.is_empty(), "previews every 2 steps: {names:?}");
    let preview = previews[0].as_str().unwrap();
    let preview = rgb(&b64_decode(
        preview.strip_prefix("data:image/png;base64,").unwrap(),
    ));
    assert_eq!(preview.dimensions(), (8, 6), "latent resolution");
    let steps: Vec<u64> = events
        .iter()
        .filter(|(e, _)| e == "progress")
        .filter_map(|(_, d)| d["step"].as_u64())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{steps:?}");

    let done: Value = server
        .get(&format!("/api/v1/jobs/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "completed");
    let url = done["images"][0]["url"].as_str().unwrap();
    let image = server.get(url).await;
    assert_eq!(image.headers()["content-type"], "image/png");
    let png = image.bytes().await.unwrap();
    let served = rgb(&png);
    let infotext = done["images"][0]["infotext"].as_str().unwrap();
    assert!(
        infotext.contains("Seed: 42") && infotext.contains("Steps: 4"),
        "{infotext}"
    );

    // The same request through the library, on fresh models.
    let mut pipeline = Pipeline::<Flex>::builder(common::files()).build().unwrap();
    let request = GenerationRequest::new("1girl, smile")
        .size(64, 48)
        .steps(4)
        .seed(42);
    let g = pipeline
        .generate(&request, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(served, g.images[0].to_rgb8(), "same request, same pixels");
    server.shutdown().await.unwrap();
}

/// OpenAI Images through the async-openai client, and the SSE stream with partial images.
#[tokio::test(flavor = "multi_thread")]
async fn openai_images_and_models() {
    use async_openai::types::images::{CreateImageRequestArgs, ImageResponseFormat};
    let server = TestServer::default().await;
    let client = async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(server.url("/v1"))
            .with_api_key("unused"),
    );
    let request = CreateImageRequestArgs::default()
        .prompt("1girl, cherry blossoms")
        .n(2)
        .size(async_openai::types::images::ImageSize::Other(
            "64x48".into(),
        ))
        .response_format(ImageResponseFormat::B64Json)
        .build()
        .unwrap();
    let response = client
        .images()
        .generate(request)
        .await
        .expect("OpenAI images");
    assert_eq!(response.data.len(), 2);
    for image in response.data.iter() {
        let async_openai::types::images::Image::B64Json { b64_json, .. } = image.as_ref() else {
            panic!("b64_json expected");
        };
        assert_eq!(rgb(&b64_decode(b64_json)).dimensions(), (64, 48));
    }
    let models = client.models().list().await.expect("models");
    assert_eq!(models.data[0].id, "tiny_lumina_bf16.safetensors");

    // Streaming: partial images, then the final one.
    let text = server
        .post(
            "/v1/images/generations",
            &json!({"prompt": "1girl", "size": "64x48", "steps": 4, "stream": true, "partial_images": 2, "seed": 3}),
        )
        .await
        .text()
        .await
        .unwrap();
    let events = parse_sse(&text);
    let partial: Vec<&Value> = events
        .iter()
        .filter_map(|(e, d)| (e == "image_generation.partial_image").then_some(d))
        .collect();
    assert_eq!(partial.len(), 2, "{events:?}");
    assert_eq!(partial[1]["partial_image_index"], 1);
    let (last, data) = events.last().unwrap();
    assert_eq!(last, "image_generation.completed");
    assert_eq!(data["type"], "image_generation.completed");
    assert_eq!(
        rgb(&b64_decode(data["b64_json"].as_str().unwrap())).dimensions(),
        (64, 48)
    );

    // URLs instead of base64.
    let r: Value = server
        .post(
            "/v1/images/generations",
            &json!({"prompt": "1girl", "size": "64x48", "steps": 2, "response_format": "url"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let url = r["data"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&server.base), "{url}");
    assert_eq!(reqwest::get(url).await.unwrap().status(), 200);
    server.shutdown().await.unwrap();
}

/// OpenAI edits (multipart, as the OpenAI SDKs and Open WebUI send them): image-to-image from the
/// upload, at its own size (down to multiples of 16) unless `size` says, the same pixels as the
/// library's img2img; streamed as `image_edit.*`; masks, missing or extra images and non-images
/// refused with 400 JSON.
#[tokio::test(flavor = "multi_thread")]
async fn openai_edits() {
    use async_openai::types::images::{CreateImageEditRequestArgs, ImageEditInput, ImageInput};
    use reqwest::multipart::{Form, Part};
    let server = TestServer::default().await;
    let init = image::open(common::pipeline_fixture("e2e/init.png"))
        .unwrap()
        .resize_exact(72, 52, image::imageops::FilterType::Triangle)
        .to_rgb8();
    let mut png = Vec::new();
    init.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();

    let client = async_openai::Client::with_config(
        async_openai::config::OpenAIConfig::new()
            .with_api_base(server.url("/v1"))
            .with_api_key("unused"),
    );
    let request = CreateImageEditRequestArgs::default()
        .image(ImageEditInput::Image(ImageInput::from_vec_u8(
            "init.png".into(),
            png.clone(),
        )))
        .prompt("1girl, smile")
        .build()
        .unwrap();
    // Extras (steps, seed, strength) ride along as form fields; async-openai has no place for
    // them, so this request runs the defaults: check only its size.
    let response = client.images().edit(request).await.expect("OpenAI edit");
    let async_openai::types::images::Image::B64Json { b64_json, .. } = response.data[0].as_ref()
    else {
        panic!("b64_json expected");
    };
    assert_eq!(
        rgb(&b64_decode(b64_json)).dimensions(),
        (64, 48),
        "auto size"
    );

    let form = |png: &[u8]| {
        Form::new()
            .text("prompt", "1girl, smile")
            .text("steps", "4")
            .text("seed", "5")
            .text("strength", "0.6")
            .part("image[]", Part::bytes(png.to_vec()).file_name("init.png"))
    };
    let post = |form: Form| {
        server
            .client
            .post(server.url("/v1/images/edits"))
            .multipart(form)
            .send()
    };
    let r: Value = post(form(&png)).await.unwrap().json().await.unwrap();
    let served = rgb(&b64_decode(r["data"][0]["b64_json"].as_str().unwrap()));
    let mut pipeline = Pipeline::<Flex>::builder(common::files()).build().unwrap();
    let request = GenerationRequest::new("1girl, smile")
        .size(64, 48)
        .steps(4)
        .seed(5)
        .init_image(init, 0.6);
    let g = pipeline
        .generate(&request, |_| ControlFlow::Continue(()))
        .unwrap();
    assert_eq!(served, g.images[0].to_rgb8(), "same edit, same pixels");

    let text = post(
        form(&png)
            .text("stream", "true")
            .text("partial_images", "1"),
    )
    .await
    .unwrap()
    .text()
    .await
    .unwrap();
    let events = parse_sse(&text);
    assert!(
        events.iter().any(|(e, _)| e == "image_edit.partial_image"),
        "{events:?}"
    );
    assert_eq!(events.last().unwrap().0, "image_edit.completed");

    for (form, needle) in [
        (
            form(&png).part("mask", Part::bytes(png.clone()).file_name("mask.png")),
            "inpainting",
        ),
        (
            form(&png).part("image[]", Part::bytes(png.clone()).file_name("b.png")),
            "one `image`",
        ),
        (Form::new().text("prompt", "1girl"), "needs `image`"),
        (form(b"not a picture"), "not a PNG"),
        (form(&png).text("size", "64by48"), "WIDTHxHEIGHT"),
        (form(&png).text("steps", "many"), "edit form"),
    ] {
        let (status, message) = error_of(post(form).await.unwrap()).await;
        assert_eq!(status, 400, "{message}");
        assert!(message.contains(needle), "{needle}: {message}");
    }
    let (status, _) = error_of(
        server
            .post("/v1/images/edits", &json!({"prompt": "x"}))
            .await,
    )
    .await;
    assert!(
        (400..500).contains(&status),
        "JSON to a form route: {status}"
    );
    server.shutdown().await.unwrap();
}

/// A1111: txt2img (info as a JSON string with infotexts and seeds), img2img, the lists, options.
#[tokio::test(flavor = "multi_thread")]
async fn automatic1111_api() {
    let server = TestServer::default().await;
    let body = json!({
        "prompt": "1girl", "negative_prompt": "lowres", "width": 64, "height": 48, "steps": 3,
        "cfg_scale": 4.0, "seed": 5, "batch_size": 2, "sampler_name": "Euler a",
        "scheduler": "Automatic", "enable_hr": false, "restore_faces": false
    });
    let r: Value = server
        .post("/sdapi/v1/txt2img", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["images"].as_array().unwrap().len(), 2);
    assert_eq!(r["parameters"]["prompt"], "1girl");
    let info: Value = serde_json::from_str(r["info"].as_str().expect("info is a string")).unwrap();
    assert_eq!(info["seed"], 5);
    assert_eq!(info["all_seeds"], json!([5, 5]));
    assert_eq!(info["sampler_name"], "euler_ancestral");
    assert!(
        info["infotexts"][0]
            .as_str()
            .unwrap()
            .contains("Negative prompt: lowres")
    );

    let init = std::fs::read(common::pipeline_fixture("e2e/init.png")).unwrap();
    use base64::Engine as _;
    let init = base64::engine::general_purpose::STANDARD.encode(init);
    let r: Value = server
        .post(
            "/sdapi/v1/img2img",
            &json!({"prompt": "1girl", "width": 64, "height": 48, "steps": 4, "seed": 1,
                    "init_images": [init], "denoising_strength": 0.5}),
        )
        .await
        .json()
        .await
        .unwrap();
    let info: Value = serde_json::from_str(r["info"].as_str().unwrap()).unwrap();
    assert_eq!(info["denoising_strength"], 0.5);
    assert!(r["parameters"].get("init_images").is_none());
    let (status, message) = error_of(
        server
            .post(
                "/sdapi/v1/img2img",
                &json!({"prompt": "x", "width": 64, "height": 48}),
            )
            .await,
    )
    .await;
    assert_eq!((status, message.contains("init_images")), (400, true));

    let samplers: Value = server.get("/sdapi/v1/samplers").await.json().await.unwrap();
    assert!(
        samplers
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "euler_ancestral" && s["aliases"][0] == "Euler a")
    );
    let schedulers: Value = server
        .get("/sdapi/v1/schedulers")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        schedulers
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "linear_quadratic")
    );
    let models: Value = server
        .get("/sdapi/v1/sd-models")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(models[0]["title"], "tiny_lumina_bf16.safetensors");
    let options: Value = server.get("/sdapi/v1/options").await.json().await.unwrap();
    assert_eq!(
        options["sd_model_checkpoint"],
        "tiny_lumina_bf16.safetensors"
    );
    let ok = server
        .post(
            "/sdapi/v1/options",
            &json!({"sd_model_checkpoint": "tiny_lumina_bf16"}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let (status, message) = error_of(
        server
            .post(
                "/sdapi/v1/options",
                &json!({"sd_model_checkpoint": "other.safetensors"}),
            )
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message.contains("tiny_lumina_bf16.safetensors"),
        "{message}"
    );
    let loras: Value = server.get("/sdapi/v1/loras").await.json().await.unwrap();
    assert_eq!(loras, json!([]), "no adapters folder");
    server.shutdown().await.unwrap();
}

/// A1111 progress while a job runs, then interrupt: the job stops between steps, is marked
/// cancelled, and the worker goes on serving.
#[tokio::test(flavor = "multi_thread")]
async fn progress_interrupt_and_cancel_mid_run() {
    let server = TestServer::start(long_steps(), EngineOptions::default()).await;
    let job: Value = server
        .post("/api/v1/jobs", &small("1girl", 1, 1000))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    wait_running(&server, &id).await;
    // A step's preview follows its progress event: poll until one is there.
    let mut p = Value::Null;
    for _ in 0..400 {
        p = server.get("/sdapi/v1/progress").await.json().await.unwrap();
        if p["current_image"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(p["current_image"].is_string(), "a preview every step: {p}");
    assert!(p["progress"].as_f64().unwrap() > 0.0, "{p}");
    assert_eq!(p["state"]["sampling_steps"], 1000);
    assert!(p["state"]["sampling_step"].as_u64().unwrap() >= 1);
    let p: Value = server
        .get("/sdapi/v1/progress?skip_current_image=true")
        .await
        .json()
        .await
        .unwrap();
    assert!(p["current_image"].is_null());

    assert_eq!(
        server
            .post("/sdapi/v1/interrupt", &json!({}))
            .await
            .status(),
        200
    );
    let events = parse_sse(
        &server
            .get(&format!("/api/v1/jobs/{id}/events"))
            .await
            .text()
            .await
            .unwrap(),
    );
    assert_eq!(events.last().unwrap().0, "cancelled");
    let done: Value = server
        .get(&format!("/api/v1/jobs/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], "cancelled");
    assert!(done["step"].as_u64().unwrap() < 1000);

    // DELETE on a running job, then on a finished one (409) and an unknown one (404).
    let job: Value = server
        .post("/api/v1/jobs", &small("1girl", 2, 1000))
        .await
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().unwrap().to_owned();
    wait_running(&server, &id).await;
    let r = server
        .client
        .delete(server.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done = server.engine.job(&id).unwrap().finished().await;
    assert_eq!(done.status, sakiko_server::Status::Cancelled);
    let r = server
        .client
        .delete(server.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 409);
    let r = server
        .client
        .delete(server.url("/api/v1/jobs/job-nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.0, 404);

    // The worker still serves.
    let r: Value = server
        .post("/sdapi/v1/txt2img", &small("1girl", 3, 2))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["images"].as_array().unwrap().len(), 1);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("sakiko_jobs_total{outcome=\"cancelled\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sakiko_jobs_total{outcome=\"completed\"} 1"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// A full queue answers 429 with Retry-After; a queued job can be cancelled before it runs.
#[tokio::test(flavor = "multi_thread")]
async fn full_queue_is_429() {
    let server = TestServer::start(
        long_steps(),
        EngineOptions {
            queue: 1,
            ..EngineOptions::default()
        },
    )
    .await;
    let running: Value = server
        .post("/api/v1/jobs", &small("1girl", 1, 1000))
        .await
        .json()
        .await
        .unwrap();
    wait_running(&server, running["id"].as_str().unwrap()).await;
    let queued: Value = server
        .post("/api/v1/jobs", &small("1girl", 2, 2))
        .await
        .json()
        .await
        .unwrap();
    let full = server.post("/api/v1/jobs", &small("1girl", 3, 2)).await;
    assert_eq!(full.status(), 429);
    assert_eq!(full.headers()["retry-after"], "5");
    assert_eq!(error_of(full).await.0, 429);
    let health: Value = server.get("/health").await.json().await.unwrap();
    assert_eq!(health["queue_length"], 1);
    assert_eq!(health["running"], json!([running["id"]]));

    let id = queued["id"].as_str().unwrap();
    let r = server
        .client
        .delete(server.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let job: Value = server
        .get(&format!("/api/v1/jobs/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "cancelled");
    assert_eq!(job["step"], 0, "never ran");
    // Graceful shutdown cancels the running job and returns.
    server.shutdown().await.unwrap();
}

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

/// Fifty concurrent requests are all answered, each with its own seed: none lost, none
/// duplicated.
#[tokio::test(flavor = "multi_thread")]
async fn fifty_concurrent_requests() {
    let server = TestServer::start(
        ServerConfig::default(),
        EngineOptions {
            queue: 64,
            ..EngineOptions::default()
        },
    )
    .await;
    let tasks: Vec<_> = (0..50)
        .map(|seed| {
            let client = server.client.clone();
            let url = server.url("/sdapi/v1/txt2img");
            tokio::spawn(async move {
                let body =
                    json!({"prompt": "1girl", "width": 32, "height": 32, "steps": 1, "seed": seed});
                let r: Value = client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                let info: Value = serde_json::from_str(r["info"].as_str().unwrap()).unwrap();
                (
                    seed,
                    info["seed"].as_i64().unwrap(),
                    r["images"].as_array().unwrap().len(),
                )
            })
        })
        .collect();
    let mut seeds = HashSet::new();
    for task in tasks {
        let (asked, got, images) = task.await.unwrap();
        assert_eq!((asked, images), (got, 1));
        seeds.insert(got);
    }
    assert_eq!(seeds.len(), 50);
    let metrics = server.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("sakiko_jobs_total{outcome=\"completed\"} 50"),
        "{metrics}"
    );
    server.shutdown().await.unwrap();
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

/// One worker per device (two here, both on the CPU): two jobs run at once, `/health` lists both
/// devices and jobs, and after a checkpoint switch every worker generates with the new denoiser.
#[tokio::test(flavor = "multi_thread")]
async fn workers_run_jobs_at_once_and_follow_a_switch() {
    let server = TestServer::with_workers(
        ServerConfig {
            context: Context {
                limits: Limits {
                    max_steps: 1000,
                    ..Limits::default()
                },
                ..Context::default()
            },
            ..ServerConfig::default()
        },
        EngineOptions::default(),
        2,
    )
    .await;
    let mut ids = Vec::new();
    for seed in [1, 2] {
        let job: Value = server
            .post("/api/v1/jobs", &small("1girl", seed, 1000))
            .await
            .json()
            .await
            .unwrap();
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        wait_running(&server, id).await;
    }
    let health: Value = server.get("/health").await.json().await.unwrap();
    assert_eq!(health["devices"].as_array().unwrap().len(), 2);
    assert_eq!(health["running"].as_array().unwrap().len(), 2, "{health}");
    for id in &ids {
        let job = server.engine.job(id).unwrap();
        assert!(job.cancel());
        assert_eq!(
            job.finished().await.status,
            sakiko_server::Status::Cancelled
        );
    }

    // A switch reaches one worker through the queue; the other must follow before its next job.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.safetensors");
    std::fs::copy(&server.engine.info().dit, &other).unwrap();
    let info = server.engine.switch_model(other).await.unwrap();
    assert_eq!(info.model_name(), "other.safetensors");
    // Four at once: each worker takes at least one (a free worker takes the next job).
    let jobs: Vec<_> = (0..4)
        .map(|seed| {
            let request: sakiko_server::Settings =
                serde_json::from_value(small("1girl", seed, 30)).unwrap();
            let request = request.to_request(&Context::default()).unwrap();
            server.engine.submit(request).unwrap()
        })
        .collect();
    for job in &jobs {
        let state = job.finished().await;
        assert_eq!(state.status, sakiko_server::Status::Completed);
        assert!(
            state.images[0]
                .infotext
                .contains("Model: other.safetensors"),
            "{}",
            state.images[0].infotext
        );
    }
    server.shutdown().await.unwrap();
}
