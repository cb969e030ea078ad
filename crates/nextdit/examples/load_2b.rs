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

/// Every tensor of the 2B checkpoint with its shape, in original names.
fn shapes(c: &NextDitConfig) -> Vec<(String, Vec<usize>)> {
    let (d, t, f, hd) = (c.hidden_size, c.adaln_dim(), c.ffn_dim(), c.head_dim());
    let qkv = (c.num_attention_heads + 2 * c.num_kv_heads) * hd;
    let p2c = c.patch_size * c.patch_size * c.in_channels;
    let mut v: Vec<(String, Vec<usize>)> = vec![
        ("x_embedder.weight".into(), vec![d, p2c]),
        ("x_embedder.bias".into(), vec![d]),
        ("t_embedder.mlp.0.weight".into(), vec![t, 256]),
        ("t_embedder.mlp.0.bias".into(), vec![t]),
        ("t_embedder.mlp.2.weight".into(), vec![t, t]),
        ("t_embedder.mlp.2.bias".into(), vec![t]),
        ("cap_embedder.0.weight".into(), vec![c.cap_feat_dim]),
        ("cap_embedder.1.weight".into(), vec![d, c.cap_feat_dim]),
        ("cap_embedder.1.bias".into(), vec![d]),
        ("final_layer.adaLN_modulation.1.weight".into(), vec![d, t]),
        ("final_layer.adaLN_modulation.1.bias".into(), vec![d]),
        ("final_layer.linear.weight".into(), vec![p2c, d]),
        ("final_layer.linear.bias".into(), vec![p2c]),
        ("norm_final.weight".into(), vec![d]),
    ];
    let blocks = (0..c.num_refiner_layers)
        .map(|i| (format!("context_refiner.{i}"), false))
        .chain((0..c.num_refiner_layers).map(|i| (format!("noise_refiner.{i}"), true)))
        .chain((0..c.num_layers).map(|i| (format!("layers.{i}"), true)));
    for (b, modulated) in blocks {
        v.push((format!("{b}.attention.qkv.weight"), vec![qkv, d]));
        v.push((format!("{b}.attention.out.weight"), vec![d, d]));
        v.push((format!("{b}.attention.q_norm.weight"), vec![hd]));
        v.push((format!("{b}.attention.k_norm.weight"), vec![hd]));
        v.push((format!("{b}.feed_forward.w1.weight"), vec![f, d]));
        v.push((format!("{b}.feed_forward.w2.weight"), vec![d, f]));
        v.push((format!("{b}.feed_forward.w3.weight"), vec![f, d]));
        for n in [
            "attention_norm1",
            "attention_norm2",
            "ffn_norm1",
            "ffn_norm2",
        ] {
            v.push((format!("{b}.{n}.weight"), vec![d]));
        }
        if modulated {
            v.push((format!("{b}.adaLN_modulation.1.weight"), vec![4 * d, t]));
            v.push((format!("{b}.adaLN_modulation.1.bias"), vec![4 * d]));
        }
    }
    v
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/nextdit-2b/synthetic_bf16.safetensors"
    ));
    let preset = NextDitConfig::lumina2_2b();
    if !path.exists() {
        let start = Instant::now();
        let tensors: Vec<(String, Vec<usize>)> = shapes(&preset)
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
