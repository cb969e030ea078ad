//! `sakiko doctor`: the parity suite on Flex (and on wgpu under the feature: lavapipe in CI), both
//! output forms, and bad input. The negative control (a broken kernel fails the verdict) is in
//! `sakiko-pipeline`'s `tests/e2e/doctor.rs`.

use assert_cmd::Command;
use predicates::prelude::*;

fn sakiko() -> Command {
    Command::cargo_bin("sakiko").expect("the sakiko binary is built")
}

fn json(args: &[&str]) -> serde_json::Value {
    let output = sakiko()
        .args(["doctor", "--json"])
        .args(args)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

/// Every check of every path ran and passed (or was skipped as not applying).
fn all_passed(report: &serde_json::Value) -> usize {
    assert_eq!(report["passed"], true, "{report:#}");
    let mut ran = 0;
    for path in report["paths"].as_array().expect("paths") {
        for check in path["checks"].as_array().expect("checks") {
            match check["status"].as_str() {
                Some("pass") => {
                    let diff = check["max_abs_diff"].as_f64().expect("diff");
                    assert!(diff <= check["tolerance"].as_f64().expect("tolerance"));
                    ran += 1;
                }
                Some("skip") => assert!(check["detail"].is_string()),
                other => panic!("{other:?}: {check:#}"),
            }
        }
    }
    ran
}

#[test]
fn flex_passes_and_says_what_ran() {
    sakiko()
        .arg("doctor")
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "sakiko doctor: flex (flex), f32;",
        ))
        .stdout(predicate::str::contains("rayon, simd"))
        .stdout(predicate::str::contains("reference: flex, f32"))
        .stdout(predicate::str::contains(
            "  ok    attention, batch 2, ragged keys (77, 40)",
        ))
        .stdout(predicate::str::contains("  skip  f16 overflow guard"))
        .stdout(predicate::str::ends_with("verdict: all 14 checks passed\n"));
}

#[test]
fn flex_json_in_half_precision() {
    for dtype in ["bf16", "f16"] {
        let report = json(&["--dtype", dtype]);
        assert_eq!(report["backend"], "flex");
        assert_eq!(report["dtype"], dtype);
        assert_eq!(report["reference"], "flex, f32");
        assert_eq!(report["settings"]["features"][0], "rayon");
        let ran = all_passed(&report);
        assert_eq!(ran, if dtype == "f16" { 15 } else { 14 });
    }
}

#[test]
fn doctor_rejects_bad_input() {
    #[cfg(not(feature = "cuda"))]
    sakiko()
        .args(["doctor", "--backend", "cuda"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error: this `sakiko` was built without the cuda backend; rebuild it with \
             `cargo install sakiko-cli --features cuda`",
        ));
    sakiko()
        .args(["doctor", "--dtype", "f8"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("invalid value 'f8'"));
}

#[cfg(feature = "wgpu")]
#[test]
fn wgpu_passes_with_and_without_fusion() {
    let report = json(&["--backend", "wgpu"]);
    assert_eq!(report["backend"], "wgpu");
    assert_eq!(report["settings"]["features"][0], "autotune");
    assert!(report["adapter"].is_string(), "{report:#}");
    let paths: Vec<&str> = report["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(paths, ["fusion", "no fusion"]);
    assert_eq!(all_passed(&report), 28);
    // Lavapipe has no bf16: a clear error, exit 2. (Each run takes minutes of autotuning on
    // lavapipe, so CI runs f32 only.)
    sakiko()
        .args(["doctor", "--backend", "wgpu", "--dtype", "bf16"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error: the wgpu backend cannot compute in bf16 on this device; choose another --dtype",
        ));
}

#[cfg(feature = "wgpu")]
#[test]
fn doctor_without_vulkan_fails_clearly() {
    sakiko()
        .env("VK_ICD_FILENAMES", "/nonexistent.json")
        .env("VK_DRIVER_FILES", "/nonexistent.json")
        .args(["doctor", "--backend", "wgpu"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error: the wgpu backend cannot run here",
        ))
        .stderr(predicate::str::contains("panicked").not());
}
