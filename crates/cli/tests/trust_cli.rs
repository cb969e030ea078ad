//! No silent garbage and messages a newcomer understands, from the command line: each message
//! asserted as printed, and nothing written when a generation fails.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;

use assert_cmd::Command;

fn model(name: &str) -> PathBuf {
    fixture("models").join(name)
}

/// `generate` on explicit files with `extra` arguments: must fail with exit 1, print exactly
/// `error: {message}` and write nothing.
fn fails_with(files: [&Path; 3], extra: &[&str], message: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.png");
    let output = Command::cargo_bin("sakiko")
        .expect("the sakiko binary is built")
        .arg("generate")
        .arg("--dit")
        .arg(files[0])
        .arg("--text-encoder")
        .arg(files[1])
        .arg("--vae")
        .arg(files[2])
        .args([
            "--quiet", "--prompt", "1girl", "--width", "64", "--height", "48", "--steps", "2",
        ])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        format!("error: {message}\n")
    );
    assert!(!out.exists(), "{} was written", out.display());
}

const DIT: &str = "diffusion_models/tiny_lumina_bf16.safetensors";
const TEXT_ENCODER: &str = "text_encoders/tiny_gemma2_fp16.safetensors";
const VAE: &str = "vae/tiny_ae.safetensors";

#[test]
fn undetectable_configurations_say_what_to_pass() {
    let (dit, te, vae) = (model(DIT), model(TEXT_ENCODER), model(VAE));
    fails_with(
        [&dit, &te, &vae],
        &[],
        &format!(
            "text encoder: cannot tell the configuration of the Gemma-2 text encoder in {}: \
             hidden size 32, which matches no known Gemma-2 (2B: hidden size 2304); pass the \
             model's Hugging Face config.json (`--text-encoder-config config.json`, or \
             `ModelFiles::with_text_encoder_config`)",
            te.display()
        ),
    );
    let te_config = fixture("text_encoder_config.json").display().to_string();
    fails_with(
        [&dit, &te, &vae],
        &["--text-encoder-config", &te_config],
        &format!(
            "VAE: cannot tell the configuration of the VAE in {}: levels of [8, 16, 16, 16] \
             channels, which FLUX's 32 normalisation groups do not divide (8); pass the model's \
             diffusers config.json (`--vae-config config.json`, or `ModelFiles::with_vae_config`)",
            vae.display()
        ),
    );
}

#[test]
fn infinite_weights_stop_the_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dit = dir.path().join("inf.safetensors");
    let key = "model.diffusion_model.layers.0.attention.out.weight";
    sakiko_weights::write_edited(model(DIT), &dit, key, |v| v.fill(f32::INFINITY))
        .expect("edited copy");
    let (te, vae) = (model(TEXT_ENCODER), model(VAE));
    let configs = common::config_args();
    let configs: Vec<&str> = configs.iter().map(String::as_str).collect();
    fails_with(
        [&dit, &te, &vae],
        &configs,
        &format!(
            "denoiser: {}: tensor `{key}` holds 1296 non-finite values (the first, at index 0, is \
             inf); the file is corrupt or was saved from a failed run: use another copy (or load \
             it anyway without the weight check: `sakiko generate --no-weight-check`)",
            dit.display()
        ),
    );
    let mut unchecked = configs.clone();
    unchecked.push("--no-weight-check");
    fails_with(
        [&dit, &te, &vae],
        &unchecked,
        "the denoiser produced non-finite values (NaN or infinity) at step 1 of 2, computing in \
         f32: the weights may be corrupt (keep the weight check on), or this backend computes \
         wrongly here (run `sakiko doctor`); try --dtype f32 or another backend",
    );
}

#[test]
fn a_missing_output_folder_is_reported_before_generating() {
    let (dit, te, vae) = (model(DIT), model(TEXT_ENCODER), model(VAE));
    let configs = common::config_args();
    let mut args: Vec<&str> = configs.iter().map(String::as_str).collect();
    args.extend(["--save-latent", "/nonexistent/latent.safetensors"]);
    let output = Command::cargo_bin("sakiko")
        .expect("the sakiko binary is built")
        .arg("generate")
        .arg("--dit")
        .arg(&dit)
        .arg("--text-encoder")
        .arg(&te)
        .arg("--vae")
        .arg(&vae)
        .args(["--prompt", "1girl", "-o", "out.png"])
        .args(args)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: cannot write /nonexistent/latent.safetensors: the folder /nonexistent does not \
         exist\n"
    );
}
