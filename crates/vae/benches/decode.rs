//! Decode time of a mid-size FLUX-layout VAE (block channels 32/64/128/128) on Flex, for comparison
//! with PyTorch on the same machine. First run `tools/reference/vae_bench.py`, which writes the
//! model to `target/vae-bench/` and prints PyTorch's time; then `cargo bench -p sakiko-vae --bench decode`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use sakiko_vae::Vae;

fn bench(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/vae-bench");
    let device = Default::default();
    let vae = Vae::<Flex>::load(dir, &device).unwrap_or_else(|e| {
        panic!("{e}\nrun `.venv-ref/bin/python tools/reference/vae_bench.py` first to create {dir}")
    });
    let z = Tensor::<Flex, 4>::random([1, 16, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let mut group = c.benchmark_group("vae");
    group.sample_size(10);
    group.bench_function("decode 1×16×32×32 → 256×256 (mid-size model)", |b| {
        b.iter(|| {
            let out = vae.decode(z.clone()).expect("decode");
            // Force the computation (backends may be lazy).
            out.into_data()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
