//! One CFG denoise step of NextDiT on Flex: cond and uncond in one batch of 2 (captions of 96 and
//! 8 tokens, so the joint mask is used), 64×64 latent (1024 image tokens), at a tiny and a
//! mid-size configuration, in f32 and (mid only) bf16. First run `tools/reference/nextdit_bench.py`,
//! which writes the models to `target/nextdit-bench/` and prints PyTorch's time for the same step
//! on the same machine.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use burn::backend::Flex;
use burn::tensor::{Distribution, FloatDType, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use sakiko_nextdit::NextDit;

fn bench(c: &mut Criterion) {
    let device = Default::default();
    let mut group = c.benchmark_group("nextdit");
    group.sample_size(10);
    for (name, dtype) in [
        ("tiny", FloatDType::F32),
        ("mid", FloatDType::F32),
        ("mid", FloatDType::BF16),
    ] {
        let dir = format!(
            "{}/../../target/nextdit-bench/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let model = NextDit::<Flex>::load_as(&dir, dtype, &device).unwrap_or_else(|e| {
            panic!("{e}\nrun `.venv-ref/bin/python tools/reference/nextdit_bench.py` first to create {dir}")
        });
        let f = model.config().cap_feat_dim;
        let x = Tensor::<Flex, 4>::random([2, 16, 64, 64], Distribution::Normal(0.0, 1.0), &device);
        let cap = Tensor::<Flex, 3>::random([2, 96, f], Distribution::Normal(0.0, 1.0), &device);
        group.bench_function(
            format!("CFG step, batch 2, 1024 image tokens ({name}, {dtype:?})"),
            |b| {
                b.iter(|| {
                    let out = model
                        .forward(x.clone(), &[0.3, 0.3], cap.clone(), &[96, 8])
                        .expect("forward");
                    out.into_data()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
