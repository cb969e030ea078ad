//! The building blocks, and the key layouts they are loaded from.
//!
//! Names inside this crate are the BFL / ComfyUI ones (`decoder.up.1.block.0.nin_shortcut`);
//! [`Layout::Diffusers`] translates each to diffusers' (`decoder.up_blocks.2.resnets.0.conv_shortcut`).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Tensor, backend::Backend};
use sakiko_ops::{clamp_fp16, group_norm};

/// The key naming of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// BFL / ComfyUI `ae.safetensors` names (`decoder.up.3.block.0.conv1`).
    Bfl,
    /// diffusers `AutoencoderKL` names (`decoder.up_blocks.0.resnets.0.conv1`).
    Diffusers,
}

impl Layout {
    /// The key of BFL-named `name` in this layout; `levels` is the number of resolution levels
    /// (diffusers numbers decoder levels in the opposite order).
    pub fn key(self, name: &str, levels: usize) -> String {
        if self == Layout::Bfl {
            return name.to_owned();
        }
        let parts: Vec<&str> = name.split('.').collect();
        let mut out: Vec<String> = Vec::with_capacity(parts.len() + 2);
        out.push(parts[0].to_owned());
        let mut rest = &parts[1..];
        match rest {
            ["norm_out", tail @ ..] => {
                out.push("conv_norm_out".into());
                rest = tail;
            }
            ["mid", block, tail @ ..] => {
                out.push("mid_block".into());
                match *block {
                    "block_1" => out.push("resnets.0".into()),
                    "block_2" => out.push("resnets.1".into()),
                    _ => {
                        out.push("attentions.0".into());
                        if let Some((layer, tail2)) = tail.split_first() {
                            out.push(
                                match *layer {
                                    "norm" => "group_norm",
                                    "q" => "to_q",
                                    "k" => "to_k",
                                    "v" => "to_v",
                                    "proj_out" => "to_out.0",
                                    other => other,
                                }
                                .into(),
                            );
                            rest = tail2;
                            return join(out, rest);
                        }
                    }
                }
                rest = tail;
            }
            [dir @ ("down" | "up"), level, kind, tail @ ..] => {
                let level: usize = level.parse().unwrap_or(0);
                let (blocks, index) = if *dir == "down" {
                    ("down_blocks", level)
                } else {
                    ("up_blocks", levels.saturating_sub(1 + level))
                };
                out.push(format!("{blocks}.{index}"));
                match *kind {
                    "block" => out.push("resnets".into()),
                    "downsample" => out.push("downsamplers.0".into()),
                    "upsample" => out.push("upsamplers.0".into()),
                    other => out.push(other.into()),
                }
                rest = tail;
            }
            _ => {}
        }
        join(out, rest)
    }
}

fn join(mut out: Vec<String>, rest: &[&str]) -> String {
    out.extend(rest.iter().map(|p| {
        if *p == "nin_shortcut" {
            "conv_shortcut".to_owned()
        } else {
            (*p).to_owned()
        }
    }));
    out.join(".")
}

