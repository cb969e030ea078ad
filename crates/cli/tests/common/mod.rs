//! The tiny end-to-end models and a running `sakiko serve`, shared by `tests/serve_cli.rs` and
//! `benches/serve.rs`.

// Each test file uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The `sakiko` binary cargo built for this test or bench.
pub fn sakiko() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sakiko"))
}

/// A file of the pipeline's end-to-end fixture (tiny models in ComfyUI's layout).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipeline/tests/fixtures/e2e")
        .join(name)
}

/// The arguments naming the tiny models.
pub fn model_args() -> Vec<String> {
    let mut args = vec![
        "--models-dir".to_owned(),
        fixture("models").display().to_string(),
    ];
    args.extend(config_args());
    args
}

/// The tiny text encoder's and VAE's config files (their files alone cannot say their sizes).
pub fn config_args() -> Vec<String> {
    [
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
pub fn serve(extra: &[&str]) -> (Child, String) {
    let mut child = sakiko()
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
