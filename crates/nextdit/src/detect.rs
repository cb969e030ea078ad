//! Which NextDiT a checkpoint holds (prefix, key layout, configuration), from its header alone.

use sakiko_weights::{WeightFile, Weights};

use crate::layers::Layout;
use crate::{NextDitConfig, NextDitError};

/// Prefixes under which checkpoints store the denoiser.
pub const PREFIXES: [&str; 3] = ["", "model.diffusion_model.", "diffusion_model."];

/// What a checkpoint holds: prefix, [`Layout`] and configuration.
pub type Detected = sakiko_weights::Detected<Layout, NextDitConfig>;

/// Identifies a NextDiT checkpoint (prefix, layout) and detects its configuration from the
/// shapes, without loading it.
pub fn detect(file: &WeightFile) -> Result<Detected, NextDitError> {
    let (prefix, layout) = identify(file)?;
    let config = detect_config(file, &file.scope(prefix), layout)?;
    Ok(Detected {
        prefix,
        layout,
        config,
    })
}

/// Where a NextDiT checkpoint's tensors are in `file` (prefix) and how they are named, from the keys alone;
/// an error when `file` holds none.
pub fn identify(file: &WeightFile) -> Result<(&'static str, Layout), NextDitError> {
    let prefix = file.detect_prefix("x_embedder.weight", &PREFIXES)?;
    let layout = if file.contains(&format!("{prefix}layers.0.attn.to_q.weight")) {
        Layout::Diffusers
    } else {
        Layout::Original
    };
    Ok((prefix, layout))
}

/// Detects the configuration from original-named shapes (patch 2 and RoPE axes split in thirds
/// are assumed, as in every released Lumina 2 model).
pub(crate) fn detect_config(
    file: &WeightFile,
    weights: &Weights<'_>,
    layout: Layout,
) -> Result<NextDitConfig, NextDitError> {
    let has = |name: &str| weights.contains(&layout.key(name));
    let shape = |name: &str| {
        weights
            .shape(&layout.key(name))
            .map(<[usize]>::to_vec)
            .ok_or_else(|| {
                NextDitError::Unsupported(format!("cannot detect the configuration: no `{name}`"))
            })
    };
    let x_emb = shape("x_embedder.weight")?;
    let d = x_emb[0];
    let hd = shape("layers.0.attention.q_norm.weight")?[0];
    let heads = d / hd.max(1);
    let q_rows = if layout == Layout::Original {
        shape("layers.0.attention.qkv.weight")?[0]
    } else {
        heads * hd
            + 2 * weights
                .shape("layers.0.attn.to_k.weight")
                .map_or(0, |s| s[0])
    };
    let kv_heads = (q_rows / hd.max(1)).saturating_sub(heads) / 2;
    let count = |name: &str| {
        (0..)
            .take_while(|i| has(&format!("{name}.{i}.ffn_norm1.weight")))
            .count()
    };
    let ffn = shape("layers.0.feed_forward.w1.weight")?[0];
    let base = NextDitConfig::lumina2_2b();
    let config = NextDitConfig {
        patch_size: 2,
        in_channels: x_emb[1] / 4,
        hidden_size: d,
        num_layers: count("layers"),
        num_refiner_layers: count("noise_refiner"),
        num_attention_heads: heads,
        num_kv_heads: kv_heads,
        // The width is known exactly; any rounding that reproduces it will do.
        multiple_of: if ffn.is_multiple_of(base.multiple_of) && ffn >= 4 * d {
            base.multiple_of
        } else {
            ffn
        },
        ffn_dim_multiplier: if ffn == (4 * d).div_ceil(base.multiple_of) * base.multiple_of
            || ffn == 4 * d
        {
            None
        } else {
            Some(ffn as f64 / (4 * d) as f64)
        },
        axes_dim_rope: vec![hd / 3; 3],
        cap_feat_dim: shape("cap_embedder.1.weight")?[1],
        ..base
    };
    let undetectable = |found: String| NextDitError::UndetectableConfig {
        path: file.path().to_path_buf(),
        found,
    };
    if let Err(e) = config.validate() {
        let why = match e {
            NextDitError::Unsupported(why) => why,
            other => other.to_string(),
        };
        return Err(undetectable(format!(
            "width {d} with {heads} heads of {hd} and {kv_heads} KV heads, which no released \
             Lumina 2 layout fits ({why})"
        )));
    }
    if config.ffn_dim() != ffn {
        return Err(undetectable(format!(
            "a feed-forward width of {ffn}, which no multiple_of / ffn_dim_multiplier rounding \
             of width {d} reproduces"
        )));
    }
    Ok(config)
}
