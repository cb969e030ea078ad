//! Loads a synthetic text encoder with the real Gemma-2-2B shapes, in the ComfyUI layout
//! (`model.` prefix, fp16, like `gemma_2_2b_fp16.safetensors`; random values, written to
//! `target/gemma-2b/` on first run, about 5.2 GB, not committed), with the 2B preset checked
//! against the shapes, and reports time and peak memory for the compute dtype given (f32 by
//! default; `bf16` / `f16` keep the layers at half the memory).
//!
//! ```sh
//! cargo run --release -p sakiko-gemma --example load_real_size [-- bf16|f16]
//! ```

use std::path::Path;
use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::FloatDType;
use sakiko_gemma::{Gemma2, Gemma2Config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/gemma-2b/gemma_2_2b_fp16_synthetic.safetensors"
    ));
    if !path.exists() {
        let start = Instant::now();
        sakiko_weights::write_synthetic(
            path,
            &Gemma2Config::gemma_2_2b().tensor_shapes(),
            safetensors::Dtype::F16,
        )?;
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
    let model = Gemma2::<Flex>::load_as(path, None, dtype, &Default::default())?;
    assert_eq!(model.config(), &Gemma2Config::gemma_2_2b());
    println!(
        "loaded Gemma-2-2B shapes in {dtype:?} in {:.1} s; peak RSS {:.0} MiB (before loading {:.0} MiB)",
        start.elapsed().as_secs_f64(),
        sakiko_weights::peak_rss_mib().unwrap_or(f64::NAN),
        before
    );
    Ok(())
}
