//! `sakiko generate` against the end-to-end reference (`tools/reference/pipeline.py`), on Flex
//! and wgpu, and its handling of bad input.

mod common;

use common::{EULER_PROMPT, expected, fixture, lowp, max_abs, model};

use assert_cmd::Command;
use predicates::prelude::*;
use sakiko_weights::WeightFile;

fn sakiko() -> Command {
    Command::cargo_bin("sakiko").expect("the sakiko binary is built")
}

/// `generate` arguments of the reference case `name`, with the models folder and configs.
fn case(name: &str) -> Vec<String> {
    let mut args = vec!["generate".to_owned()];
    args.extend(common::model_args());
    args.push("--quiet".into());
    let rest: Vec<String> = match name {
        "euler" => vec![
            "--prompt",
            EULER_PROMPT,
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
            "--seed",
            "42",
        ]
        .into_iter()
        .map(String::from)
        .collect(),
        "ancestral" => [
            "--prompt",
            "a girl with blue hair under cherry blossoms",
            "--negative",
            "lowres, bad anatomy",
            "--width",
            "48",
            "--height",
            "64",
            "--steps",
            "5",
            "--cfg",
            "4.0",
            "--sampler",
            "euler_ancestral",
            "--seed",
            "7",
            "--batch",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        "img2img" => vec![
            "--prompt".into(),
            "1girl, smile".into(),
            "--width".into(),
            "64".into(),
            "--height".into(),
            "48".into(),
            "--steps".into(),
            "5".into(),
            "--cfg".into(),
            "3.0".into(),
            "--sampler".into(),
            "euler".into(),
            "--seed".into(),
            "3".into(),
            "--init-image".into(),
            fixture("init.png").display().to_string(),
            "--denoise".into(),
            "0.6".into(),
        ],
        other => panic!("no case {other}"),
    };
    args.extend(rest);
    args
}

/// Runs case `name` on `backend` and compares the latent (≤ 1e-4) and the PNGs (≤ 1 level).
fn reproduce(name: &str, backend: &str) {
    reproduce_with(name, backend, &[], &expected(), name);
}

const KEPT: &str = "denoiser weights kept quantised (Q8_0)";

/// [`reproduce`] with `extra` arguments, against case `reference` of `expected`; returns what
/// the command printed on stderr.
fn reproduce_with(
    name: &str,
    backend: &str,
    extra: &[String],
    expected: &WeightFile,
    reference: &str,
) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.png");
    let latent = dir.path().join("latent.safetensors");
    let run = sakiko()
        // Not quiet: callers check the informational lines.
        .args(case(name).into_iter().filter(|a| a != "--quiet"))
        .args(extra)
        .args(["--backend", backend, "--save-latent"])
        .arg(&latent)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
    let (ours, shape) = WeightFile::open(&latent)
        .and_then(|f| f.read_f32("latent"))
        .expect("latent");
    let (want, want_shape) = expected
        .read_f32(&format!("{reference}/latent"))
        .expect("reference");
    assert_eq!(shape, want_shape);
    let err = max_abs(&ours, &want);
    println!("{name} on {backend}: latent max |Δ| {err:.2e}");
    assert!(err < 1e-4, "{name} on {backend}: latent differs by {err}");

    let batch = shape[0];
    let reference = expected
        .read_bytes(&format!("{reference}/image"))
        .expect("image");
    let mut pixels = Vec::new();
    for i in 0..batch {
        let path = if batch == 1 {
            out.clone()
        } else {
            dir.path().join(format!("out_{i}.png"))
        };
        pixels.extend(image::open(&path).expect("png").to_rgb8().into_raw());
    }
    assert_eq!(pixels.len(), reference.len());
    let worst = pixels
        .iter()
        .zip(&reference)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    assert!(
        worst <= 1,
        "{name} on {backend}: pixels differ by {worst} levels"
    );
    stderr
}

#[test]
fn generate_euler_reproduces_the_reference() {
    reproduce("euler", "flex");
}

#[test]
fn generate_with_a_q8_0_gguf_denoiser_reproduces_the_reference() {
    let expected = WeightFile::open(lowp("expected.safetensors")).expect("lowp expected");
    let dit = [
        "--dit".into(),
        lowp("models/diffusion_models/tiny_lumina_q8_0.gguf"),
    ];
    let stderr = reproduce_with("euler", "flex", &dit, &expected, "gguf");
    assert!(!stderr.contains(KEPT), "{stderr}");
}

