//! `sakiko serve` as users run it: a real process on loopback. The same request and seed give
//! the same pixels as `sakiko generate`; SIGTERM shuts it down gracefully (exit 0); bad
//! arguments exit 2.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{Value, json};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipeline/tests/fixtures/e2e")
        .join(name)
}

fn model_args() -> Vec<String> {
    [
        "--models-dir",
        &fixture("models").display().to_string(),
        "--text-encoder-config",
        &fixture("text_encoder_config.json").display().to_string(),
        "--vae-config",
        &fixture("vae_config.json").display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Starts `sakiko serve --port 0 …` and returns the process and its base URL (from the line it
/// prints when listening).
fn serve(extra: &[&str]) -> (Child, String) {
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("sakiko"))
        .arg("serve")
        .args(model_args())
        .args(["--port", "0"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sakiko serve starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the server says where it listens")
            .expect("stderr line");
        if let Some(rest) = line.split("at http://").nth(1) {
            let addr = rest.split('/').next().expect("address");
            break format!("http://{addr}");
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, base)
}

#[test]
#[cfg(unix)]
fn serve_matches_generate_and_stops_on_sigterm() {
    let (mut child, base) = serve(&["--api-key", "k"]);
    let client = reqwest::blocking::Client::new();
    let health: Value = client
        .get(format!("{base}/health"))
        .send()
        .and_then(|r| r.json())
        .expect("health");
    assert_eq!(health["backend"], "flex");
    let body = json!({"prompt": "1girl, blue hair", "negative_prompt": "lowres", "width": 64,
                      "height": 48, "steps": 5, "cfg_scale": 4.0, "seed": 42, "sampler_name": "euler"});
    let r: Value = client
        .post(format!("{base}/sdapi/v1/txt2img"))
        .basic_auth("user", Some("k"))
        .json(&body)
        .send()
        .and_then(|r| r.json())
        .expect("txt2img");
    use base64::Engine as _;
    let png = base64::engine::general_purpose::STANDARD
        .decode(r["images"][0].as_str().expect("an image"))
        .expect("base64");
    let served = image::load_from_memory(&png).expect("PNG").to_rgb8();

    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("cli.png");
    let status = Command::new(assert_cmd::cargo::cargo_bin("sakiko"))
        .arg("generate")
        .args(model_args())
        .args([
            "--prompt",
            "1girl, blue hair",
            "--negative",
            "lowres",
            "--width",
            "64",
            "--height",
            "48",
            "--steps",
            "5",
            "--cfg",
            "4",
            "--seed",
            "42",
            "--sampler",
            "euler",
            "--quiet",
            "-o",
        ])
        .arg(&out)
        .status()
        .expect("sakiko generate");
    assert!(status.success());
    let generated = image::open(&out).expect("the CLI's PNG").to_rgb8();
    assert_eq!(served, generated, "same request and seed, same pixels");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = child.wait().expect("the server exits");
    assert_eq!(exit.code(), Some(0), "graceful shutdown exits 0");
}

#[test]
fn bad_arguments_exit_2() {
    let not_a_dir = fixture("vae_config.json").display().to_string();
    let out = Command::new(assert_cmd::cargo::cargo_bin("sakiko"))
        .arg("serve")
        .args(model_args())
        .args(["--port", "0", "--lora-dir", &not_a_dir])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a folder"));

    let out = Command::new(assert_cmd::cargo::cargo_bin("sakiko"))
        .args(["serve", "--port", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "no models given");
}
