//! One CFG denoise step (positive and negative prompt, as the samplers call it) through the
//! pipeline's `LuminaDenoiser`, on the tiny end-to-end models; `tools/reference/pipeline_bench.py`
//! times PyTorch on the same models and inputs.
//!
//! `cargo bench --bench denoise_step`
#![allow(missing_docs)]

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use sakiko_lumina::backend::Flex;
use sakiko_lumina::burn::tensor::Tensor;
use sakiko_lumina::nextdit::NextDit;
use sakiko_lumina::pipeline::{Conditioning, LuminaDenoiser, TextEncoder};
use sakiko_lumina::sampling::{Denoiser, RandnKernel, TorchGenerator};

fn bench(c: &mut Criterion) {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/pipeline/tests/fixtures/e2e");
    let files = sakiko_lumina::pipeline::ModelFiles::models_dir(e2e.join("models"))
        .expect("fixture")
        .with_text_encoder_config(e2e.join("text_encoder_config.json"))
        .with_vae_config(e2e.join("vae_config.json"));
    let device = Default::default();
    let mut te = TextEncoder::<Flex>::new(&files, Default::default(), device).expect("te");
    let mut cond = |text: &str| Conditioning {
        features: te.encode(&te.tokenize(text).expect("ids")).expect("cond"),
    };
    let (positive, negative) = (
        cond(&sakiko_lumina::prompt::with_prefix("1girl, smile")),
        cond(""),
    );
    let dit = NextDit::<Flex>::load(&files.dit, &device).expect("dit");
    let mut denoiser = LuminaDenoiser::new(&dit, positive, negative);
    // 1024×1024 in latent patches would be 4096 tokens; the tiny model runs 512×512 (1024 tokens).
    let x: Tensor<Flex, 4> =
        TorchGenerator::new(0).randn_tensor([1, 16, 64, 64], RandnKernel::Avx2, &device);
    c.bench_function("cfg step, tiny e2e model, 512x512", |b| {
        b.iter(|| denoiser.denoise_pair(&x, 0.5).expect("step"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