#[test]
fn flex_refuses_to_keep_weights_quantised() {
    let dir = tempfile::tempdir().expect("tempdir");
    sakiko()
        .args(case("euler"))
        .args([
            "--dit",
            &lowp("models/diffusion_models/tiny_lumina_q8_0.gguf"),
        ])
        .args(["--keep-quantized", "true", "-o"])
        .arg(dir.path().join("out.png"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("invalid keep_quantized true"));
    assert!(!dir.path().join("out.png").exists());
}

#[test]
fn generate_with_fp8_files_reproduces_the_reference() {
    let expected = WeightFile::open(lowp("expected.safetensors")).expect("lowp expected");
    let files = [
        "--dit".into(),
        lowp("models/diffusion_models/tiny_lumina_scaled_fp8.safetensors"),
        "--text-encoder".into(),
        lowp("models/text_encoders/tiny_gemma2_fp8.safetensors"),
        "--vae".into(),
        lowp("models/vae/tiny_ae_fp8.safetensors"),
    ];
    reproduce_with("euler", "flex", &files, &expected, "fp8");
}

#[test]
fn generate_euler_ancestral_batch_reproduces_the_reference() {
    reproduce("ancestral", "flex");
}

#[test]
fn generate_img2img_reproduces_the_reference() {
    reproduce("img2img", "flex");
}

#[cfg(feature = "wgpu")]
#[test]
fn generate_reproduces_the_reference_on_wgpu() {
    for name in ["euler", "ancestral", "img2img"] {
        reproduce(name, "wgpu");
    }
    let expected = WeightFile::open(lowp("expected.safetensors")).expect("lowp expected");
    let dit = [
        "--dit".into(),
        lowp("models/diffusion_models/tiny_lumina_q8_0.gguf"),
    ];
    // Kept quantised on wgpu by default, dequantised at load when asked: both reproduce it.
    let stderr = reproduce_with("euler", "wgpu", &dit, &expected, "gguf");
    assert!(stderr.contains(KEPT), "{stderr}");
    let dit = [
        dit[0].clone(),
        dit[1].clone(),
        "--keep-quantized".into(),
        "false".into(),
    ];
    let stderr = reproduce_with("euler", "wgpu", &dit, &expected, "gguf");
    assert!(!stderr.contains(KEPT), "{stderr}");
}

#[cfg(feature = "wgpu")]
#[test]
fn generate_without_vulkan_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.png");
    sakiko()
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .args(case("euler"))
        .args(["--backend", "wgpu", "-o"])
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: the wgpu backend cannot run here",
        ))
        .stderr(predicate::str::contains("panicked").not());
    assert!(!out.exists());
}

/// A failing `generate`: non-zero exit, `error:` naming `mention`, no output file.
fn fails(extra: &[&str], mention: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.png");
    let mut args = case("euler");
    args.retain(|a| a != "--quiet");
    sakiko()
        .args(args)
        .args(extra)
        .arg("-o")
        .arg(&out)
        .assert()
        .failure()
        .stderr(predicate::str::contains("error:").and(predicate::str::contains(mention)))
        .stderr(predicate::str::contains("panicked").not());
    assert!(!out.exists(), "{} was written", out.display());
}

#[test]
fn generate_rejects_bad_input_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").expect("write");
    let garbage = garbage.display().to_string();
    let te = model("text_encoders/tiny_gemma2_fp16.safetensors");
    let vae = model("vae/tiny_ae.safetensors");
    fails(&["--width", "1000"], "width");
    fails(&["--height", "8"], "height");
    fails(&["--batch", "0"], "batch size");
    fails(
        &["--prompt", "<tags>\n<general>blue hair</tags>"],
        "invalid prompt",
    );
    fails(&["--sampler", "eulr"], "did you mean `euler`");
    fails(&["--dit", "missing.safetensors"], "missing.safetensors");
    fails(&["--dit", &garbage], "garbage.safetensors");
    fails(
        &["--dit", &vae, "--text-encoder", &te, "--vae", &vae],
        "expected a NextDiT denoiser file",
    );
    fails(&["--backend", "cuda"], "cuda");
}

