//! The Gemma-2 decoder stack, used as an encoder.

use std::path::Path;

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::{FloatDType, Tensor, TensorData, backend::Backend};
use sakiko_ops::{CausalMask, apply_rope, causal_attention, clamp_fp16, geglu};
use sakiko_weights::{
    HostEmbedding, KeyName, LinearKeys, ParamSource, WeightError, WeightFile, Weights, load_module,
};

use crate::{EncoderOptions, Gemma2Config};

/// Prefixes under which checkpoints store the encoder: Hugging Face `Gemma2Model` (none),
/// `Gemma2ForCausalLM` and ComfyUI's `gemma_2_2b_fp16.safetensors` (`model.`), all-in-one checkpoints.
pub const PREFIXES: [&str; 4] = [
    "",
    "model.",
    "text_encoders.gemma2_2b.transformer.model.",
    "transformer.model.",
];

/// What can go wrong loading or running the encoder.
#[derive(Debug, thiserror::Error)]
pub enum GemmaError {
    /// Reading the weights or the config failed.
    #[error(transparent)]
    Weights(#[from] WeightError),
    /// A configuration this crate cannot build.
    #[error("unsupported Gemma-2 configuration: {0}")]
    Unsupported(String),
    /// The file's shapes match no known Gemma-2, so its configuration (head count, head width)
    /// cannot be read from them.
    #[error(
        "cannot tell the configuration of the Gemma-2 text encoder in {}: {found}, which matches \
         no known Gemma-2 (2B: hidden size 2304); pass the model's Hugging Face config.json \
         (`--text-encoder-config config.json`, or `ModelFiles::with_text_encoder_config`)",
        .path.display()
    )]
    UndetectableConfig {
        /// The weight file.
        path: std::path::PathBuf,
        /// What its shapes say (e.g. `hidden size 64`).
        found: String,
    },
    /// Inputs that do not fit the model.
    #[error("invalid input: {0}")]
    Input(String),
    /// The tokenizer could not be built or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Gemma's RMSNorm: `x · rsqrt(mean(x²) + eps) · (1 + w)`.
#[derive(Module, Debug)]
struct Norm<B: Backend> {
    weight: Param<Tensor<B, 1>>,
    eps: f64,
}

impl<B: Backend> Norm<B> {
    fn init(dim: usize, eps: f64, device: &B::Device) -> Self {
        Self {
            weight: Initializer::Zeros.init([dim], device),
            eps,
        }
    }

    /// Computed in f32 and returned in the input's dtype, as transformers does: in f16, mean(x²)
    /// of Gemma's residual stream overflows.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        sakiko_ops::rms_norm(x, self.weight.val().add_scalar(1.0), self.eps)
    }
}

fn linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(false).init(device)
}

/// `self_attn`: grouped-query attention projections.
#[derive(Module, Debug)]
struct SelfAttention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    o_proj: Linear<B>,
}

/// `mlp`: the gated GELU feed-forward.
#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    gate_proj: Linear<B>,
    up_proj: Linear<B>,
    down_proj: Linear<B>,
}

/// One decoder layer, with Gemma-2's four norms.
#[derive(Module, Debug)]
struct Layer<B: Backend> {
    self_attn: SelfAttention<B>,
    mlp: Mlp<B>,
    input_layernorm: Norm<B>,
    post_attention_layernorm: Norm<B>,
    pre_feedforward_layernorm: Norm<B>,
    post_feedforward_layernorm: Norm<B>,
}

/// Every hidden state of a batch: `states[0]` the scaled embeddings, `states[j]` the output of
/// layer `j − 1`, the last one after the final norm (as transformers' `output_hidden_states`).
#[derive(Debug, Clone)]
pub struct Hidden<B: Backend> {
    /// `num_hidden_layers + 1` tensors `[B, L, hidden]` (L: the longest prompt; right-padded).
    pub states: Vec<Tensor<B, 3>>,
    /// The number of tokens of each prompt.
    pub lengths: Vec<usize>,
}

impl<B: Backend> Hidden<B> {
    /// The conditioning Lumina uses: the hidden state entering the last layer (`hidden_states[-2]`).
    pub fn conditioning(&self) -> Tensor<B, 3> {
        self.states[self.states.len() - 2].clone()
    }
}

