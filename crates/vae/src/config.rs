//! The autoencoder's configuration: diffusers' `config.json`, the FLUX preset, detection from shapes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{LatentFormat, VaeError};

/// The hyperparameters of a FLUX-style `AutoencoderKL` (diffusers' `config.json` field names).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct VaeConfig {
    /// Image channels in (3).
    #[serde(default = "three")]
    pub in_channels: usize,
    /// Image channels out (3).
    #[serde(default = "three")]
    pub out_channels: usize,
    /// Latent channels (16 for FLUX).
    pub latent_channels: usize,
    /// Channels per resolution level, from the image side (FLUX: 128, 256, 512, 512).
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder level; the decoder has one more (FLUX: 2).
    pub layers_per_block: usize,
    /// GroupNorm groups (32).
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    /// Latent scale (FLUX: 0.3611).
    #[serde(default = "flux_scale")]
    pub scaling_factor: f32,
    /// Latent shift (FLUX: 0.1159).
    #[serde(default = "flux_shift")]
    pub shift_factor: f32,
    /// Whether the mid blocks have attention (FLUX: true).
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
    /// A `quant_conv` after the encoder (not in FLUX; unsupported).
    #[serde(default)]
    pub use_quant_conv: bool,
    /// A `post_quant_conv` before the decoder (not in FLUX; unsupported).
    #[serde(default)]
    pub use_post_quant_conv: bool,
}

fn three() -> usize {
    3
}
fn thirty_two() -> usize {
    32
}
fn flux_scale() -> f32 {
    0.3611
}
fn flux_shift() -> f32 {
    0.1159
}
fn yes() -> bool {
    true
}

impl VaeConfig {
    /// A test-sized FLUX-style autoencoder (levels of 32, 32, 64 and 64 channels, one block per
    /// level), for `sakiko bench --preset tiny` and `sakiko doctor`.
    pub fn tiny() -> Self {
        Self {
            block_out_channels: vec![32, 32, 64, 64],
            layers_per_block: 1,
            ..Self::flux()
        }
    }

    /// The FLUX.1 autoencoder (`ae.safetensors`) that Lumina 2, Neta-Lumina and Sakiko-Lumina use.
    pub fn flux() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 16,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            norm_num_groups: 32,
            scaling_factor: 0.3611,
            shift_factor: 0.1159,
            mid_block_add_attention: true,
            use_quant_conv: false,
            use_post_quant_conv: false,
        }
    }

    /// Every tensor of a BFL-layout checkpoint (`ae.safetensors` names, no prefix) with this
    /// configuration, with its shape: what [`crate::Vae::from_weights`] reads, for synthetic
    /// models (`sakiko_weights::WeightFile::synthetic`).
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let mut s = Shapes(Vec::new());
        let ch = &self.block_out_channels;
        let top = *ch.last().unwrap_or(&0);
        s.conv("encoder.conv_in", self.in_channels, ch[0], 3);
        let mut c_in = ch[0];
        for (i, &c_out) in ch.iter().enumerate() {
            for j in 0..self.layers_per_block {
                let from = if j == 0 { c_in } else { c_out };
                s.resnet(&format!("encoder.down.{i}.block.{j}"), from, c_out);
            }
            if i + 1 < ch.len() {
                s.conv(
                    &format!("encoder.down.{i}.downsample.conv"),
                    c_out,
                    c_out,
                    3,
                );
            }
            c_in = c_out;
        }
        s.conv("decoder.conv_in", self.latent_channels, top, 3);
        for (b, &c_out) in ch.iter().enumerate() {
            // Level b receives the channels of level b + 1 (the top level its own).
            let c_in = ch.get(b + 1).copied().unwrap_or(top);
            for j in 0..=self.layers_per_block {
                let from = if j == 0 { c_in } else { c_out };
                s.resnet(&format!("decoder.up.{b}.block.{j}"), from, c_out);
            }
            if b > 0 {
                s.conv(&format!("decoder.up.{b}.upsample.conv"), c_out, c_out, 3);
            }
        }
        for side in ["encoder", "decoder"] {
            s.resnet(&format!("{side}.mid.block_1"), top, top);
            s.resnet(&format!("{side}.mid.block_2"), top, top);
            if self.mid_block_add_attention {
                s.norm(&format!("{side}.mid.attn_1.norm"), top);
                for layer in ["q", "k", "v", "proj_out"] {
                    s.conv(&format!("{side}.mid.attn_1.{layer}"), top, top, 1);
                }
            }
        }
        s.norm("encoder.norm_out", top);
        s.conv("encoder.conv_out", top, 2 * self.latent_channels, 3);
        s.norm("decoder.norm_out", ch[0]);
        s.conv("decoder.conv_out", ch[0], self.out_channels, 3);
        s.0
    }

    /// Reads a diffusers `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, VaeError> {
        let config: Self = sakiko_weights::read_config(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Detects the configuration from tensor shapes, for files that come without a `config.json`;
    /// `shape` and `has` look up BFL-style names. Scale and shift are FLUX's.
    pub(crate) fn detect_with<'a>(
        shape: impl Fn(&str) -> Option<&'a [usize]>,
        has: impl Fn(&str) -> bool,
    ) -> Result<Self, VaeError> {
        let missing =
            |what: &str| VaeError::Unsupported(format!("cannot detect the VAE layout: {what}"));
        let conv_in =
            shape("decoder.conv_in.weight").ok_or_else(|| missing("no decoder.conv_in.weight"))?;
        let mut block_out_channels = Vec::new();
        while let Some(s) = shape(&format!(
            "encoder.down.{}.block.0.conv1.weight",
            block_out_channels.len()
        )) {
            block_out_channels.push(s[0]);
        }
        let mut layers_per_block = 0;
        while has(&format!("encoder.down.0.block.{layers_per_block}.conv1")) {
            layers_per_block += 1;
        }
        if block_out_channels.is_empty() || layers_per_block == 0 {
            return Err(missing("no encoder.down.N.block.M tensors"));
        }
        let io = |key: &str, dim: usize| shape(key).map_or(3, |s| s[dim]);
        // GroupNorm's group count is in no shape: FLUX's 32 is assumed (other models need a config).
        let config = Self {
            in_channels: io("encoder.conv_in.weight", 1),
            out_channels: io("decoder.conv_out.weight", 0),
            latent_channels: conv_in[1],
            block_out_channels,
            layers_per_block,
            mid_block_add_attention: has("decoder.mid.attn_1.q"),
            use_quant_conv: has("quant_conv"),
            use_post_quant_conv: has("post_quant_conv"),
            ..Self::flux()
        };
        // Validated by the caller, which can name the file when FLUX's groups do not fit.
        Ok(config)
    }

    /// Checks that this crate can build the model.
    pub fn validate(&self) -> Result<(), VaeError> {
        let bad = |why: String| Err(VaeError::Unsupported(why));
        if self.use_quant_conv || self.use_post_quant_conv {
            return bad(
                "quant_conv / post_quant_conv (SD-style VAEs) are not supported; FLUX has neither"
                    .into(),
            );
        }
        if self.block_out_channels.is_empty()
            || self.layers_per_block == 0
            || self.latent_channels == 0
        {
            return bad(format!("empty levels or channels: {self:?}"));
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|&&c| self.norm_num_groups == 0 || c % self.norm_num_groups != 0)
        {
            return bad(format!(
                "{c} channels are not divisible into {} groups",
                self.norm_num_groups
            ));
        }
        Ok(())
    }

    /// The latent format (scale and shift) of this autoencoder.
    pub fn latent_format(&self) -> LatentFormat {
        LatentFormat {
            scale: self.scaling_factor,
            shift: self.shift_factor,
        }
    }

    /// Pixels per latent pixel along each side (8 for FLUX).
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }
}

