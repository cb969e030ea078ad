//! `sakiko generate` with adapters against the reference generation of
//! `tools/reference/adapters.py` (a PEFT LoRA fused by diffusers into the denoiser, a LyCORIS LoKr
//! on the text encoder in LyCORIS's forward), one from `--lora`, one from a prompt tag; the PNG
//! metadata; bad adapter input.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use sakiko_weights::WeightFile;

fn sakiko() -> Command {
    Command::cargo_bin("sakiko").expect("the sakiko binary is built")
}

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pipeline/tests/fixtures")
        .join(path)
}

const PROMPT: &str =
    "<tags>\n<special>1girl</special>\n<general>blue hair, smile</general>\n</tags>";

/// The reference case's arguments (`euler` of the e2e fixture at seed 11).
fn base_args() -> Vec<String> {
    let s = |p: &str| fixture(p).display().to_string();
    [
        "generate",
        "--models-dir",
        &s("e2e/models"),
        "--text-encoder-config",
        &s("e2e/text_encoder_config.json"),
        "--vae-config",
        &s("e2e/vae_config.json"),
        "--lora-dir",
        &s("e2e_adapters/loras"),
        "--width",
        "64",
        "--height",
        "48",
        "--steps",
        "6",
        "--cfg",
        "4.5",
        "--sampler",
        "euler",
        "--scheduler",
        "linear_quadratic",
        "--seed",
        "11",
        "--quiet",
    ]
    .map(String::from)
    .to_vec()
}

/// Generates with `extra` arguments and `prompt`; returns the latent and the PNG's text chunks.
fn generate(extra: &[&str], prompt: &str) -> (Vec<f32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (out, latent) = (
        dir.path().join("out.png"),
        dir.path().join("latent.safetensors"),
    );
    sakiko()
        .args(base_args())
        .args(extra)
        .args(["--prompt", prompt, "--save-latent"])
        .arg(&latent)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let (values, _) = WeightFile::open(&latent)
        .unwrap()
        .read_f32("latent")
        .unwrap();
    let text = sakiko_pipeline::read_png_text(&out)
        .unwrap()
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect();
    (values, text)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn generate_with_a_lora_and_a_prompt_tag_reproduces_the_reference() {
    let expected = WeightFile::open(fixture("e2e_adapters/expected.safetensors")).unwrap();
    let (want, _) = expected.read_f32("adapters/latent").unwrap();
    let tagged = format!("{PROMPT} <lora:tiny_te_lokr:0.6>");
    let (ours, text) = generate(&["--lora", "tiny_dit_lora:0.8"], &tagged);
    let err = max_diff(&ours, &want);
    println!("adapters: latent max |Δ| {err:.2e}");
    assert!(err < 1e-4, "latent differs by {err}");
    // The tag left the prompt; the metadata lists both adapters with A1111's hashes.
    let hash = sakiko_adapters::short_hash(fixture("e2e_adapters/loras/tiny_dit_lora.safetensors"))
        .unwrap();
    let listed = format!("adapters: tiny_dit_lora:0.8:0.8:{hash}, tiny_te_lokr:0.6:0.6:");
    assert!(text.contains(&listed), "{text}");
    assert!(text.contains("<lora:tiny_te_lokr:0.6>"), "{text}");
    let hashes = format!("Lora hashes: \"tiny_dit_lora: {hash}, tiny_te_lokr: ");
    assert!(text.contains(&hashes), "{text}");
    assert!(
        !text.contains("prompt: <lora"),
        "the tag left the prompt: {text}"
    );
    // Negative control: without the adapters the latent is far from the reference.
    let (plain, _) = generate(&[], PROMPT);
    let off = max_diff(&plain, &want);
    assert!(
        off > 100.0 * err.max(1e-6),
        "the adapters change little: {off}"
    );
}

#[test]
fn bad_adapters_fail_before_generating() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.png");
    let run = |extra: &[&str], prompt: &str, code: i32, mention: &str| {
        sakiko()
            .args(base_args())
            .args(extra)
            .args(["--prompt", prompt, "-o"])
            .arg(&out)
            .assert()
            .code(code)
            .stderr(predicate::str::contains(mention));
        assert!(!out.exists(), "nothing written");
    };
    run(
        &["--lora", "tiny_dit_lroa"],
        PROMPT,
        1,
        "did you mean `tiny_dit_lora`",
    );
    run(
        &[],
        "1girl <lora:missing:1>",
        1,
        "no adapter named `missing`",
    );
    run(
        &[],
        "1girl <lora:tiny_dit_lora:x>",
        2,
        "`x` is not a strength",
    );
    // A model file is not an adapter.
    let model = fixture("e2e/models/vae/tiny_ae.safetensors");
    run(
        &["--lora", model.to_str().unwrap()],
        PROMPT,
        1,
        "not an adapter",
    );
}

#[test]
fn inspect_describes_adapters() {
    let lora = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../adapters/tests/fixtures/kohya_lora.safetensors");
    let out = sakiko().arg("inspect").arg(&lora).assert().success();
    let json: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let a = &json["adapter"];
    assert_eq!(a["formats"], serde_json::json!(["LoRA"]));
    assert_eq!(a["rank"], 4);
    assert!(a["targets"]["dit_layers"].as_u64().unwrap() > 0);
    assert!(a["targets"]["text_encoder_layers"].as_u64().unwrap() > 0);
    assert_eq!(a["targets"]["unmatched"], serde_json::json!([]));
    let hash = sakiko_adapters::short_hash(&lora).unwrap();
    assert_eq!(a["hash"], hash.as_str());
}