/// The Gemma-2 encoder: a Burn module whose parameter paths are the Hugging Face key names
/// (`layers.0.self_attn.q_proj.weight`); the embedding table stays on the host, outside the
/// module, in its stored precision.
///
/// ```
/// use burn::backend::Flex;
/// use sakiko_gemma::{EncoderOptions, Gemma2, Gemma2Config};
///
/// let config = Gemma2Config { vocab_size: 64, hidden_size: 16, intermediate_size: 32,
///     num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1, head_dim: 8,
///     query_pre_attn_scalar: 8.0, ..Gemma2Config::gemma_2_2b() };
/// // Random weights (`Gemma2::load` fills them from a checkpoint instead).
/// let model: Gemma2<Flex> = config.init(&Default::default());
/// let hidden = model.forward(&[vec![2, 5, 9]], EncoderOptions::default(), &Default::default())?;
/// assert_eq!(hidden.conditioning().dims(), [1, 3, 16]);
/// # Ok::<(), sakiko_gemma::GemmaError>(())
/// ```
#[derive(Module, Debug)]
pub struct Gemma2<B: Backend> {
    #[module(skip)]
    embed_tokens: Arc<HostEmbedding>,
    layers: Vec<Layer<B>>,
    norm: Norm<B>,
    #[module(skip)]
    config: Gemma2Config,
    #[module(skip)]
    dtype: FloatDType,
}

impl Gemma2Config {
    /// The encoder with this configuration and random weights (lazily made: loading replaces
    /// them without ever allocating them).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Gemma2<B> {
        let (h, hd, i, eps) = (
            self.hidden_size,
            self.head_dim,
            self.intermediate_size,
            self.rms_norm_eps,
        );
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let layers = (0..self.num_hidden_layers)
            .map(|_| Layer {
                self_attn: SelfAttention {
                    q_proj: linear(h, q, device),
                    k_proj: linear(h, kv, device),
                    v_proj: linear(h, kv, device),
                    o_proj: linear(q, h, device),
                },
                mlp: Mlp {
                    gate_proj: linear(h, i, device),
                    up_proj: linear(h, i, device),
                    down_proj: linear(i, h, device),
                },
                input_layernorm: Norm::init(h, eps, device),
                post_attention_layernorm: Norm::init(h, eps, device),
                pre_feedforward_layernorm: Norm::init(h, eps, device),
                post_feedforward_layernorm: Norm::init(h, eps, device),
            })
            .collect();
        Gemma2 {
            embed_tokens: Arc::new(HostEmbedding::Random { dim: h }),
            layers,
            norm: Norm::init(h, eps, device),
            config: self.clone(),
            dtype: FloatDType::F32,
        }
    }
}

impl<B: Backend> Gemma2<B> {
    /// Loads from a safetensors file (HF names, optionally under one of [`PREFIXES`]; without a
    /// config, widths, layers and heads are detected from the shapes and the rest is the 2B
    /// preset's), or from a Hugging Face
    /// folder (`config.json` with `model.safetensors` or a sharded `model.safetensors.index.json`).
    pub fn load(
        path: impl AsRef<Path>,
        config: Option<Gemma2Config>,
        device: &B::Device,
    ) -> Result<Self, GemmaError> {
        Self::load_as(path, config, FloatDType::F32, device)
    }