#[test]
fn generate_needs_models_and_a_prompt() {
    sakiko()
        .args(["generate", "--prompt", "x", "-o", "/tmp/never.png"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--models-dir"));
    sakiko()
        .args(["generate", "--models-dir", "x", "-o", "/tmp/never.png"])
        .assert()
        .code(2);
    #[cfg(not(feature = "hub"))]
    sakiko()
        .args([
            "generate",
            "--prompt",
            "x",
            "--hub",
            "owner/repo",
            "-o",
            "/tmp/never.png",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--features hub"));
}

#[cfg(feature = "hub")]
#[test]
fn hub_downloads_fail_clearly_offline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.png");
    sakiko()
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", dir.path())
        .args(["generate", "--prompt", "x", "--hub", "owner/repo", "-o"])
        .arg(&out)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("cannot list owner/repo")
                .and(predicate::str::contains("without network")),
        );
    assert!(!out.exists());
}

#[test]
fn prompt_file_gives_the_same_image_as_prompt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("prompt.xml");
    std::fs::write(&file, EULER_PROMPT).expect("write");
    let mut latents = Vec::new();
    for (i, source) in [
        ["--prompt", EULER_PROMPT],
        ["--prompt-file", file.to_str().expect("utf-8")],
    ]
    .iter()
    .enumerate()
    {
        let mut args = case("euler");
        let at = args.iter().position(|a| a == "--prompt").expect("--prompt");
        args.drain(at..at + 2);
        let latent = dir.path().join(format!("latent{i}.safetensors"));
        sakiko()
            .args(args)
            .args(source)
            .args(["--steps", "2", "--save-latent"])
            .arg(&latent)
            .arg("-o")
            .arg(dir.path().join(format!("out{i}.png")))
            .assert()
            .success();
        latents.push(
            WeightFile::open(&latent)
                .and_then(|f| f.read_f32("latent"))
                .expect("latent"),
        );
    }
    assert_eq!(latents[0], latents[1]);
}

/// Adapters on a denoiser whose Q8_0 weights stay quantised (wgpu): the patched layers are
/// dequantised and merged, the others stay quantised, and the result is Flex's, which merges into
/// weights dequantised at load.
#[cfg(feature = "wgpu")]
#[test]
fn adapters_merge_into_kept_quantised_weights_on_wgpu() {
    use safetensors::tensor::{Dtype, TensorView};
    let dir = tempfile::tempdir().expect("tempdir");
    // A rank-2 kohya LoRA on two of the six Q8_0 layers: `[out, in]` per layer.
    let layers = [
        ("layers_0_attention_qkv", [144, 96]),
        ("layers_0_feed_forward_w2", [96, 128]),
    ];
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = layers
        .iter()
        .enumerate()
        .flat_map(|(i, (name, [out, inp]))| {
            let values = move |n: usize, seed: usize| -> Vec<u8> {
                (0..n)
                    .flat_map(|j| (((j * 7 + seed * 3) % 17) as f32 / 17.0 - 0.5).to_le_bytes())
                    .collect()
            };
            [
                (
                    format!("lora_unet_{name}.lora_down.weight"),
                    vec![2, *inp],
                    values(2 * inp, i),
                ),
                (
                    format!("lora_unet_{name}.lora_up.weight"),
                    vec![*out, 2],
                    values(out * 2, i + 100),
                ),
            ]
        })
        .collect();
    let views = bytes.iter().map(|(name, shape, data)| {
        (
            name.clone(),
            TensorView::new(Dtype::F32, shape.clone(), data).expect("view"),
        )
    });
    let lora = dir.path().join("lowp_lora.safetensors");
    safetensors::serialize_to_file(views, None, &lora).expect("write the LoRA");

    let latent = |backend: &str| {
        let saved = dir.path().join(format!("{backend}.safetensors"));
        let run = sakiko()
            .args(case("euler").into_iter().filter(|a| a != "--quiet"))
            .args([
                "--dit",
                &lowp("models/diffusion_models/tiny_lumina_q8_0.gguf"),
            ])
            .args(["--backend", backend, "--save-latent"])
            .arg(&saved)
            .arg("--lora")
            .arg(format!("{}:0.8", lora.display()))
            .arg("-o")
            .arg(dir.path().join(format!("{backend}.png")))
            .assert()
            .success();
        let stderr = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
        let latent = WeightFile::open(&saved)
            .and_then(|f| f.read_f32("latent"))
            .expect("latent")
            .0;
        (latent, stderr)
    };
    let (flex, _) = latent("flex");
    let (kept, stderr) = latent("wgpu");
    assert!(
        stderr.contains(&format!(
            "{KEPT}; the adapters dequantise the layers they patch"
        )),
        "{stderr}"
    );
    let err = max_abs(&kept, &flex);
    println!("LoRA on kept Q8_0 weights, wgpu against Flex: latent max |Δ| {err:.2e}");
    assert!(err <= 1e-4, "latent differs by {err}");
    // The LoRA changes the result: without it the latent is the reference's.
    let expected = WeightFile::open(lowp("expected.safetensors")).expect("lowp expected");
    let base = expected.read_f32("gguf/latent").expect("reference").0;
    assert!(max_abs(&flex, &base) > 1e-2);
}
