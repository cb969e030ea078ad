//! Noise equals `torch.manual_seed(seed); torch.randn(n)` on the CPU, bit for bit.

mod common;

use common::Fixtures;
use sakiko_sampling::{RandnKernel, TorchGenerator};

fn mismatches(got: &[f32], want: &[f32]) -> usize {
    assert_eq!(got.len(), want.len());
    got.iter()
        .zip(want)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count()
}

#[test]
fn avx2_kernel_is_bit_exact() {
    let fx = Fixtures::load();
    let names = fx.names("noise/seed");
    let mut checked = 0;
    for name in names.iter().filter(|n| n.contains("/n")) {
        let parts: Vec<&str> = name.split('/').collect();
        let seed: u64 = parts[1].trim_start_matches("seed").parse().unwrap();
        let n: usize = parts[2].trim_start_matches('n').parse().unwrap();
        let want = fx.values(name);
        let got = TorchGenerator::new(seed).randn(n, RandnKernel::Avx2);
        assert_eq!(mismatches(&got, &want), 0, "{name}");
        checked += n;
    }
    assert!(checked > 30_000, "only {checked} values checked");
}

#[test]
fn scalar_kernel_is_bit_exact() {
    let fx = Fixtures::load();
    for seed in [0u64, 42] {
        let want = fx.values(&format!("noise_scalar/seed{seed}/n4099"));
        let got = TorchGenerator::new(seed).randn(4099, RandnKernel::Scalar);
        assert_eq!(mismatches(&got, &want), 0, "seed {seed}");
        // The two kernels really differ, so the test above cannot pass by accident.
        let other = TorchGenerator::new(seed).randn(4099, RandnKernel::Avx2);
        assert!(mismatches(&other, &want) > 500);
    }
}

#[test]
fn successive_draws_continue_the_stream() {
    let fx = Fixtures::load();
    for seed in [0u64, 7] {
        let want = fx.values(&format!("noise/seed{seed}/sequence"));
        let mut g = TorchGenerator::new(seed);
        let got: Vec<f32> = (0..3)
            .flat_map(|_| g.randn(1024, RandnKernel::Avx2))
            .collect();
        assert_eq!(mismatches(&got, &want), 0, "seed {seed}");
    }
    // Small draws share a spare Box–Muller value across calls.
    let want = fx.values("noise/seed9/mixed");
    let mut g = TorchGenerator::new(9);
    let got: Vec<f32> = [3, 3, 20, 1, 16]
        .into_iter()
        .flat_map(|n| g.randn(n, RandnKernel::Avx2))
        .collect();
    assert_eq!(mismatches(&got, &want), 0);
}
