//! The Qwen3 decoder (`Qwen3ForCausalLM`) with a key/value cache.

use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, FloatDType, Tensor, TensorData, backend::Backend};
use sakiko_ops::{
    CausalMask, RmsNorm, apply_rope, causal_attention, clamp_fp16, repeat_kv, swiglu,
};
use sakiko_weights::{HostEmbedding, ParamSource, WeightFile, Weights, load_module};

use crate::{PrompterError, Qwen3Config};

fn linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(false).init(device)
}

/// `self_attn`: grouped-query projections with per-head q/k norms.
#[derive(Module, Debug)]
struct SelfAttention<B: Backend> {
    q_proj: Linear<B>,
    k_proj: Linear<B>,
    v_proj: Linear<B>,
    o_proj: Linear<B>,
    q_norm: RmsNorm<B>,
    k_norm: RmsNorm<B>,
}

/// `mlp`: the SwiGLU feed-forward.
#[derive(Module, Debug)]
struct Mlp<B: Backend> {
    gate_proj: Linear<B>,
    up_proj: Linear<B>,
    down_proj: Linear<B>,
}

/// One decoder layer.
#[derive(Module, Debug)]
struct DecoderLayer<B: Backend> {
    self_attn: SelfAttention<B>,
    mlp: Mlp<B>,
    input_layernorm: RmsNorm<B>,
    post_attention_layernorm: RmsNorm<B>,
}

/// The keys and values of every token run so far, per layer (`[1, H_kv, S, head_dim]`).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// The number of cached tokens (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The Qwen3 causal language model: a Burn module whose parameter paths are the Hugging Face
/// key names without `model.` (`layers.0.self_attn.q_norm.weight`); the embedding table stays on
/// the host in its stored precision, and `lm_head` is the embedding's transpose when the
/// checkpoint ties them (no `lm_head.weight`).
///
/// ```
/// use burn::backend::Flex;
/// use sakiko_prompter::Qwen3Config;
///
/// // Random weights (`Qwen3::load` fills them from a Hugging Face folder instead).
/// let model = Qwen3Config::tiny().init::<Flex>(&Default::default());
/// let mut cache = model.new_cache();
/// let logits = model.forward(&[1, 5, 9], &mut cache)?; // prefill
/// assert_eq!(logits.dims(), [3, 512]);
/// let next = model.next_logits(&[7], &mut cache)?; // one cached step
/// assert_eq!((next.len(), cache.len()), (512, 4));
/// # Ok::<(), sakiko_prompter::PrompterError>(())
/// ```
#[derive(Module, Debug)]
pub struct Qwen3<B: Backend> {
    #[module(skip)]
    embed_tokens: Arc<HostEmbedding>,
    layers: Vec<DecoderLayer<B>>,
    norm: RmsNorm<B>,
    lm_head: Linear<B>,
    #[module(skip)]
    config: Qwen3Config,
    #[module(skip)]
    dtype: FloatDType,
}

impl Qwen3Config {
    /// The model with this configuration and random weights (lazily made: loading replaces
    /// them without ever allocating them).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Qwen3<B> {
        let (h, hd, i, eps) = (
            self.hidden_size,
            self.head_dim(),
            self.intermediate_size,
            self.rms_norm_eps,
        );
        let (q, kv) = (self.num_attention_heads * hd, self.num_key_value_heads * hd);
        let layers = (0..self.num_hidden_layers)
            .map(|_| DecoderLayer {
                self_attn: SelfAttention {
                    q_proj: linear(h, q, device),
                    k_proj: linear(h, kv, device),
                    v_proj: linear(h, kv, device),
                    o_proj: linear(q, h, device),
                    q_norm: RmsNorm::init(hd, eps, device),
                    k_norm: RmsNorm::init(hd, eps, device),
                },
                mlp: Mlp {
                    gate_proj: linear(h, i, device),
                    up_proj: linear(h, i, device),
                    down_proj: linear(i, h, device),
                },
                input_layernorm: RmsNorm::init(h, eps, device),
                post_attention_layernorm: RmsNorm::init(h, eps, device),
            })
            .collect();
        Qwen3 {
            embed_tokens: Arc::new(HostEmbedding::Random { dim: h }),
            layers,
            norm: RmsNorm::init(h, eps, device),
            lm_head: linear(h, self.vocab_size, device),
            config: self.clone(),
            dtype: FloatDType::F32,
        }
    }
}