/// A `k×k` convolution with bias.
pub(crate) fn conv<B: Backend>(
    [c_in, c_out]: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: PaddingConfig2d,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([c_in, c_out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(padding)
        .init(device)
}

/// A 3×3 convolution with padding 1.
pub(crate) fn conv3<B: Backend>(channels: [usize; 2], device: &B::Device) -> Conv2d<B> {
    conv(
        channels,
        3,
        1,
        PaddingConfig2d::Explicit(1, 1, 1, 1),
        device,
    )
}

/// GroupNorm(groups, eps 1e-6, affine).
pub(crate) fn norm<B: Backend>(groups: usize, channels: usize, device: &B::Device) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(1e-6)
        .init(device)
}

/// `conv2(silu(norm2(conv1(silu(norm1(x)))))) + shortcut(x)`.
#[derive(Module, Debug)]
pub struct ResnetBlock<B: Backend> {
    norm1: GroupNorm<B>,
    conv1: Conv2d<B>,
    norm2: GroupNorm<B>,
    conv2: Conv2d<B>,
    nin_shortcut: Option<Conv2d<B>>,
}

impl<B: Backend> ResnetBlock<B> {
    pub(crate) fn init(c_in: usize, c_out: usize, groups: usize, device: &B::Device) -> Self {
        Self {
            norm1: norm(groups, c_in, device),
            conv1: conv3([c_in, c_out], device),
            norm2: norm(groups, c_out, device),
            conv2: conv3([c_out, c_out], device),
            nin_shortcut: (c_in != c_out)
                .then(|| conv([c_in, c_out], 1, 1, PaddingConfig2d::Valid, device)),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let h = sakiko_ops::conv2d(&self.conv1, group_norm(&self.norm1, x.clone(), true));
        let h = sakiko_ops::conv2d(&self.conv2, group_norm(&self.norm2, h, true));
        let x = match &self.nin_shortcut {
            Some(conv) => sakiko_ops::conv2d(conv, x),
            None => x,
        };
        clamp_fp16(x + h)
    }
}

/// Single-head self-attention over all pixels, with a residual connection.
#[derive(Module, Debug)]
pub struct AttnBlock<B: Backend> {
    norm: GroupNorm<B>,
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    proj_out: Linear<B>,
}

impl<B: Backend> AttnBlock<B> {
    pub(crate) fn init(channels: usize, groups: usize, device: &B::Device) -> Self {
        // BFL stores these as 1×1 convolutions; they run as linear layers over the pixels.
        let pointwise = || LinearConfig::new(channels, channels).init(device);
        Self {
            norm: norm(groups, channels, device),
            q: pointwise(),
            k: pointwise(),
            v: pointwise(),
            proj_out: pointwise(),
        }
    }

    /// Applies the block.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let tokens = group_norm(&self.norm, x.clone(), false)
            .reshape([b, c, h * w])
            .swap_dims(1, 2);
        let heads = |t: Tensor<B, 3>| t.reshape([b, 1, h * w, c]);
        let o = sakiko_ops::attention(
            heads(sakiko_ops::linear(&self.q, tokens.clone())),
            heads(sakiko_ops::linear(&self.k, tokens.clone())),
            heads(sakiko_ops::linear(&self.v, tokens)),
            None,
        );
        let o = sakiko_ops::linear(&self.proj_out, o.reshape([b, h * w, c]));
        clamp_fp16(x + o.swap_dims(1, 2).reshape([b, c, h, w]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfl_to_diffusers_names() {
        let cases = [
            ("encoder.conv_in.weight", "encoder.conv_in.weight"),
            ("encoder.norm_out.bias", "encoder.conv_norm_out.bias"),
            ("decoder.norm_out.weight", "decoder.conv_norm_out.weight"),
            (
                "encoder.down.1.block.0.nin_shortcut.weight",
                "encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
            ),
            (
                "encoder.down.2.downsample.conv.bias",
                "encoder.down_blocks.2.downsamplers.0.conv.bias",
            ),
            (
                "decoder.mid.block_1.norm1.weight",
                "decoder.mid_block.resnets.0.norm1.weight",
            ),
            (
                "encoder.mid.block_2.conv2.weight",
                "encoder.mid_block.resnets.1.conv2.weight",
            ),
            (
                "decoder.mid.attn_1.norm.bias",
                "decoder.mid_block.attentions.0.group_norm.bias",
            ),
            (
                "decoder.mid.attn_1.q.weight",
                "decoder.mid_block.attentions.0.to_q.weight",
            ),
            (
                "encoder.mid.attn_1.proj_out.bias",
                "encoder.mid_block.attentions.0.to_out.0.bias",
            ),
            (
                "decoder.up.3.block.2.conv1.weight",
                "decoder.up_blocks.0.resnets.2.conv1.weight",
            ),
            (
                "decoder.up.0.block.0.nin_shortcut.weight",
                "decoder.up_blocks.3.resnets.0.conv_shortcut.weight",
            ),
            (
                "decoder.up.1.upsample.conv.weight",
                "decoder.up_blocks.2.upsamplers.0.conv.weight",
            ),
            ("decoder.conv_out.bias", "decoder.conv_out.bias"),
        ];
        for (bfl, diffusers) in cases {
            assert_eq!(Layout::Diffusers.key(bfl, 4), diffusers, "{bfl}");
            assert_eq!(Layout::Bfl.key(bfl, 4), bfl);
        }
    }
}
