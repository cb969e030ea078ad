//! Loads a synthetic checkpoint with the real 2B shapes (original / ComfyUI names, bf16, random
//! values; written to `target/nextdit-2b/` on first run, about 5.2 GB, not committed), checks that
//! the configuration is detected from the shapes alone, and reports time and peak memory for the
//! compute dtype given (f32 by default; `bf16` keeps the weights at half the memory).
//!
//! ```sh
//! cargo run --release -p sakiko-nextdit --example load_2b [-- bf16|f16]
//! ```

use std::path::Path;
use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::FloatDType;
use sakiko_nextdit::{NextDit, NextDitConfig};
use sakiko_weights::WeightFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/nextdit-2b/synthetic_bf16.safetensors"
    ));
    let preset = NextDitConfig::lumina2_2b();
    if !path.exists() {
        let start = Instant::now();
        let tensors: Vec<(String, Vec<usize>)> = preset
            .tensor_shapes()
            .into_iter()
            .map(|(n, s)| (format!("model.diffusion_model.{n}"), s))
            .collect();
        sakiko_weights::write_synthetic(path, &tensors, safetensors::Dtype::BF16)?;
        println!(
            "wrote {} in {:.1} s",
            path.display(),
            start.elapsed().as_secs_f64()
        );
    }
    let dtype = match std::env::args().nth(1).as_deref() {
        None | Some("f32") => FloatDType::F32,
        Some("bf16") => FloatDType::BF16,
        Some("f16") => FloatDType::F16,
        Some(other) => return Err(format!("unknown dtype {other}: f32, bf16 or f16").into()),
    };
    let before = sakiko_weights::peak_rss_mib().unwrap_or(f64::NAN);
    let start = Instant::now();
    let file = WeightFile::open(path)?;
    let model = NextDit::<Flex>::from_weights_as(&file, None, dtype, &Default::default())?;
    assert_eq!(
        model.config(),
        &preset,
        "detected configuration differs from the preset"
    );
    println!(
        "loaded 2B in {dtype:?} (detected config = lumina2_2b preset) in {:.1} s; peak RSS {:.0} MiB (before loading {:.0} MiB)",
        start.elapsed().as_secs_f64(),
        sakiko_weights::peak_rss_mib().unwrap_or(f64::NAN),
        before
    );
    Ok(())
}
