//! The NextDiT forward pass and loading.

use std::path::Path;

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::silu;
use burn::tensor::{DType, FloatDType, Tensor, TensorData, backend::Backend};
use sakiko_weights::{KeyName, LinearKeys, ParamSource, WeightFile, Weights, load_module};

use crate::detect::{detect_config, identify};
use crate::layers::{Block, Layout, RmsNorm, Rope, linear};
use crate::{NextDitConfig, NextDitError};

/// Width of the sinusoidal timestep features.
const FREQ_DIM: usize = 256;

/// The Lumina-Image-2.0 NextDiT: a Burn module whose parameter paths are the original key names
/// (`layers.0.attention.qkv.weight`; `t_embedder.mlp_0` for `mlp.0`, `ada_ln_modulation` for
/// `adaLN_modulation.1`, `cap_embedder.norm` / `.linear` for `.0` / `.1`).
///
/// Its forward pass uses the model's own convention: `t = 1` is clean data, `t = 0` pure noise,
/// and the output is the velocity `data − noise`. Samplers that think in σ (ComfyUI's
/// `x = σ·noise + (1 − σ)·data`) call it with `t = 1 − σ` and negate the output; that conversion
/// belongs to the pipeline.
///
/// ```
/// use burn::backend::Flex;
/// use sakiko_nextdit::{NextDit, NextDitConfig};
///
/// let config = NextDitConfig { hidden_size: 48, num_layers: 1, num_refiner_layers: 1,
///     num_attention_heads: 2, num_kv_heads: 1, multiple_of: 16, axes_dim_rope: vec![8, 8, 8],
///     cap_feat_dim: 32, ..NextDitConfig::lumina2_2b() };
/// // Random weights (`NextDit::load` and friends fill them from a checkpoint instead).
/// let model: NextDit<Flex> = config.init(&Default::default());
/// let x = burn::tensor::Tensor::zeros([1, 16, 8, 8], &Default::default());
/// let cap = burn::tensor::Tensor::zeros([1, 5, 32], &Default::default());
/// let v = model.forward(x, &[0.5], cap, &[5])?;
/// assert_eq!(v.dims(), [1, 16, 8, 8]);
/// # Ok::<(), sakiko_nextdit::NextDitError>(())
/// ```
#[derive(Module, Debug)]
pub struct NextDit<B: Backend> {
    x_embedder: Linear<B>,
    t_embedder: TimestepEmbedder<B>,
    cap_embedder: CaptionEmbedder<B>,
    context_refiner: Vec<Block<B>>,
    noise_refiner: Vec<Block<B>>,
    layers: Vec<Block<B>>,
    final_layer: FinalLayer<B>,
    #[module(skip)]
    config: NextDitConfig,
    #[module(skip)]
    dtype: FloatDType,
}

/// `t_embedder.mlp.{0,2}`: sinusoidal features → SiLU MLP.
#[derive(Module, Debug)]
struct TimestepEmbedder<B: Backend> {
    mlp_0: Linear<B>,
    mlp_2: Linear<B>,
}

/// `cap_embedder.{0,1}`: RMSNorm then a linear projection of the caption features.
#[derive(Module, Debug)]
struct CaptionEmbedder<B: Backend> {
    norm: RmsNorm<B>,
    linear: Linear<B>,
}

/// `final_layer`: the modulated output projection to patches.
#[derive(Module, Debug)]
struct FinalLayer<B: Backend> {
    ada_ln_modulation: Linear<B>,
    linear: Linear<B>,
}

/// Named intermediate outputs, for locating a mismatch (`x_embedder`, `context_refiner.0`, …).
pub type Trace<B> = Vec<(String, Tensor<B, 3>)>;

impl NextDitConfig {
    /// The model with this configuration and random weights (lazily made: loading replaces them
    /// without ever allocating them), computing in f32.
    pub fn init<B: Backend>(&self, device: &B::Device) -> NextDit<B> {
        let (d, t) = (self.hidden_size, self.adaln_dim());
        let p2c = self.patch_size * self.patch_size * self.in_channels;
        let blocks = |n: usize, modulated: bool| -> Vec<Block<B>> {
            (0..n)
                .map(|_| Block::init(self, modulated, device))
                .collect()
        };
        NextDit {
            x_embedder: linear(p2c, d, true, device),
            t_embedder: TimestepEmbedder {
                mlp_0: linear(FREQ_DIM, t, true, device),
                mlp_2: linear(t, t, true, device),
            },
            cap_embedder: CaptionEmbedder {
                norm: RmsNorm::init(self.cap_feat_dim, self.norm_eps, device),
                linear: linear(self.cap_feat_dim, d, true, device),
            },
            context_refiner: blocks(self.num_refiner_layers, false),
            noise_refiner: blocks(self.num_refiner_layers, true),
            layers: blocks(self.num_layers, true),
            final_layer: FinalLayer {
                ada_ln_modulation: linear(t, d, true, device),
                linear: linear(d, p2c, true, device),
            },
            config: self.clone(),
            dtype: FloatDType::F32,
        }
    }
}

