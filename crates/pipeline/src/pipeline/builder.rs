//! [`PipelineBuilder`] and [`PipelineOptions`]: the checks made before any weight is loaded.

use burn::tensor::{FloatDType, backend::Backend};
use sakiko_gemma::EncoderOptions;
use sakiko_vae::Tiling;
use sakiko_weights::WeightFile;

use super::Pipeline;
use crate::request::SIDE_MULTIPLE;
use crate::{ModelFiles, PipelineError, TextEncoder};

/// How the pipeline manages memory and runs the encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PipelineOptions {
    /// Keep every component in memory between stages and requests (faster repeated generation);
    /// by default each is loaded when needed and freed after its stage.
    pub keep_in_memory: bool,
    /// Remember the conditioning of prompts already encoded (a few MB each; the
    /// [`CACHED_CONDITIONINGS`](crate::CACHED_CONDITIONINGS) most recently used), so repeated
    /// prompts skip the encoder entirely.
    pub cache_embeddings: bool,
    /// How the encoder runs (ComfyUI's behaviour by default).
    pub encoder: EncoderOptions,
    /// Decode in tiles (less memory, slight seams); `None` decodes at once, as ComfyUI first tries.
    pub vae_tiling: Option<Tiling>,
    /// The denoiser's compute dtype; `None` picks bf16 on CUDA (as ComfyUI on GPUs: half the
    /// memory) and f32 everywhere else. F16 applies ComfyUI's overflow clamp.
    pub dit_dtype: Option<FloatDType>,
    /// The text encoder's compute dtype; `None` as for the denoiser. Norms stay f32; F16
    /// clamps to its range.
    pub text_encoder_dtype: Option<FloatDType>,
    /// The VAE's compute dtype; `None` as for the denoiser. GroupNorms stay f32; F16 clamps to
    /// its range.
    pub vae_dtype: Option<FloatDType>,
    /// Check every weight at load for NaN, infinity and values beyond f16's range when loaded in
    /// f16 (on by default: one pass over values already in memory).
    pub check_weights: bool,
    /// Keep the denoiser's GGUF Q8_0 linear weights quantised in device memory (1.125 bytes
    /// per weight instead of 2 in bf16; the GEMM dequantises blocks as it reads them, exactly).
    /// `None`: on CubeCL backends (CUDA, wgpu); Flex dequantises at load (its quantised matmul
    /// would dequantise the whole weight at every call). Adapters dequantise the layers they
    /// patch; the others stay quantised, and a resident denoiser keeps the quantised originals to
    /// switch adapters.
    pub keep_quantized: Option<bool>,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        Self {
            keep_in_memory: false,
            cache_embeddings: true,
            encoder: EncoderOptions::comfyui(),
            vae_tiling: None,
            dit_dtype: None,
            text_encoder_dtype: None,
            vae_dtype: None,
            check_weights: true,
            keep_quantized: None,
        }
    }
}

/// Builds a [`Pipeline`].
#[derive(Debug)]
pub struct PipelineBuilder<B: Backend> {
    files: ModelFiles,
    device: B::Device,
    options: PipelineOptions,
}

impl<B: Backend> PipelineBuilder<B> {
    /// Default options on the default device ([`Pipeline::builder`]).
    pub(super) fn new(files: ModelFiles) -> Self {
        Self {
            files,
            device: Default::default(),
            options: PipelineOptions::default(),
        }
    }

    /// Runs on `device` (default: the backend's default device).
    pub fn device(mut self, device: B::Device) -> Self {
        self.device = device;
        self
    }

    /// All options at once.
    pub fn options(mut self, options: PipelineOptions) -> Self {
        self.options = options;
        self
    }

    /// Keep components in memory between stages and requests.
    pub fn keep_in_memory(mut self, keep: bool) -> Self {
        self.options.keep_in_memory = keep;
        self
    }

    /// Cache prompt embeddings.
    pub fn cache_embeddings(mut self, cache: bool) -> Self {
        self.options.cache_embeddings = cache;
        self
    }

    /// Text-encoder behaviour.
    pub fn encoder_options(mut self, options: EncoderOptions) -> Self {
        self.options.encoder = options;
        self
    }

    /// Tiled VAE decoding.
    pub fn vae_tiling(mut self, tiling: Option<Tiling>) -> Self {
        self.options.vae_tiling = tiling;
        self
    }

