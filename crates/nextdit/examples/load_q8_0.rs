//! Loads the synthetic 2B Q8_0 GGUF denoiser (`tools/reference/synthetic_gguf.py`, about 2.7 GB)
//! on wgpu with its Q8_0 weights kept quantised or dequantised at load, runs one forward (a
//! 16×16 latent, captions of 8 tokens, batch 2), and reports peak memory. On Mesa's lavapipe,
//! device memory is host memory, so the process's peak RSS includes the weights on the device.
//!
//! ```sh
//! .venv-ref/bin/python tools/reference/synthetic_gguf.py
//! cargo run --release -p sakiko-nextdit --features wgpu --example load_q8_0 -- keep|dequantise [f16|f32]
//! ```

use std::path::Path;
use std::time::Instant;

use burn::backend::Wgpu;
use burn::tensor::{Distribution, FloatDType, Tensor};
use sakiko_nextdit::NextDit;
use sakiko_weights::WeightFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/nextdit-2b/synthetic_q8_0.gguf"
    ));
    if !path.exists() {
        return Err(format!(
            "{} is missing: run `.venv-ref/bin/python tools/reference/synthetic_gguf.py` first",
            path.display()
        )
        .into());
    }
    let mut args = std::env::args().skip(1);
    let keep = match args.next().as_deref() {
        Some("keep") => true,
        Some("dequantise") => false,
        _ => return Err("usage: load_q8_0 keep|dequantise [f16|f32]".into()),
    };
    let dtype = match args.next().as_deref() {
        None | Some("f16") => FloatDType::F16,
        Some("f32") => FloatDType::F32,
        Some(other) => return Err(format!("unknown dtype {other}: f16 or f32").into()),
    };
    let device = Default::default();
    let start = Instant::now();
    let file = WeightFile::open_any(path)?.with_q8_0_kept(keep);
    let model = NextDit::<Wgpu>::from_weights_as(&file, None, dtype, &device)?;
    let loaded = start.elapsed().as_secs_f64();
    let after_load = sakiko_weights::peak_rss_mib().unwrap_or(f64::NAN);
    let what = if keep {
        "Q8_0 kept quantised"
    } else {
        "dequantised at load"
    };
    // Printed before the forward, which takes minutes on lavapipe.
    println!("{what}, {dtype:?}: loaded in {loaded:.1} s, peak RSS {after_load:.0} MiB");
    let c = model.config().clone();
    let normal = Distribution::Normal(0.0, 1.0);
    let x = Tensor::<Wgpu, 4>::random([2, c.in_channels, 16, 16], normal, &device).cast(dtype);
    let cap = Tensor::<Wgpu, 3>::random([2, 8, c.cap_feat_dim], normal, &device).cast(dtype);
    let start = Instant::now();
    let out = model.forward(x, &[0.5, 0.5], cap, &[8, 5])?;
    let finite = out.cast(FloatDType::F32).is_finite().all().into_scalar();
    println!(
        "{what}, {dtype:?}: one forward in {:.1} s (finite: {finite}); peak RSS {:.0} MiB",
        start.elapsed().as_secs_f64(),
        sakiko_weights::peak_rss_mib().unwrap_or(f64::NAN),
    );
    Ok(())
}