/// The original key of module path `path` (`t_embedder.mlp_0.weight` → `t_embedder.mlp.0.weight`).
fn original_key(path: &str) -> String {
    path.replace(".mlp_0.", ".mlp.0.")
        .replace(".mlp_2.", ".mlp.2.")
        .replace("cap_embedder.norm.", "cap_embedder.0.")
        .replace("cap_embedder.linear.", "cap_embedder.1.")
        .replace(".ada_ln_modulation.", ".adaLN_modulation.1.")
}

/// Where `layout` stores the parameter at module path `path` of shape `shape`, in `dtype`
/// (norm gains stay f32).
fn source(path: &str, shape: &[usize], layout: Layout, dtype: FloatDType) -> ParamSource {
    let dtype = if path.split('.').any(|p| p.contains("norm")) {
        FloatDType::F32
    } else {
        dtype
    };
    let key = original_key(path);
    let mut source = match (layout, key.strip_suffix(".attention.qkv.weight")) {
        (Layout::Diffusers, Some(base)) => ParamSource {
            keys: ["to_q", "to_k", "to_v"]
                .map(|p| format!("{base}.attn.{p}.weight"))
                .to_vec(),
            ..ParamSource::tensor("", dtype)
        },
        _ => ParamSource::tensor(layout.key(&key), dtype),
    };
    // Every 2-D parameter is a linear weight, stored [out, in].
    source.transpose = shape.len() == 2;
    source
}

impl<B: Backend> NextDit<B> {
    /// Loads a checkpoint: an original / ComfyUI `.safetensors` (optionally prefixed
    /// `model.diffusion_model.`, as in all-in-one checkpoints), a GGUF or fp8 file, or a
    /// diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`, also as a
    /// pipeline's `transformer/`).
    pub fn load(path: impl AsRef<Path>, device: &B::Device) -> Result<Self, NextDitError> {
        Self::load_as(path, FloatDType::F32, device)
    }