impl<B: Backend> Qwen3<B> {
    /// Loads a Hugging Face folder (`config.json` with single or sharded safetensors in
    /// f32/bf16/f16), keeping and computing the weights in `dtype` (norm gains stay f32).
    pub fn load(
        dir: impl AsRef<Path>,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, PrompterError> {
        let dir = dir.as_ref();
        let config = Qwen3Config::from_file(dir.join("config.json"))?;
        let file = WeightFile::open_transformers_folder(dir)?;
        config.init(device).load_weights(&file, dtype, device)
    }

    /// Fills this model from a checkpoint with Hugging Face names (`model.` prefix optional).
    pub fn load_weights(
        self,
        file: &WeightFile,
        dtype: FloatDType,
        device: &B::Device,
    ) -> Result<Self, PrompterError> {
        sakiko_ops::check_compute_dtype::<B>(dtype, device).map_err(PrompterError::Unsupported)?;
        let prefix = file.detect_prefix("embed_tokens.weight", &["model.", ""])?;
        let w: Weights<'_> = file.scope(prefix);
        let c = &self.config;
        let embed_tokens =
            HostEmbedding::load(&w, "embed_tokens.weight", c.vocab_size, c.hidden_size)?;
        // `lm_head` sits outside `model.`; absent, it is the embedding (tied).
        let head = ["lm_head.weight", "model.lm_head.weight"]
            .into_iter()
            .find(|k| file.contains(k))
            .map(str::to_owned)
            .unwrap_or_else(|| w.key("embed_tokens.weight"));
        let whole = file.scope("");
        let model = load_module(self, &whole, |path, shape| {
            if path == "lm_head.weight" {
                return Ok(ParamSource::linear_weight(head.clone(), dtype));
            }
            let key = format!("{prefix}{path}");
            // Every 2-D parameter is a linear weight, stored [out, in]; the 1-D ones are norms.
            Ok(if shape.len() == 2 {
                ParamSource::linear_weight(key, dtype)
            } else {
                ParamSource::tensor(key, FloatDType::F32)
            })
        })?;
        Ok(Self {
            embed_tokens: Arc::new(embed_tokens),
            dtype,
            ..model
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Qwen3Config {
        &self.config
    }

    /// The compute dtype.
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache {
            layers: vec![None; self.config.num_hidden_layers],
            len: 0,
        }
    }

    /// Runs `ids` after the cached tokens and returns the logits of every new position (f32).
    ///
    /// # Shapes
    /// - `ids`: `L ≥ 1` token ids
    /// - returns `[L, vocab_size]`
    pub fn forward(
        &self,
        ids: &[u32],
        cache: &mut KvCache<B>,
    ) -> Result<Tensor<B, 2>, PrompterError> {
        let x = self.hidden(ids, cache)?;
        let [_, l, h] = x.dims();
        Ok(sakiko_ops::linear(&self.lm_head, x.reshape([l, h])).cast(FloatDType::F32))
    }

    /// Runs `ids` after the cached tokens and returns the logits of the last one only (the head
    /// runs on one row, which is what generation needs).
    pub fn next_logits(
        &self,
        ids: &[u32],
        cache: &mut KvCache<B>,
    ) -> Result<Vec<f32>, PrompterError> {
        let x = self.hidden(ids, cache)?;
        let [_, l, h] = x.dims();
        let last = x.narrow(1, l - 1, 1).reshape([1, h]);
        let logits = sakiko_ops::linear(&self.lm_head, last).cast(FloatDType::F32);
        logits
            .into_data()
            .into_vec::<f32>()
            .map_err(|e| PrompterError::Input(format!("reading logits: {e:?}")))
    }

    /// The final-norm hidden states `[1, L, hidden]` of `ids`, appending their keys and values
    /// to `cache`.
    fn hidden(&self, ids: &[u32], cache: &mut KvCache<B>) -> Result<Tensor<B, 3>, PrompterError> {
        let c = &self.config;
        if ids.is_empty() {
            return Err(PrompterError::Input("no tokens to run".into()));
        }
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(PrompterError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let needed = cache.len + ids.len();
        if needed > c.max_position_embeddings {
            return Err(PrompterError::ContextFull {
                needed,
                max: c.max_position_embeddings,
            });
        }
        if cache.layers.len() != self.layers.len() {
            return Err(PrompterError::Input(
                "the cache belongs to another model".into(),
            ));
        }
        let device = self.lm_head.weight.device();
        let (l, h) = (ids.len(), c.hidden_size);
        let mut values = Vec::with_capacity(l * h);
        for &id in ids {
            self.embed_tokens.row(id as usize, &mut values);
        }
        let x: Tensor<B, 3> = Tensor::from_data(TensorData::new(values, [1, l, h]), &device);
        let mut x = x.cast(self.dtype);
        let (cos, sin) =
            sakiko_ops::rope_tables::<B>(c.rope_theta, c.head_dim(), cache.len, l, &device);
        let (cos, sin) = (cos.cast(self.dtype), sin.cast(self.dtype));
        let visible = match (cache.len, l) {
            (_, 1) => Visible::Cached,
            (0, _) => Visible::Prefill(CausalMask::new(&[l], None)),
            (past, _) => Visible::After(causal_mask::<B>(past, l, c.num_attention_heads, &device)),
        };
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            x = self.layer(layer, x, &cos, &sin, &visible, slot);
        }
        cache.len = needed;
        Ok(self.norm.forward(x))
    }

    fn layer(
        &self,
        layer: &DecoderLayer<B>,
        x: Tensor<B, 3>,
        cos: &Tensor<B, 4>,
        sin: &Tensor<B, 4>,
        visible: &Visible<B>,
        slot: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> Tensor<B, 3> {
        let c = &self.config;
        let [b, l, _] = x.dims();
        let (heads, kv, hd) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim());
        let attn = &layer.self_attn;
        let u = layer.input_layernorm.forward(x.clone());
        let split = |t: Tensor<B, 3>, n: usize| -> Tensor<B, 4> {
            t.reshape([b, l, n, hd]).swap_dims(1, 2)
        };
        // The per-head q/k norms (over head_dim), then RoPE.
        let q = apply_rope(
            attn.q_norm
                .forward(split(sakiko_ops::linear(&attn.q_proj, u.clone()), heads)),
            cos,
            sin,
        );
        let k = apply_rope(
            attn.k_norm
                .forward(split(sakiko_ops::linear(&attn.k_proj, u.clone()), kv)),
            cos,
            sin,
        );
        let v = split(sakiko_ops::linear(&attn.v_proj, u), kv);
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        // Scores and softmax in f32, as transformers' eager attention does in half precision.
        let f32 = |t: Tensor<B, 4>| t.cast(FloatDType::F32);
        let scale = (hd as f64).powf(-0.5);
        let a = match visible {
            // One new token sees every cached one: no mask, grouped heads without repeating K/V.
            Visible::Cached => sakiko_ops::attention(f32(q), f32(k), f32(v), None),
            Visible::Prefill(mask) => causal_attention(f32(q), f32(k), f32(v), mask, scale, None),
            Visible::After(mask) => {
                let options = AttentionModuleOptions {
                    scale: Some(scale),
                    softcap: None,
                    is_causal: false,
                };
                attention(
                    f32(q),
                    f32(repeat_kv(k, heads / kv)),
                    f32(repeat_kv(v, heads / kv)),
                    Some(mask.clone()),
                    None,
                    options,
                )
            }
        };
        let a = a
            .cast(FloatDType::from(x.dtype()))
            .swap_dims(1, 2)
            .reshape([b, l, heads * hd]);
        let x = clamp_fp16(x + sakiko_ops::linear(&attn.o_proj, a));
        let u = layer.post_attention_layernorm.forward(x.clone());
        let f = sakiko_ops::linear(
            &layer.mlp.down_proj,
            swiglu(
                sakiko_ops::linear(&layer.mlp.gate_proj, u.clone()),
                sakiko_ops::linear(&layer.mlp.up_proj, u),
            ),
        );
        clamp_fp16(x + f)
    }
}

/// Which keys the new tokens of a forward see.
enum Visible<B: Backend> {
    /// One new token: every cached key.
    Cached,
    /// The prompt, nothing cached: causal (one fused kernel on Flex).
    Prefill(CausalMask<B>),
    /// Several new tokens after cached ones: this causal mask.
    After(Tensor<B, 4, Bool>),
}

/// The causal mask of `l` new queries after `past` cached keys: `[1, H, L, past + L]`, true =
/// ignore.
fn causal_mask<B: Backend>(
    past: usize,
    l: usize,
    heads: usize,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let s = past + l;
    let values: Vec<bool> = (0..l)
        .flat_map(|q| (0..s).map(move |k| k > past + q))
        .collect();
    let m: Tensor<B, 4, Bool> = Tensor::from_data(TensorData::new(values, [1, 1, l, s]), device);
    m.expand([1, heads, l, s])
}
