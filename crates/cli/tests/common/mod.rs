//! The tiny end-to-end models, their reference outputs and a running `sakiko serve`, shared by the
//! CLI tests and `benches/serve.rs`.

// Each test file uses a part.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use sakiko_weights::WeightFile;

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

/// A file of the tiny models folder, as an argument.
pub fn model(name: &str) -> String {
    fixture("models").join(name).display().to_string()
}

/// The outputs of `tools/reference/pipeline.py` for the reference cases.
pub fn expected() -> WeightFile {
    WeightFile::open(fixture("expected.safetensors")).expect("expected.safetensors")
}

/// Token ids stored (as i64) under `key` in the reference outputs.
pub fn ids(key: &str) -> Vec<u32> {
    expected()
        .read_bytes(key)
        .expect("ids")
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as u32)
        .collect()
}

/// The largest elementwise |a − b|.
pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The low-precision files of `tools/reference/lowp.py`.
pub fn lowp(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipeline/tests/fixtures/lowp")
        .join(name)
        .display()
        .to_string()
}

/// The prompt of the reference case `euler`.
pub const EULER_PROMPT: &str =
    "<tags>\n<special>1girl</special>\n<general>blue hair, smile</general>\n</tags>";