    /// [`NextDit::load`] computing in `dtype` (see [`NextDit::from_weights_as`]).
    pub fn load_as(
        path: impl AsRef<Path>,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, NextDitError> {
        let path = path.as_ref();
        if let Some((config, weights)) = sakiko_weights::diffusers_component(path, "transformer") {
            let config = NextDitConfig::from_file(config)?;
            return Self::from_weights_as(
                &WeightFile::open_any(weights)?,
                Some(config),
                dtype,
                device,
            );
        }
        Self::from_weights_as(&WeightFile::open_any(path)?, None, dtype, device)
    }

    /// Builds from an open weight file, computing in f32; without `config`, it is detected from
    /// the tensor shapes.
    pub fn from_weights(
        file: &WeightFile,
        config: Option<NextDitConfig>,
        device: &B::Device,
    ) -> Result<Self, NextDitError> {
        Self::from_weights_as(file, config, FloatDType::F32, device)
    }

    /// [`NextDit::from_weights`] with weights and activations in `dtype`: `BF16` as ComfyUI runs
    /// the model on GPUs (half the memory of f32), `F16` with ComfyUI's overflow clamp after
    /// every attention and feed-forward output, or `F32`. Norms, the final LayerNorm and the
    /// sinusoidal features compute in f32 whatever the dtype; inputs and outputs are f32.
    pub fn from_weights_as(
        file: &WeightFile,
        config: Option<NextDitConfig>,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, NextDitError> {
        check_dtype::<B>(dtype, device)?;
        let (prefix, layout) = identify(file)?;
        let weights = file.scope(prefix);
        let config = match config {
            Some(c) => {
                c.validate()?;
                c
            }
            None => detect_config(file, &weights, layout)?,
        };
        config
            .init(device)
            .load_weights(&weights, layout, dtype, device)
    }

    /// Fills this model's parameters from `weights` (named in `layout`), kept and computed in
    /// `dtype` (see [`NextDit::from_weights_as`]).
    pub fn load_weights(
        self,
        weights: &Weights<'_>,
        layout: Layout,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, NextDitError> {
        check_dtype::<B>(dtype, device)?;
        let model = load_module(self, weights, |path, shape| {
            Ok(source(path, shape, layout, dtype))
        })?;
        Ok(Self { dtype, ..model })
    }

    /// The compute dtype.
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    /// The configuration.
    pub fn config(&self) -> &NextDitConfig {
        &self.config
    }

    /// Every linear layer and its names in the original / ComfyUI layout
    /// (`layers.0.attention.qkv`) and the diffusers one (`layers.0.attn.to_out.0`), where the
    /// fused `attention.qkv` is `attn.to_q`, `to_k` and `to_v`: the query rows, then the key and
    /// value rows of the grouped KV heads (2304, 768 and 768 in the 2B model). Works on a model
    /// fresh from [`NextDitConfig::init`] (nothing is read or allocated).
    pub fn linear_keys(&self) -> Vec<LinearKeys> {
        let c = &self.config;
        let (q, kv) = (
            c.num_attention_heads * c.head_dim(),
            c.num_kv_heads * c.head_dim(),
        );
        sakiko_weights::linear_modules(self)
            .into_iter()
            .map(|(module, shape, bias)| {
                let original = original_key(&format!("{module}.weight"));
                let stem = |key: &str| key.strip_suffix(".weight").unwrap_or(key).to_owned();
                let mut names = vec![KeyName::whole(stem(&original))];
                match original.strip_suffix(".attention.qkv.weight") {
                    Some(base) => names.extend(
                        [
                            ("to_q", 0..q),
                            ("to_k", q..q + kv),
                            ("to_v", q + kv..q + 2 * kv),
                        ]
                        .map(|(part, rows)| KeyName {
                            name: format!("{base}.attn.{part}"),
                            rows: Some(rows),
                        }),
                    ),
                    None => names.push(KeyName::whole(stem(&Layout::Diffusers.key(&original)))),
                }
                names.dedup();
                LinearKeys {
                    module,
                    shape,
                    bias,
                    names,
                }
            })
            .collect()
    }

    /// The velocity for latents `x` `[B, C, H, W]` at times `t` (one per sample, 1 = clean), given
    /// caption features `cap` `[B, L, cap_feat_dim]` whose first `cap_lens[b]` tokens are valid
    /// (right padding). Captions of different lengths (cond and uncond) share one batch, padding
    /// ignored as keys; odd latent sizes are padded circularly and the output cropped, as ComfyUI does.
    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        t: &[f32],
        cap: Tensor<B, 3>,
        cap_lens: &[usize],
    ) -> Result<Tensor<B, 4>, NextDitError> {
        self.forward_traced(x, t, cap, cap_lens, None)
    }

    /// [`NextDit::forward`], optionally recording the output of every block.
    pub fn forward_traced(
        &self,
        x: Tensor<B, 4>,
        t: &[f32],
        cap: Tensor<B, 3>,
        cap_lens: &[usize],
        mut trace: Option<&mut Trace<B>>,
    ) -> Result<Tensor<B, 4>, NextDitError> {
        let c = &self.config;
        let device = x.device();
        let [b, ch, h_in, w_in] = x.dims();
        let [cb, l, cf] = cap.dims();
        let p = c.patch_size;
        self.check_inputs(b, ch, h_in, w_in, [cb, l, cf], t, cap_lens)?;
        let dt = self.dtype;
        let x = pad_circular(x.cast(dt), p);
        let [_, _, h, w] = x.dims();
        let (hp, wp) = (h / p, w / p);
        let n_img = hp * wp;

        // Timestep and caption embeddings.
        let temb = sakiko_ops::linear(
            &self.t_embedder.mlp_2,
            silu(sakiko_ops::linear(
                &self.t_embedder.mlp_0,
                timestep_features::<B>(t, &device).cast(dt),
            )),
        );
        let silu_temb = silu(temb);
        let cap = sakiko_ops::linear(
            &self.cap_embedder.linear,
            self.cap_embedder.norm.forward(cap.cast(dt)),
        );
        let mut record = |name: String, v: &Tensor<B, 3>| {
            if let Some(tr) = trace.as_deref_mut() {
                tr.push((name, v.clone().cast(FloatDType::F32)));
            }
        };

        // Patchify: token r·w' + col, features (p_h, p_w, C) with C fastest.
        let tokens: Tensor<B, 6> = x.reshape([b, ch, hp, p, wp, p]);
        let tokens = tokens
            .permute([0, 2, 4, 3, 5, 1])
            .reshape([b, n_img, p * p * ch]);
        let mut img = sakiko_ops::linear(&self.x_embedder, tokens);
        record("x_embedder".into(), &img);

        // Context refiner: captions alone, padded keys ignored.
        let axes = Axes::new(c);
        let cap_pos: Vec<Vec<[usize; 3]>> = cap_lens
            .iter()
            .map(|_| (0..l).map(|i| [i, 0, 0]).collect())
            .collect();
        let cap_rope = axes.rope::<B>(&cap_pos, dt, &device);
        let mut cap = cap;
        for (i, block) in self.context_refiner.iter().enumerate() {
            cap = block.forward(cap, &cap_rope, Some(cap_lens), &silu_temb);
            record(format!("context_refiner.{i}"), &cap);
        }

        // Noise refiner: image tokens alone, at axis-0 position cap_len.
        let img_pos: Vec<Vec<[usize; 3]>> = cap_lens
            .iter()
            .map(|&len| (0..n_img).map(|j| [len, j / wp, j % wp]).collect())
            .collect();
        let img_rope = axes.rope::<B>(&img_pos, dt, &device);
        for (i, block) in self.noise_refiner.iter().enumerate() {
            img = block.forward(img, &img_rope, None, &silu_temb);
            record(format!("noise_refiner.{i}"), &img);
        }

        // Joint sequence: valid caption tokens, then image tokens, zero-padded to the longest.
        let seq_lens: Vec<usize> = cap_lens.iter().map(|len| len + n_img).collect();
        let s = seq_lens.iter().copied().max().unwrap_or(0);
        let d = c.hidden_size;
        let joint: Vec<Tensor<B, 3>> = (0..b)
            .map(|i| {
                let mut parts = vec![
                    cap.clone().narrow(0, i, 1).narrow(1, 0, cap_lens[i]),
                    img.clone().narrow(0, i, 1),
                ];
                if seq_lens[i] < s {
                    parts.push(Tensor::zeros(
                        [1, s - seq_lens[i], d],
                        (&device, DType::from(dt)),
                    ));
                }
                Tensor::cat(parts, 1)
            })
            .collect();
        let mut joint = Tensor::cat(joint, 0);
        let joint_pos: Vec<Vec<[usize; 3]>> = cap_lens
            .iter()
            .map(|&len| {
                let mut pos: Vec<[usize; 3]> = (0..len).map(|i| [i, 0, 0]).collect();
                pos.extend((0..n_img).map(|j| [len, j / wp, j % wp]));
                pos.resize(s, [0, 0, 0]);
                pos
            })
            .collect();
        let joint_rope = axes.rope::<B>(&joint_pos, dt, &device);
        for (i, block) in self.layers.iter().enumerate() {
            joint = block.forward(joint, &joint_rope, Some(&seq_lens), &silu_temb);
            record(format!("layers.{i}"), &joint);
        }

        // Final layer: LayerNorm without affine (eps 1e-6, in f32), scale, project to patches.
        let joint = joint.cast(FloatDType::F32);
        let mean = joint.clone().mean_dim(2);
        let centred = joint - mean;
        let var = centred.clone().square().mean_dim(2);
        let normed = (centred / var.add_scalar(1e-6).sqrt()).cast(dt);
        let scale: Tensor<B, 3> =
            sakiko_ops::linear(&self.final_layer.ada_ln_modulation, silu_temb).unsqueeze_dim(1);
        let y = sakiko_ops::linear(&self.final_layer.linear, normed * scale.add_scalar(1.0))
            .cast(FloatDType::F32);

        // Unpatchify each sample's image tokens.
        let out: Vec<Tensor<B, 4>> = (0..b)
            .map(|i| {
                let tokens = y.clone().narrow(0, i, 1).narrow(1, cap_lens[i], n_img);
                let t6: Tensor<B, 6> = tokens.reshape([hp, wp, p, p, ch, 1]);
                t6.permute([5, 4, 0, 2, 1, 3]).reshape([1, ch, h, w])
            })
            .collect();
        let out = Tensor::cat(out, 0);
        Ok(out.narrow(2, 0, h_in).narrow(3, 0, w_in))
    }

    #[allow(clippy::too_many_arguments)]
    fn check_inputs(
        &self,
        b: usize,
        ch: usize,
        h: usize,
        w: usize,
        [cb, l, cf]: [usize; 3],
        t: &[f32],
        cap_lens: &[usize],
    ) -> Result<(), NextDitError> {
        let c = &self.config;
        let bad = |why: String| Err(NextDitError::Input(why));
        if ch != c.in_channels {
            return bad(format!(
                "latents have {ch} channels, the model takes {}",
                c.in_channels
            ));
        }
        if cf != c.cap_feat_dim {
            return bad(format!(
                "caption features are {cf} wide, the model takes {}",
                c.cap_feat_dim
            ));
        }
        if cb != b || t.len() != b || cap_lens.len() != b {
            return bad(format!(
                "batch sizes differ: latents {b}, captions {cb}, timesteps {}, caption lengths {}",
                t.len(),
                cap_lens.len()
            ));
        }
        // Positions are not limited to `axes_lens` (diffusers' precomputed tables): the angles
        // are computed per position, as ComfyUI does, so long prompts and large images work.
        if let Some(&len) = cap_lens.iter().find(|&&len| len == 0 || len > l) {
            return bad(format!("caption length {len} must be in 1..={l}"));
        }
        if h == 0 || w == 0 {
            return bad(format!("latent {h}×{w} is empty"));
        }
        Ok(())
    }
}

/// Refuses compute dtypes other than f32/bf16/f16, and those the device lacks.
fn check_dtype<B: Backend>(dtype: FloatDType, device: &B::Device) -> Result<(), NextDitError> {
    sakiko_ops::check_compute_dtype::<B>(dtype, device).map_err(NextDitError::Unsupported)
}

/// Pads height and width circularly up to multiples of `p` (ComfyUI's handling of odd sizes).
fn pad_circular<B: Backend>(x: Tensor<B, 4>, p: usize) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let x = if h % p != 0 {
        Tensor::cat(vec![x.clone(), x.narrow(2, 0, p - h % p)], 2)
    } else {
        x
    };
    if w % p != 0 {
        Tensor::cat(vec![x.clone(), x.narrow(3, 0, p - w % p)], 3)
    } else {
        x
    }
}

/// `[cos(t·f_k), sin(t·f_k)]`, `f_k = exp(−ln(10000)·k/128)`, with t fed raw (not ×1000).
fn timestep_features<B: Backend>(t: &[f32], device: &B::Device) -> Tensor<B, 2> {
    let half = FREQ_DIM / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (-(10000f32.ln()) * k as f32 / half as f32).exp())
        .collect();
    let mut values = Vec::with_capacity(t.len() * FREQ_DIM);
    for &ti in t {
        values.extend(freqs.iter().map(|f| (ti * f).cos()));
        values.extend(freqs.iter().map(|f| (ti * f).sin()));
    }
    Tensor::from_data(TensorData::new(values, [t.len(), FREQ_DIM]), device)
}

