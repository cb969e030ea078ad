//! `sakiko prompt expand` and `sakiko bench --stage prompter` on the tiny trained prompter of
//! `tools/reference/qwen3.py` (greedy, it writes one raw XML tag prompt for its idea).

use std::path::PathBuf;

use assert_cmd::Command;
use predicates::prelude::*;

fn prompter() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../prompter/tests/fixtures/prompter")
}

fn reference() -> serde_json::Value {
    let path = prompter().with_file_name("prompter.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("prompter.json")).expect("json")
}

fn expand(extra: &[&str]) -> Command {
    let mut cmd = Command::cargo_bin("sakiko").expect("the sakiko binary is built");
    cmd.args(["prompt", "expand", "--prompter"])
        .arg(prompter())
        .args(extra);
    cmd
}

fn idea() -> String {
    reference()["idea"].as_str().expect("idea").to_owned()
}

#[test]
fn expand_prints_the_normalised_validated_prompt() {
    let raw = reference()["greedy_text"]
        .as_str()
        .expect("text")
        .to_owned();
    let want = sakiko_prompt::normalize(&raw);
    assert!(want.contains("<copyright>bang dream!</copyright>"));
    expand(&["--temperature", "0", &idea()])
        .assert()
        .success()
        .stdout(format!("{want}\n"));
}

#[test]
fn raw_prints_the_generated_text_exactly() {
    let raw = reference()["greedy_text"]
        .as_str()
        .expect("text")
        .to_owned();
    expand(&["--temperature", "0", "--raw", &idea()])
        .assert()
        .success()
        .stdout(raw);
}

#[test]
fn json_reports_prompt_model_text_and_attempts() {
    let out = expand(&["--temperature", "0", "--json", &idea()])
        .assert()
        .success();
    let v: serde_json::Value =
        serde_json::from_slice(&out.get_output().stdout).expect("one JSON object");
    let prompt = v["prompt"].as_str().expect("prompt");
    assert_eq!(v["model_text"], sakiko_prompt::with_prefix(prompt));
    assert_eq!(v["raw"], reference()["greedy_text"]);
    assert_eq!(v["attempts"], 1);
}

/// Cut short, the XML never closes: exit 1 with the checker's diagnostics, after every attempt.
#[test]
fn output_that_never_validates_exits_1_with_diagnostics() {
    expand(&["--temperature", "0", "--max-new-tokens", "12", &idea()])
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(
            "no valid XML tag prompt in 1 attempt",
        ))
        .stderr(predicate::str::contains("error"));
    expand(&[
        "--temperature",
        "1.5",
        "--attempts",
        "2",
        "--max-new-tokens",
        "12",
        &idea(),
    ])
    .assert()
    .code(1)
    .stderr(predicate::str::contains("in 2 attempt(s)"));
}

#[test]
fn bad_input_is_refused_clearly() {
    expand(&["   "])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("the idea is empty"));
    expand(&["--top-p", "1.5", "a cat"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("top-p 1.5"));
    Command::cargo_bin("sakiko")
        .expect("binary")
        .args(["prompt", "expand", "--prompter", "/nonexistent", "a cat"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not a folder"));
}

#[test]
fn bench_reports_prefill_and_decode_rates() {
    let out = Command::cargo_bin("sakiko")
        .expect("binary")
        .args([
            "bench",
            "--stage",
            "prompter",
            "--preset",
            "tiny",
            "--prompt-tokens",
            "16",
            "--new-tokens",
            "8",
            "--runs",
            "1",
            "--warmup",
            "0",
            "--json",
        ])
        .assert()
        .success();
    let v: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).expect("json");
    assert_eq!(v["stage"], "prompter");
    assert_eq!(v["new_tokens"], 8);
    assert!(v["prefill_tokens_per_s"].as_f64().expect("prefill rate") > 0.0);
    assert!(v["decode_tokens_per_s"].as_f64().expect("decode rate") > 0.0);
}

/// `generate --idea` whose expansion never validates stops before the image models run: exit 1
/// with the checker's findings, and no image written.
#[test]
fn generate_with_an_idea_that_never_validates_writes_nothing() {
    let e2e = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../pipeline/tests/fixtures/e2e");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.png");
    Command::cargo_bin("sakiko")
        .expect("binary")
        .arg("generate")
        .arg("--models-dir")
        .arg(e2e.join("models"))
        .arg("--text-encoder-config")
        .arg(e2e.join("text_encoder_config.json"))
        .arg("--vae-config")
        .arg(e2e.join("vae_config.json"))
        .args(["--width", "64", "--height", "48", "--steps", "1", "--quiet"])
        .args(["--idea", &idea(), "--prompter"])
        .arg(prompter())
        .args(["--temperature", "0", "--max-new-tokens", "12", "-o"])
        .arg(&out)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("no valid XML tag prompt"));
    assert!(!out.exists(), "no image is written");
}
