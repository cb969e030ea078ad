//! Prefill (128 tokens) and cached decoding (31 steps) of a mid-size Qwen3 (D 512, 8 layers) on
//! Flex. First run `tools/reference/qwen3_bench.py`, which writes the model to
//! `target/qwen3-bench/` and prints transformers' rates for the same work on the same machine.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use burn::backend::Flex;
use burn::tensor::FloatDType;
use criterion::{Criterion, criterion_group, criterion_main};
use sakiko_prompter::Qwen3;

fn bench(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/qwen3-bench");
    let device = Default::default();
    let model = Qwen3::<Flex>::load(dir, FloatDType::F32, &device).unwrap_or_else(|e| {
        panic!(
            "{e}\nrun `.venv-ref/bin/python tools/reference/qwen3_bench.py` first to create {dir}"
        )
    });
    let vocab = model.config().vocab_size as u32;
    let ids: Vec<u32> = (0..128u32).map(|i| 1 + i * 7919 % (vocab - 1)).collect();
    let mut group = c.benchmark_group("qwen3");
    group.sample_size(10);
    group.bench_function("prefill 128 tokens (mid-size)", |b| {
        b.iter(|| {
            let mut cache = model.new_cache();
            model.next_logits(&ids, &mut cache).expect("prefill")
        })
    });
    group.bench_function("decode 31 cached steps after 128 tokens (mid-size)", |b| {
        let mut prefilled = model.new_cache();
        model.next_logits(&ids, &mut prefilled).expect("prefill");
        b.iter(|| {
            let mut cache = prefilled.clone();
            let mut id = 7;
            for _ in 0..31 {
                let logits = model.next_logits(&[id], &mut cache).expect("step");
                id = (0..logits.len())
                    .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
                    .unwrap_or(0) as u32;
            }
            id
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