/// The three RoPE axes: per-axis inverse frequencies `θ^(−2k/d_a)`, θ = 10000.
struct Axes {
    freqs: Vec<Vec<f64>>,
}

impl Axes {
    fn new(c: &NextDitConfig) -> Self {
        let freqs = c
            .axes_dim_rope
            .iter()
            .map(|&d| {
                (0..d / 2)
                    .map(|k| 10000f64.powf(-(2.0 * k as f64) / d as f64))
                    .collect()
            })
            .collect();
        Self { freqs }
    }

    /// cos/sin tables for each sample's positions (angles in f64, rounded to f32 as diffusers
    /// does, then to the compute dtype as ComfyUI does).
    fn rope<B: Backend>(
        &self,
        positions: &[Vec<[usize; 3]>],
        dtype: FloatDType,
        device: &B::Device,
    ) -> Rope<B> {
        let half: usize = self.freqs.iter().map(Vec::len).sum();
        let s = positions.first().map_or(0, Vec::len);
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for seq in positions {
            for pos in seq {
                for (axis, freqs) in self.freqs.iter().enumerate() {
                    for f in freqs {
                        let angle = pos[axis] as f64 * f;
                        cos.push(angle.cos() as f32);
                        sin.push(angle.sin() as f32);
                    }
                }
            }
        }
        let shape = [positions.len(), s, 1, half];
        let table =
            |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, shape), device).cast(dtype);
        Rope {
            cos: table(cos),
            sin: table(sin),
        }
    }
}