    /// The denoiser's compute dtype (`None`: automatic).
    pub fn dit_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.options.dit_dtype = dtype;
        self
    }

    /// The text encoder's compute dtype (`None`: automatic, see [`PipelineOptions`]).
    pub fn text_encoder_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.options.text_encoder_dtype = dtype;
        self
    }

    /// The VAE's compute dtype (`None`: automatic, see [`PipelineOptions`]).
    pub fn vae_dtype(mut self, dtype: Option<FloatDType>) -> Self {
        self.options.vae_dtype = dtype;
        self
    }

    /// Check weights for NaN, infinity and f16 overflow at load (on by default).
    pub fn check_weights(mut self, on: bool) -> Self {
        self.options.check_weights = on;
        self
    }

    /// Keep Q8_0 denoiser weights quantised on the device (`None`: automatic, see
    /// [`PipelineOptions::keep_quantized`]).
    pub fn keep_quantized(mut self, keep: Option<bool>) -> Self {
        self.options.keep_quantized = keep;
        self
    }

    /// Checks the backend, reads the tokenizer and every header, and checks that the components
    /// fit together. No weights are loaded yet.
    pub fn build(self) -> Result<Pipeline<B>, PipelineError> {
        crate::check_backend::<B>(&self.device)?;
        let text = TextEncoder::new(&self.files, self.options.encoder, self.device.clone())?;
        let (dit_file, dit) = self.files.dit_source()?;
        let (vae_file, vae) = self.files.vae_source()?;
        let te = text.config();
        if dit.cap_feat_dim != te.hidden_size {
            return Err(PipelineError::Incompatible(format!(
                "the denoiser takes {}-wide captions, the text encoder makes {}-wide ones",
                dit.cap_feat_dim, te.hidden_size
            )));
        }
        if dit.in_channels != vae.latent_channels {
            return Err(PipelineError::Incompatible(format!(
                "the denoiser works on {} latent channels, the VAE on {}",
                dit.in_channels, vae.latent_channels
            )));
        }
        if dit.patch_size * vae.downscale() != SIDE_MULTIPLE {
            return Err(PipelineError::Incompatible(format!(
                "VAE downscale {} × patch {} ≠ {SIDE_MULTIPLE}",
                vae.downscale(),
                dit.patch_size
            )));
        }
        let resolve = |dtype: Option<FloatDType>| -> Result<FloatDType, PipelineError> {
            let dtype = dtype.unwrap_or_else(|| auto_dtype::<B>(&self.device));
            if !B::supports_dtype(&self.device, dtype.into()) {
                return Err(PipelineError::Backend {
                    backend: B::name(&self.device),
                    reason: format!("it cannot compute in {dtype:?}; choose another dtype"),
                });
            }
            Ok(dtype)
        };
        let dit_dtype = resolve(self.options.dit_dtype)?;
        let vae_dtype = resolve(self.options.vae_dtype)?;
        let text = text
            .with_dtype(resolve(self.options.text_encoder_dtype)?)
            .with_weight_check(self.options.check_weights)
            .with_adapter_backup(self.options.keep_in_memory);
        let dit_prefix = sakiko_nextdit::identify(&dit_file).map(|(p, _)| p);
        let params = [
            parameter_count(&dit_file, dit_prefix.as_deref()),
            parameter_count(&vae_file, sakiko_vae::identify(&vae_file).map(|(p, _)| p)),
        ];
        let flex = crate::backend::backend_name::<B>() == "flex";
        if flex && self.options.keep_quantized == Some(true) {
            return Err(PipelineError::Request {
                name: "keep_quantized",
                value: "true".into(),
                expected: "false or automatic on Flex, which dequantises weights at load (its \
                           quantised matrix product would dequantise the whole weight at every \
                           call, and it requantises transposed blocks lossily)"
                    .into(),
            });
        }
        let q8_0_params = if self.options.keep_quantized.unwrap_or(!flex) {
            q8_0_linear_count(&dit_file, dit_prefix.as_deref())
        } else {
            0
        };
        Ok(Pipeline {
            files: self.files,
            device: self.device,
            options: self.options,
            text,
            dit_config: dit,
            vae_config: vae,
            dit_dtype,
            vae_dtype,
            params,
            q8_0_params,
            dit: None,
            vae: None,
            adapters: Default::default(),
            cache: Default::default(),
        })
    }
}

/// The denoiser's default compute dtype: bf16 on CUDA (what ComfyUI runs there), f32 elsewhere
/// (CPUs compute f32 faster and exactly).
pub fn auto_dtype<B: Backend>(device: &B::Device) -> FloatDType {
    let cuda = crate::backend::backend_name::<B>() == "cuda";
    if cuda && B::supports_dtype(device, FloatDType::BF16.into()) {
        FloatDType::BF16
    } else {
        FloatDType::F32
    }
}

/// Parameters of the 2-D Q8_0 tensors (linear weights) under `prefix`.
fn q8_0_linear_count<E>(file: &WeightFile, prefix: Result<&str, E>) -> u64 {
    let Ok(prefix) = prefix else { return 0 };
    let q8_0 = Some(sakiko_weights::StoredDtype::Gguf(
        sakiko_weights::GgmlType::Q8_0,
    ));
    file.keys()
        .filter(|k| k.starts_with(prefix) && file.dtype(k) == q8_0)
        .filter_map(|k| file.shape(k).filter(|s| s.len() == 2))
        .map(|s| s.iter().product::<usize>() as u64)
        .sum()
}

/// Parameters stored under `prefix` (0 when the prefix is unknown).
fn parameter_count<E>(file: &WeightFile, prefix: Result<&str, E>) -> u64 {
    let Ok(prefix) = prefix else { return 0 };
    file.keys()
        .filter(|k| k.starts_with(prefix))
        .filter_map(|k| file.shape(k))
        .map(|s| s.iter().product::<usize>() as u64)
        .sum()
}