/// Collects BFL tensor names and shapes for [`VaeConfig::tensor_shapes`].
struct Shapes(Vec<(String, Vec<usize>)>);

impl Shapes {
    fn conv(&mut self, name: &str, c_in: usize, c_out: usize, k: usize) {
        self.0
            .push((format!("{name}.weight"), vec![c_out, c_in, k, k]));
        self.0.push((format!("{name}.bias"), vec![c_out]));
    }

    fn norm(&mut self, name: &str, c: usize) {
        self.0.push((format!("{name}.weight"), vec![c]));
        self.0.push((format!("{name}.bias"), vec![c]));
    }

    fn resnet(&mut self, name: &str, c_in: usize, c_out: usize) {
        self.norm(&format!("{name}.norm1"), c_in);
        self.conv(&format!("{name}.conv1"), c_in, c_out, 3);
        self.norm(&format!("{name}.norm2"), c_out);
        self.conv(&format!("{name}.conv2"), c_out, c_out, 3);
        if c_in != c_out {
            self.conv(&format!("{name}.nin_shortcut"), c_in, c_out, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The shapes of the real `ae.safetensors` that detection looks at.
    fn flux_shapes() -> HashMap<String, Vec<usize>> {
        let mut m = HashMap::new();
        m.insert("decoder.conv_in.weight".to_owned(), vec![512, 16, 3, 3]);
        m.insert("encoder.conv_in.weight".to_owned(), vec![128, 3, 3, 3]);
        m.insert("decoder.conv_out.weight".to_owned(), vec![3, 128, 3, 3]);
        m.insert(
            "decoder.mid.attn_1.q.weight".to_owned(),
            vec![512, 512, 1, 1],
        );
        for (i, c) in [128, 256, 512, 512].into_iter().enumerate() {
            for j in 0..2 {
                m.insert(
                    format!("encoder.down.{i}.block.{j}.conv1.weight"),
                    vec![c, c, 3, 3],
                );
            }
        }
        m
    }

    #[test]
    fn detects_the_flux_configuration_from_shapes() {
        let shapes = flux_shapes();
        let config = VaeConfig::detect_with(
            |k| shapes.get(k).map(Vec::as_slice),
            |k| shapes.contains_key(&format!("{k}.weight")),
        )
        .unwrap();
        assert_eq!(config, VaeConfig::flux());
        assert_eq!(config.downscale(), 8);
    }

    #[test]
    fn detection_and_validation_errors() {
        let none = VaeConfig::detect_with(|_| None, |_| false).unwrap_err();
        assert!(
            matches!(none, VaeError::Unsupported(ref m) if m.contains("decoder.conv_in.weight"))
        );
        let sd = VaeConfig {
            use_post_quant_conv: true,
            ..VaeConfig::flux()
        };
        assert!(
            matches!(sd.validate(), Err(VaeError::Unsupported(ref m)) if m.contains("post_quant_conv"))
        );
        let err = VaeConfig::from_file("/nonexistent/config.json").unwrap_err();
        assert!(matches!(
            err,
            VaeError::Weights(sakiko_weights::WeightError::Config { .. })
        ));
    }
}
