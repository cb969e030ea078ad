//! `sakiko serve` as users run it: a real process on loopback. The same request and seed give
//! the same pixels as `sakiko generate`; SIGTERM shuts it down gracefully (exit 0); bad
//! arguments exit 2.

mod common;

use std::process::Command;

use common::{fixture, model_args, sakiko, serve};
use serde_json::{Value, json};

#[test]
#[cfg(unix)]
fn serve_matches_generate_and_stops_on_sigterm() {
    // Two workers (`--devices`: on Flex both share the CPU).
    let (mut child, base) = serve(&["--api-key", "k", "--devices", "0,0"]);
    let client = reqwest::blocking::Client::new();
    let health: Value = client
        .get(format!("{base}/health"))
        .send()
        .and_then(|r| r.json())
        .expect("health");
    assert_eq!(health["backend"], "flex");
    assert_eq!(health["devices"].as_array().map(Vec::len), Some(2));
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
    let status = sakiko()
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
    let out = sakiko()
        .arg("serve")
        .args(model_args())
        .args(["--port", "0", "--lora-dir", &not_a_dir])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a folder"));

    let out = sakiko()
        .args(["serve", "--port", "0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "no models given");
}
