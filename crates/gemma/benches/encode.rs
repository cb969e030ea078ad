//! Encoding one 256-token prompt with a mid-size Gemma-2 (D 768, 6 layers) on Flex. First run
//! `tools/reference/gemma_bench.py`, which writes the model to `target/gemma-bench/` and prints
//! transformers' time for the same forward on the same machine.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use burn::backend::Flex;
use criterion::{Criterion, criterion_group, criterion_main};
use sakiko_gemma::{EncoderOptions, Gemma2, Gemma2Config};

fn bench(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/gemma-bench");
    let device = Default::default();
    let config = Gemma2Config::from_file(format!("{dir}/config.json")).unwrap_or_else(|e| {
        panic!(
            "{e}\nrun `.venv-ref/bin/python tools/reference/gemma_bench.py` first to create {dir}"
        )
    });
    let model = Gemma2::<Flex>::load(format!("{dir}/model.safetensors"), Some(config), &device)
        .expect("model");
    let ids: Vec<u32> = (0..256u32).map(|i| 3 + (i * 7919) % 31_000).collect();
    let mut group = c.benchmark_group("gemma");
    group.sample_size(10);
    group.bench_function("encode 256 tokens (mid-size)", |b| {
        b.iter(|| {
            let hidden = model
                .forward(
                    std::slice::from_ref(&ids),
                    EncoderOptions::comfyui(),
                    &device,
                )
                .expect("forward");
            hidden.conditioning().into_data()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
