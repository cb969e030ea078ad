//! `sakiko_pipeline::doctor`: passes on Flex in every dtype, and catches a broken kernel.

use burn::tensor::Tensor;
use sakiko_pipeline::doctor::{self, CheckResult, Kernels, Status};

use super::*;

fn show(checks: &[CheckResult]) {
    for c in checks {
        println!(
            "{:?} {:50} {:>10} (tol {:.2e}) {}",
            c.status,
            c.name,
            c.max_abs_diff.map_or("—".into(), |d| format!("{d:.2e}")),
            c.tolerance,
            c.detail.as_deref().unwrap_or("")
        );
    }
}

#[test]
fn flex_passes_in_every_dtype() {
    let device = Default::default();
    for dtype in [FloatDType::F32, FloatDType::BF16, FloatDType::F16] {
        let checks = doctor::run::<Flex, Flex>(&device, &device, dtype, &Kernels::default());
        println!("{dtype:?}");
        show(&checks);
        assert!(doctor::passed(&checks), "{dtype:?}");
        let skipped = checks.iter().filter(|c| c.status == Status::Skip).count();
        assert_eq!(skipped, usize::from(dtype != FloatDType::F16), "{dtype:?}");
    }
}

/// An attention that reads the other sample's keys and values (the wrong batch index, as an
/// offset bug in a kernel would).
fn wrong_batch(
    q: Tensor<Flex, 4>,
    k: Tensor<Flex, 4>,
    v: Tensor<Flex, 4>,
    lens: Option<&[usize]>,
) -> Tensor<Flex, 4> {
    let flip = |t: Tensor<Flex, 4>| t.flip([0]);
    sakiko_ops::attention(q, flip(k), flip(v), lens)
}

/// The negative control: the same suite with a broken kernel fails exactly the checks that use
/// it at batch 2 (at batch 1 there is no other sample to read).
#[test]
fn a_broken_attention_fails_the_verdict() {
    let device = Default::default();
    let broken = Kernels {
        attention: wrong_batch,
    };
    let checks = doctor::run::<Flex, Flex>(&device, &device, FloatDType::F32, &broken);
    show(&checks);
    assert!(!doctor::passed(&checks));
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        failed,
        [
            "attention, batch 2",
            "attention, batch 2, ragged keys (77, 40)"
        ]
    );
}