    /// [`Gemma2::load`] computing in `dtype` (see [`Gemma2::from_weights_as`]).
    pub fn load_as(
        path: impl AsRef<Path>,
        config: Option<Gemma2Config>,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, GemmaError> {
        let path = path.as_ref();
        let config = match config {
            Some(c) => Some(c),
            None if path.is_dir() => Some(Gemma2Config::from_file(path.join("config.json"))?),
            None => None,
        };
        Self::from_weights_as(&open_weights(path)?, config, dtype, device)
    }

    /// Builds from an open weight file, computing in f32.
    pub fn from_weights(
        file: &WeightFile,
        config: Option<Gemma2Config>,
        device: &B::Device,
    ) -> Result<Self, GemmaError> {
        Self::from_weights_as(file, config, FloatDType::F32, device)
    }

    /// [`Gemma2::from_weights`] with weights and activations in `dtype` (`BF16` or `F16`: half
    /// the memory of f32), as transformers runs the model in half precision: norms compute in
    /// f32; in f16, attention and feed-forward outputs and the residual stream are clamped to
    /// f16's range (ComfyUI's `clamp_fp16`). Hidden states come out in f32.
    pub fn from_weights_as(
        file: &WeightFile,
        config: Option<Gemma2Config>,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, GemmaError> {
        check_dtype::<B>(dtype, device)?;
        let w = file.scope(identify(file)?);
        let c = match config {
            Some(c) => c,
            None => detect_config(file, &w)?,
        };
        c.validate()?;
        c.init(device).load_weights(&w, dtype, device)
    }

    /// Fills this encoder's parameters and embedding table from `weights` (Hugging Face names),
    /// kept and computed in `dtype` (norm gains stay f32).
    pub fn load_weights(
        self,
        w: &Weights<'_>,
        compute: FloatDType,
        device: &B::Device,
    ) -> Result<Self, GemmaError> {
        check_dtype::<B>(compute, device)?;
        let c = &self.config;
        let embed_tokens =
            HostEmbedding::load(w, "embed_tokens.weight", c.vocab_size, c.hidden_size)?;
        let model = load_module(self, w, |path, shape| {
            // Every 2-D parameter is a linear weight, stored [out, in]; the 1-D ones are norms.
            Ok(if shape.len() == 2 {
                ParamSource::linear_weight(path, compute)
            } else {
                ParamSource::tensor(path, FloatDType::F32)
            })
        })?;
        Ok(Self {
            embed_tokens: Arc::new(embed_tokens),
            dtype: compute,
            ..model
        })
    }

    /// The compute dtype.
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    /// The configuration.
    pub fn config(&self) -> &Gemma2Config {
        &self.config
    }

    /// Every linear layer (`layers.0.self_attn.q_proj`, …, `layers.0.mlp.down_proj`) under its
    /// Hugging Face name, which is also its module path. Works on a model fresh from
    /// [`Gemma2Config::init`] (nothing is read or allocated).
    pub fn linear_keys(&self) -> Vec<LinearKeys> {
        sakiko_weights::linear_modules(self)
            .into_iter()
            .map(|(module, shape, bias)| LinearKeys {
                names: vec![KeyName::whole(module.clone())],
                module,
                shape,
                bias,
            })
            .collect()
    }

    /// Runs token-id sequences of any lengths (right-padded internally, masked) and returns every
    /// hidden state.
    pub fn forward(
        &self,
        ids: &[Vec<u32>],
        options: EncoderOptions,
        device: &B::Device,
    ) -> Result<Hidden<B>, GemmaError> {
        let c = &self.config;
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let l = lengths
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(options.pad_to.unwrap_or(0));
        if ids.is_empty() || lengths.contains(&0) {
            return Err(GemmaError::Input(
                "every prompt needs at least one token (BOS)".into(),
            ));
        }
        if let Some(&bad) = ids
            .iter()
            .flatten()
            .find(|&&id| id as usize >= c.vocab_size)
        {
            return Err(GemmaError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let (b, h) = (ids.len(), c.hidden_size);
        let mut values = Vec::with_capacity(b * l * h);
        for seq in ids {
            for pos in 0..l {
                // Padding uses <pad> (id 0), as transformers' right padding does.
                self.embed_tokens
                    .row(seq.get(pos).map_or(0, |&id| id as usize), &mut values);
            }
        }
        let dt = self.dtype;
        let x: Tensor<B, 3> = Tensor::from_data(TensorData::new(values, [b, l, h]), device);
        // transformers scales the embeddings by √hidden rounded to the compute dtype.
        let normalizer: Tensor<B, 1> = Tensor::from_floats([(h as f32).sqrt()], device).cast(dt);
        let mut x = x.cast(dt) * normalizer.unsqueeze();
        let (cos, sin) = sakiko_ops::rope_tables::<B>(c.rope_theta, c.head_dim, 0, l, device);
        let (cos, sin) = (cos.cast(dt), sin.cast(dt));
        let window = c.sliding_window.filter(|_| options.sliding_window);
        let softcap = if options.softcap {
            c.attn_logit_softcapping
        } else {
            None
        };
        // Built once, shared by the layers: even layers are the sliding-window ones.
        let global = CausalMask::new(&lengths, None);
        let sliding = window.map(|w| CausalMask::new(&lengths, Some(w)));
        let mut states = vec![x.clone()];
        for (n, layer) in self.layers.iter().enumerate() {
            let mask = sliding.as_ref().filter(|_| n % 2 == 0).unwrap_or(&global);
            x = self.layer(layer, x, &cos, &sin, mask, softcap);
            states.push(x.clone());
        }
        if let Some(last) = states.last_mut() {
            *last = self.norm.forward(last.clone());
        }
        let states = states
            .into_iter()
            .map(|s| s.cast(FloatDType::F32))
            .collect();
        Ok(Hidden { states, lengths })
    }

    /// One decoder layer over right-padded samples, attending as `mask` allows.
    fn layer(
        &self,
        layer: &Layer<B>,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        mask: &CausalMask<B>,
        softcap: Option<f64>,
    ) -> Tensor<B, 3> {
        let c = &self.config;
        let [b, l, _] = x.dims();
        let (heads, kv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let u = layer.input_layernorm.forward(x.clone());
        let attn = &layer.self_attn;
        let split = |t: Tensor<B, 3>, n: usize| -> Tensor<B, 4> {
            t.reshape([b, l, n, hd]).swap_dims(1, 2)
        };
        let rotate = |t| apply_rope(t, cos, sin);
        let q = rotate(split(sakiko_ops::linear(&attn.q_proj, u.clone()), heads));
        let k = rotate(split(sakiko_ops::linear(&attn.k_proj, u.clone()), kv));
        let v = split(sakiko_ops::linear(&attn.v_proj, u), kv);
        // Scores and softmax in f32, as transformers' eager attention does in half precision.
        let f32 = |t: Tensor<B, 4>| t.cast(FloatDType::F32);
        let scale = c.query_pre_attn_scalar.powf(-0.5);
        let a = causal_attention(f32(q), f32(k), f32(v), mask, scale, softcap)
            .cast(FloatDType::from(x.dtype()))
            .swap_dims(1, 2)
            .reshape([b, l, heads * hd]);
        let x = clamp_fp16(
            x + layer
                .post_attention_layernorm
                .forward(clamp_fp16(sakiko_ops::linear(&layer.self_attn.o_proj, a))),
        );
        let u = layer.pre_feedforward_layernorm.forward(x.clone());
        let f = sakiko_ops::linear(
            &layer.mlp.down_proj,
            geglu(
                sakiko_ops::linear(&layer.mlp.gate_proj, u.clone()),
                sakiko_ops::linear(&layer.mlp.up_proj, u),
            ),
        );
        clamp_fp16(x + layer.post_feedforward_layernorm.forward(clamp_fp16(f)))
    }
}

/// Opens a Gemma-2 checkpoint: a weight file, or a Hugging Face folder (`model.safetensors` or a
/// sharded `model.safetensors.index.json`).
pub fn open_weights(path: impl AsRef<Path>) -> Result<WeightFile, GemmaError> {
    let path = path.as_ref();
    Ok(if path.is_dir() {
        WeightFile::open_transformers_folder(path)?
    } else {
        WeightFile::open_any(path)?
    })
}

/// What a checkpoint holds, read from its header alone (no tensor is loaded).
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    /// The key prefix (one of [`PREFIXES`]).
    pub prefix: &'static str,
    /// The configuration: widths, layers and heads from the shapes, the rest from the 2B preset.
    pub config: Gemma2Config,
    /// Whether the file embeds the SentencePiece model (`spiece_model`, as ComfyUI's files do).
    pub has_tokenizer: bool,
}

/// The prefix under which `file` holds a Gemma-2 encoder (one of [`PREFIXES`]), from the keys
/// alone; an error when it holds none.
pub fn identify(file: &WeightFile) -> Result<&'static str, GemmaError> {
    Ok(file.detect_prefix("embed_tokens.weight", &PREFIXES)?)
}

/// Identifies a Gemma-2 checkpoint and detects its configuration, without loading it.
pub fn detect(file: &WeightFile) -> Result<Detected, GemmaError> {
    let prefix = identify(file)?;
    let config = detect_config(file, &file.scope(prefix))?;
    Ok(Detected {
        prefix,
        config,
        has_tokenizer: crate::GemmaTokenizer::embedded_prefix(file).is_some(),
    })
}

/// The configuration from the shapes of a Gemma-2 2B-shaped checkpoint (vocabulary, widths,
/// layer count; heads from the preset's head width); other sizes are refused, since their head
/// width is in no shape.
fn detect_config(file: &WeightFile, w: &Weights<'_>) -> Result<Gemma2Config, GemmaError> {
    let preset = Gemma2Config::gemma_2_2b();
    let dim = |name: &str, axis: usize, default: usize| w.shape(name).map_or(default, |s| s[axis]);
    let hd = preset.head_dim;
    let hidden_size = dim("embed_tokens.weight", 1, preset.hidden_size);
    let (q_rows, kv_rows) = (
        dim("layers.0.self_attn.q_proj.weight", 0, 0),
        dim("layers.0.self_attn.k_proj.weight", 0, 0),
    );
    let undetectable = |found: String| GemmaError::UndetectableConfig {
        path: file.path().to_path_buf(),
        found,
    };
    if hidden_size != preset.hidden_size {
        return Err(undetectable(format!("hidden size {hidden_size}")));
    }
    if q_rows == 0 || kv_rows == 0 || q_rows % hd != 0 || kv_rows % hd != 0 {
        return Err(undetectable(format!(
            "hidden size {hidden_size} with {q_rows}-row query and {kv_rows}-row key projections"
        )));
    }
    let config = Gemma2Config {
        vocab_size: dim("embed_tokens.weight", 0, preset.vocab_size),
        hidden_size,
        intermediate_size: dim("layers.0.mlp.gate_proj.weight", 0, preset.intermediate_size),
        num_hidden_layers: (0..)
            .take_while(|n| w.contains(&format!("layers.{n}.input_layernorm.weight")))
            .count(),
        num_attention_heads: q_rows / hd,
        num_key_value_heads: kv_rows / hd,
        ..preset
    };
    config.validate()?;
    Ok(config)
}

/// Refuses compute dtypes other than f32/bf16/f16, and those the device lacks.
fn check_dtype<B: Backend>(dtype: FloatDType, device: &B::Device) -> Result<(), GemmaError> {
    sakiko_ops::check_compute_dtype::<B>(dtype, device).map_err(GemmaError::Unsupported)
}
