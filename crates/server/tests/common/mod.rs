//! A real server on loopback with the tiny fixture models, and small HTTP helpers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Flex;
use sakiko_pipeline::ModelFiles;
use sakiko_server::{Context, Engine, EngineOptions, Limits, ServerConfig};
use serde_json::Value;

pub fn pipeline_fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipeline/tests/fixtures")
        .join(rel)
}

pub fn files() -> ModelFiles {
    ModelFiles::models_dir(pipeline_fixture("e2e/models"))
        .expect("fixture models")
        .with_text_encoder_config(pipeline_fixture("e2e/text_encoder_config.json"))
        .with_vae_config(pipeline_fixture("e2e/vae_config.json"))
}

pub struct TestServer {
    pub base: String,
    pub engine: Arc<Engine>,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: ServerConfig, options: EngineOptions) -> TestServer {
        Self::with_workers(config, options, 1).await
    }

    /// A server whose engine has `workers` workers (all on the CPU: Flex has one device).
    pub async fn with_workers(
        config: ServerConfig,
        options: EngineOptions,
        workers: usize,
    ) -> TestServer {
        let devices = vec![Default::default(); workers];
        let engine = Engine::start::<Flex>(files(), devices, options).expect("engine");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(sakiko_server::serve(
            listener,
            Arc::clone(&engine),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        TestServer {
            base,
            engine,
            client: reqwest::Client::new(),
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub async fn default() -> TestServer {
        Self::start(ServerConfig::default(), EngineOptions::default()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    /// Stops the server (as on SIGTERM) and returns what `serve` returned.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle
            .take()
            .expect("running")
            .await
            .expect("serve task")
    }
}

/// The body of an error answer: `{"error": {"message", "type", "code"}}` with the status as code.
pub async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"]["code"], status, "{body}");
    (
        status,
        body["error"]["message"]
            .as_str()
            .expect("message")
            .to_owned(),
    )
}

/// Server-sent events `(event, data)` of a finished stream.
pub fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut event = "message".to_owned();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            (!data.is_empty()).then(|| (event, serde_json::from_str(&data).expect("JSON data")))
        })
        .collect()
}

/// A small, fast request for the tiny models.
pub fn small(prompt: &str, seed: i64, steps: usize) -> Value {
    serde_json::json!({"prompt": prompt, "width": 64, "height": 48, "steps": steps, "seed": seed})
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

/// Jobs long enough to be caught running, with a preview at every step.
pub fn long_steps() -> ServerConfig {
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

/// Waits until `job` is running (polling its state).
pub async fn wait_running(server: &TestServer, id: &str) {
    for _ in 0..2000 {
        let job: Value = server
            .get(&format!("/api/v1/jobs/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if job["status"] == "running" && job["step"].as_u64().unwrap_or(0) >= 1 {
            return;
        }
        assert_ne!(
            job["status"], "completed",
            "the job finished before the test could act"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("job {id} never started");
}
