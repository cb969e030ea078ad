//! `sakiko bench`: both output forms on the tiny preset, every stage, and bad input (clear error,
//! non-zero exit, no panic). With `--features wgpu` the same runs on wgpu (CI: lavapipe).

use assert_cmd::Command;
use predicates::prelude::*;

fn sakiko() -> Command {
    Command::cargo_bin("sakiko").expect("the sakiko binary is built")
}

fn bench_json(backend: &str, stage: &str) -> serde_json::Value {
    let out = sakiko()
        .args([
            "bench", "--preset", "tiny", "--width", "64", "--height", "48", "--runs", "2",
        ])
        .args(["--backend", backend, "--stage", stage, "--json"])
        .output()
        .expect("runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    // Each phase is on stderr as it ends: what a run stopped by a time limit leaves behind.
    for phase in [
        "random weights made in",
        "warm-up run 1 of 1: ",
        "run 2 of 2: ",
    ] {
        assert!(log.contains(phase), "no `{phase}` in {log}");
    }
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

fn every_stage_reports(backend: &str) {
    for stage in ["denoise", "decode", "encode"] {
        let r = bench_json(backend, stage);
        assert_eq!(r["stage"], stage);
        assert_eq!(r["backend"], backend);
        assert_eq!(r["runs"], 2);
        assert_eq!(r["times_s"].as_array().map(Vec::len), Some(2));
        let (min, median, max) = (
            r["min_s"].as_f64().unwrap(),
            r["median_s"].as_f64().unwrap(),
            r["max_s"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= median && median <= max, "{r}");
        assert!(r["first_run_s"].as_f64().is_some(), "{r}");
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 0.0, "{r}");
        assert!(
            r["settings"]["features"]
                .as_array()
                .is_some_and(|f| !f.is_empty()),
            "{r}"
        );
    }
}

#[test]
fn every_stage_reports_json_on_flex() {
    every_stage_reports("flex");
    assert_eq!(bench_json("flex", "denoise")["dtype"], "f32");
}

#[cfg(feature = "wgpu")]
#[test]
fn every_stage_reports_json_on_wgpu() {
    every_stage_reports("wgpu");
}

#[test]
fn text_form_shows_what_ran() {
    sakiko()
        .args([
            "bench", "--preset", "tiny", "--width", "32", "--height", "32", "--runs", "1",
        ])
        .args(["--dtype", "bf16"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Denoise on flex (bf16; "))
        .stdout(predicate::str::contains("rayon, simd"))
        .stdout(predicate::str::contains("median"));
}

#[test]
fn config_files_replace_the_preset() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vae.json");
    std::fs::write(
        &config,
        r#"{"latent_channels": 16, "block_out_channels": [32, 32], "layers_per_block": 1}"#,
    )
    .unwrap();
    sakiko()
        .args([
            "bench", "--stage", "decode", "--width", "32", "--height", "32", "--runs", "1",
        ])
        .arg("--vae-config")
        .arg(&config)
        .arg("--json")
        .assert()
        .success()
        .stdout(predicate::str::contains(r#""stage":"decode""#));
}

#[test]
fn bad_input_is_a_clear_error() {
    let cases: [(&[&str], &str); 7] = [
        (
            &["--width", "1000"],
            "--width 1000 must be a multiple of 16",
        ),
        (&["--height", "0"], "--height 0 must be a multiple of 16"),
        (&["--preset", "huge"], "invalid value 'huge'"),
        (&["--stage", "upscale"], "invalid value 'upscale'"),
        (&["--runs", "0"], "--runs must be at least 1"),
        (&["--dtype", "f64"], "invalid value 'f64'"),
        (&["--prompt-tokens", "0"], "must be at least 1"),
    ];
    for (args, message) in cases {
        sakiko()
            .arg("bench")
            .args(args)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(message))
            .stderr(predicate::str::contains("panicked").not());
    }
}

#[test]
fn unreadable_config_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dit.json");
    std::fs::write(&config, "{ not json").unwrap();
    for file in [config.clone(), dir.path().join("missing.json")] {
        sakiko()
            .args(["bench", "--preset", "tiny", "--dit-config"])
            .arg(&file)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(file.to_string_lossy().as_ref()))
            .stderr(predicate::str::contains("panicked").not());
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_backend_not_compiled_in_says_how_to_get_it() {
    sakiko()
        .args(["bench", "--preset", "tiny", "--backend", "cuda"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--features cuda"));
}

#[test]
fn the_text_encoder_benches_in_half_precision() {
    let out = sakiko()
        .args([
            "bench", "--preset", "tiny", "--stage", "encode", "--runs", "1",
        ])
        .args(["--dtype", "bf16", "--json"])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["dtype"], "bf16");
    assert_eq!(json["stage"], "encode");
}
