//! The native job API: events and previews, progress, interrupt and cancel, the queue limit,
//! concurrent clients, several workers.

use std::collections::HashSet;
use std::ops::ControlFlow;

use burn::backend::Flex;
use sakiko_pipeline::{GenerationRequest, Pipeline};
use sakiko_server::{Context, EngineOptions, Limits, ServerConfig};
use serde_json::{Value, json};

use crate::common::{
    self, TestServer, b64_decode, error_of, long_steps, parse_sse, small, wait_running,
};
use crate::rgb;

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
