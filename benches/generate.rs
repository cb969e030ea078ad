//! A whole tiny generation (tokenize, encode, 10 euler_ancestral steps with CFG, decode) at
//! 256×256 with every model kept in memory, and the memory-lean default that reloads them;
//! `tools/reference/pipeline_bench.py` times the same generation in PyTorch.
//!
//! `cargo bench --bench generate`
#![allow(missing_docs)]

use std::ops::ControlFlow;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use sakiko_lumina::backend::Flex;
use sakiko_lumina::pipeline::{GenerationRequest, ModelFiles, Pipeline};

fn bench(c: &mut Criterion) {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/pipeline/tests/fixtures/e2e");
    let files = ModelFiles::models_dir(e2e.join("models"))
        .expect("fixture")
        .with_text_encoder_config(e2e.join("text_encoder_config.json"))
        .with_vae_config(e2e.join("vae_config.json"));
    let request = GenerationRequest::new("1girl, blue hair, cherry blossoms")
        .negative("lowres")
        .size(256, 256)
        .steps(10)
        .seed(42);
    for (name, keep) in [("kept in memory", true), ("memory-lean", false)] {
        let mut pipeline = Pipeline::<Flex>::builder(files.clone())
            .keep_in_memory(keep)
            .cache_embeddings(false)
            .build()
            .expect("pipeline");
        c.bench_function(
            &format!("generate 256x256, 10 steps, tiny models, {name}"),
            |b| {
                b.iter(|| {
                    pipeline
                        .generate(&request, |_| ControlFlow::Continue(()))
                        .expect("generation")
                })
            },
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
