//! `sakiko tokenize | encode | schedule | inspect` against the end-to-end reference
//! (`tools/reference/pipeline.py`), and their handling of bad input.

mod common;

use common::{EULER_PROMPT, expected, fixture, ids, lowp, max_abs, model};

use assert_cmd::Command;
use predicates::prelude::*;
use sakiko_weights::WeightFile;

fn sakiko() -> Command {
    Command::cargo_bin("sakiko").expect("the sakiko binary is built")
}

#[test]
fn tokenize_prints_ids_and_count() {
    let te = model("text_encoders/tiny_gemma2_fp16.safetensors");
    let output = sakiko()
        .args(["tokenize", "--text-encoder", &te, "--prefix", EULER_PROMPT])
        .output()
        .expect("run");
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let want = ids("euler/ids_positive");
    assert_eq!(json["count"], want.len());
    assert_eq!(json["ids"], serde_json::json!(want));
    // Without --prefix the text is taken as given; the prefix is never added twice.
    let with = format!("{} {EULER_PROMPT}", sakiko_prompt::PREFIX);
    for args in [vec![with.as_str()], vec!["--prefix", with.as_str()]] {
        let output = sakiko()
            .args(["tokenize", "--text-encoder", &te])
            .args(args)
            .output()
            .expect("run");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(json["ids"], serde_json::json!(want));
    }
    sakiko()
        .args(["tokenize", "--text-encoder", &te, ""])
        .assert()
        .success()
        .stdout("{\"count\":1,\"ids\":[2]}\n");
}

#[test]
fn encode_writes_the_conditioning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cond.safetensors");
    sakiko()
        .args([
            "encode",
            "--text-encoder",
            &model("text_encoders/tiny_gemma2_fp16.safetensors"),
            "--text-encoder-config",
            &fixture("text_encoder_config.json").display().to_string(),
            "--prefix",
            "-o",
        ])
        .arg(&out)
        .arg(EULER_PROMPT)
        .assert()
        .success();
    let (cond, shape) = WeightFile::open(&out)
        .and_then(|f| f.read_f32("cond"))
        .expect("cond");
    let (want, want_shape) = expected().read_f32("euler/cond").expect("reference");
    assert_eq!(shape, want_shape);
    assert_eq!(shape, [1, 124, 32]);
    let err = max_abs(&cond, &want);
    assert!(err < 5e-5, "cond differs by {err}");
}

fn sigmas(args: &[&str]) -> Vec<f32> {
    let output = sakiko().arg("schedule").args(args).output().expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    serde_json::from_value(json["sigmas"].clone()).expect("numbers")
}

#[test]
fn schedule_prints_the_reference_sigmas() {
    for (name, args) in [
        (
            "euler",
            vec!["--scheduler", "linear_quadratic", "--steps", "6"],
        ),
        (
            "img2img",
            vec![
                "--scheduler",
                "linear_quadratic",
                "--steps",
                "5",
                "--denoise",
                "0.6",
            ],
        ),
    ] {
        let ours = sigmas(&args);
        let (want, _) = expected()
            .read_f32(&format!("{name}/sigmas"))
            .expect("reference");
        assert_eq!(ours.len(), want.len());
        assert!(
            ours.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6),
            "{ours:?} vs {want:?}"
        );
    }
    sakiko()
        .args(["schedule", "--scheduler", "karas", "--steps", "4"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("did you mean `karras`"));
}

#[test]
fn inspect_reports_component_layout_and_config() {
    let output = sakiko()
        .args([
            "inspect",
            &model("diffusion_models/tiny_lumina_bf16.safetensors"),
        ])
        .output()
        .expect("run");
    assert!(output.status.success());
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let dit = &json["components"][0];
    assert_eq!(dit["component"], "dit");
    assert_eq!(dit["layout"], "original");
    assert_eq!(dit["prefix"], "model.diffusion_model.");
    assert_eq!(dit["config"]["hidden_size"], 36);
    assert_eq!(dit["config"]["num_kv_heads"], 1);
    assert_eq!(json["dtypes"]["BF16"].as_u64().map(|n| n > 10), Some(true));
    // The tiny VAE's group count cannot be detected: reported, not hidden.
    let output = sakiko()
        .args(["inspect", &model("vae/tiny_ae.safetensors")])
        .output()
        .expect("run");
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(json["components"][0]["component"], "vae");
    assert!(json["components"][0]["detection_error"].is_string());
    sakiko()
        .args(["inspect", &fixture("init.png").display().to_string()])
        .assert()
        .failure()
        .stderr(predicate::str::contains("init.png"));
}

#[test]
fn inspect_reports_gguf_types() {
    sakiko()
        .args([
            "inspect",
            &lowp("models/diffusion_models/tiny_lumina_q8_0.gguf"),
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("\"Q8_0\"")
                .and(predicate::str::contains("\"dit\""))
                .and(predicate::str::contains("\"format\": \"gguf\""))
                .and(predicate::str::contains("\"architecture\": \"lumina2\"")),
        );
}

#[test]
fn text_commands_reject_bad_input_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("cond.safetensors");
    let vae = model("vae/tiny_ae.safetensors");
    let spm = dir.path().join("tokenizer.model");
    let spiece = WeightFile::open(model("text_encoders/tiny_gemma2_fp16.safetensors"))
        .and_then(|f| f.read_bytes("spiece_model"))
        .expect("spiece_model");
    std::fs::write(&spm, spiece).expect("write");
    let (out_s, spm_s) = (out.display().to_string(), spm.display().to_string());
    // A file without a tokenizer, a missing file, a VAE given as the text encoder.
    for (args, mention) in [
        (
            vec!["tokenize", "--text-encoder", &vae, "x"],
            "embeds no tokenizer",
        ),
        (
            vec!["tokenize", "--text-encoder", "missing.safetensors", "x"],
            "missing.safetensors",
        ),
        (
            vec![
                "encode",
                "--text-encoder",
                &vae,
                "--tokenizer",
                &spm_s,
                "-o",
                &out_s,
                "x",
            ],
            "tiny_ae.safetensors",
        ),
    ] {
        sakiko()
            .args(&args)
            .assert()
            .failure()
            .stderr(predicate::str::contains("error:").and(predicate::str::contains(mention)))
            .stderr(predicate::str::contains("panicked").not());
        assert!(!out.exists());
    }
    sakiko()
        .args(["inspect", "missing.safetensors"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing.safetensors"));
}
