//! Peak memory of a 1024×1024 decode, untiled or tiled, with the mid-size model that
//! `tools/reference/vae_bench.py` writes to `target/vae-bench/`. Run each mode in its own process:
//!
//! ```sh
//! cargo run --release -p sakiko-vae --example decode_memory -- full
//! cargo run --release -p sakiko-vae --example decode_memory -- tiled
//! ```

use std::time::Instant;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use sakiko_vae::{Tiling, Vae};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "full".into());
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/vae-bench");
    let device = Default::default();
    let vae = Vae::<Flex>::load(dir, &device)?;
    let before = sakiko_weights::peak_rss_mib().unwrap_or(0.0);
    let z = Tensor::<Flex, 4>::random([1, 16, 128, 128], Distribution::Normal(0.0, 1.0), &device);
    let start = Instant::now();
    let image = match mode.as_str() {
        "tiled" => vae.decode_tiled(z, Tiling::default())?,
        _ => vae.decode(z)?,
    };
    let dims = image.dims();
    drop(image.into_data());
    println!(
        "{mode}: decoded to {dims:?} in {:.1} s; peak RSS {:.0} MiB (after loading: {before:.0} MiB)",
        start.elapsed().as_secs_f64(),
        sakiko_weights::peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}
