//! Text → image: the pipeline, its builder and its progress events.

use std::ops::ControlFlow;
use std::path::PathBuf;

use burn::tensor::{DType, FloatDType, Tensor, backend::Backend};
use image::{DynamicImage, RgbImage};
use sakiko_gemma::EncoderOptions;
use sakiko_nextdit::{NextDit, NextDitConfig};
use sakiko_sampling::{FlowSampling, TorchGenerator, TorchNoise, sample};
use sakiko_vae::{Tiling, Vae, VaeConfig};
use sakiko_weights::WeightFile;

use crate::denoiser::{Conditioning, LuminaDenoiser};
use crate::error::ensure_finite;
use crate::preview::latent_preview;
use crate::request::{OutputDepth, SIDE_MULTIPLE, TRAINED_TOKENS};
use crate::{Component, GenerationRequest, MemoryEstimate, ModelFiles, PipelineError, TextEncoder};

mod adapters;

pub use adapters::AdapterSpec;

/// What the pipeline is doing; the callback given to [`Pipeline::generate`] sees every event and
/// cancels by returning `ControlFlow::Break(())`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A component's weights are being read.
    Load {
        /// Which.
        component: Component,
        /// From where.
        path: PathBuf,
    },
    /// A component's weights were freed (memory-lean mode).
    Release {
        /// Which.
        component: Component,
    },
    /// The prompts were tokenized (counts include BOS).
    Tokens {
        /// Prompt tokens.
        positive: usize,
        /// Negative-prompt tokens.
        negative: usize,
    },
    /// Something the user should know (long prompt, prompt warnings).
    Warning(String),
    /// Estimated peak memory of this request.
    Memory(MemoryEstimate),
    /// A sampling step finished.
    Step {
        /// The step just finished (from 0).
        step: usize,
        /// Total steps.
        steps: usize,
        /// σ at its start.
        sigma: f32,
    },
    /// The latents are being decoded.
    Decode,
    /// An adapter was read and matched to the models' layers (once per adapter set).
    Adapter(sakiko_adapters::AdapterReport),
    /// A cheap preview of the image being sampled (batch item 0, at latent resolution), every
    /// [`GenerationRequest::preview_every`] steps and after the last.
    Preview {
        /// The step just finished (from 0).
        step: usize,
        /// Total steps.
        steps: usize,
        /// The x0 prediction mapped to RGB (see [`latent_preview`]).
        image: RgbImage,
    },
}

impl Event {
    /// The event's kind, for messages (`step 3/30`, `preview`, `load`, …).
    pub fn name(&self) -> String {
        match self {
            Event::Load { component, .. } => format!("loading the {component}"),
            Event::Release { component } => format!("releasing the {component}"),
            Event::Tokens { .. } => "tokenizing".into(),
            Event::Warning(_) => "a warning".into(),
            Event::Memory(_) => "the memory estimate".into(),
            Event::Step { step, steps, .. } => format!("step {}/{steps}", step + 1),
            Event::Decode => "decoding".into(),
            Event::Adapter(_) => "an adapter".into(),
            Event::Preview { step, steps, .. } => {
                format!("the preview of step {}/{steps}", step + 1)
            }
        }
    }
}

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

/// The result of [`Pipeline::generate`].
#[derive(Debug, Clone)]
pub struct Generation<B: Backend> {
    /// One image per batch item.
    pub images: Vec<DynamicImage>,
    /// The sampler's final latent in model space (before the VAE's scale and shift), `[B, 16, H/8, W/8]`.
    pub latent: Tensor<B, 4>,
    /// Prompt tokens (BOS included).
    pub positive_tokens: usize,
    /// Negative-prompt tokens (BOS included).
    pub negative_tokens: usize,
    /// Warnings raised while generating.
    pub warnings: Vec<String>,
}

/// The encoded prompts of a request ([`Pipeline::encode`]), ready for [`Pipeline::sample`].
#[derive(Debug, Clone)]
pub struct Encoded<B: Backend> {
    /// The prompt's conditioning.
    pub positive: Conditioning<B>,
    /// The negative prompt's conditioning.
    pub negative: Conditioning<B>,
    /// Prompt tokens (BOS included).
    pub positive_tokens: usize,
    /// Negative-prompt tokens (BOS included).
    pub negative_tokens: usize,
    /// Warnings raised so far (prompt, length, adapters).
    pub warnings: Vec<String>,
}

/// Turns a user's event callback into the stages' `emit`: a break becomes
/// [`PipelineError::Cancelled`].
fn emitter<F>(on_event: &mut F) -> impl FnMut(Event) -> Result<(), PipelineError> + '_
where
    F: FnMut(&Event) -> ControlFlow<()>,
{
    move |event: Event| match on_event(&event) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(PipelineError::Cancelled(format!("at {}", event.name()))),
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

/// Text → image with Sakiko-Lumina / Lumina-Image-2.0 models, on any Burn backend.
///
/// ```no_run
/// use burn::backend::Flex;
/// use sakiko_pipeline::{GenerationRequest, ModelFiles, Pipeline};
///
/// let files = ModelFiles::models_dir("ComfyUI/models")?;
/// let mut pipeline = Pipeline::<Flex>::builder(files).build()?;
/// let request = GenerationRequest::new("1girl, blue hair, cherry blossoms").seed(42);
/// let result = pipeline.generate(&request, |event| {
///     println!("{event:?}");
///     std::ops::ControlFlow::Continue(())
/// })?;
/// result.images[0].save("out.png").expect("write");
/// # Ok::<(), sakiko_pipeline::PipelineError>(())
/// ```
#[derive(Debug)]
pub struct Pipeline<B: Backend> {
    files: ModelFiles,
    device: B::Device,
    options: PipelineOptions,
    text: TextEncoder<B>,
    dit_config: NextDitConfig,
    vae_config: VaeConfig,
    dit_dtype: FloatDType,
    vae_dtype: FloatDType,
    /// Stored parameter counts of the denoiser and the VAE.
    params: [u64; 2],
    /// The denoiser's Q8_0 parameters loaded quantised (0 when they are dequantised at load).
    q8_0_params: u64,
    dit: Option<NextDit<B>>,
    vae: Option<Vae<B>>,
    /// The adapters merged into the denoiser and the text encoder.
    adapters: adapters::Active<B>,
    /// Model text → conditioning `[1, L, hidden]`, on the host.
    cache: crate::cache::ConditioningCache,
}

impl<B: Backend> Pipeline<B> {
    /// A builder for `files` with default options on the default device.
    pub fn builder(files: ModelFiles) -> PipelineBuilder<B> {
        PipelineBuilder {
            files,
            device: Default::default(),
            options: PipelineOptions::default(),
        }
    }

    /// The model files.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// The denoiser's configuration.
    pub fn dit_config(&self) -> &NextDitConfig {
        &self.dit_config
    }

    /// The denoiser's compute dtype.
    pub fn dit_dtype(&self) -> FloatDType {
        self.dit_dtype
    }

    /// The VAE's compute dtype.
    pub fn vae_dtype(&self) -> FloatDType {
        self.vae_dtype
    }

    /// The text encoder (tokenizer and configuration).
    pub fn text_encoder(&mut self) -> &mut TextEncoder<B> {
        &mut self.text
    }

    /// How many of the denoiser's parameters it loads quantised (Q8_0; see
    /// [`PipelineOptions::keep_quantized`]). Adapters dequantise the layers they patch.
    pub fn kept_quantized(&self) -> u64 {
        self.q8_0_params
    }

    /// The memory a request needs, by stage (see [`MemoryEstimate`]).
    pub fn estimate(&self, request: &GenerationRequest, prompt_tokens: usize) -> MemoryEstimate {
        MemoryEstimate::new(
            self.text.config(),
            &self.dit_config,
            &self.vae_config,
            self.params,
            // Adapters may patch every layer: the estimate then counts float weights.
            if self.adapters.dit().is_empty() {
                self.kept_quantized()
            } else {
                0
            },
            [self.text.dtype(), self.dit_dtype, self.vae_dtype]
                .map(|d| DType::from(d).size() as u64),
            request,
            prompt_tokens,
            self.options.keep_in_memory,
        )
    }

    /// Runs `request`, reporting progress to `on_event` (which may cancel): [`encode`](Self::encode),
    /// [`sample`](Self::sample) and [`decode`](Self::decode) in turn.
    pub fn generate<F>(
        &mut self,
        request: &GenerationRequest,
        mut on_event: F,
    ) -> Result<Generation<B>, PipelineError>
    where
        F: FnMut(&Event) -> ControlFlow<()>,
    {
        let encoded = self.encode(request, &mut on_event)?;
        let latent = self.sample(request, &encoded, &mut on_event)?;
        let images = self.decode(latent.clone(), request.depth, &mut on_event)?;
        Ok(Generation {
            images,
            latent,
            positive_tokens: encoded.positive_tokens,
            negative_tokens: encoded.negative_tokens,
            warnings: encoded.warnings,
        })
    }

    /// Loads every model now (with [`PipelineOptions::keep_in_memory`]; otherwise each stage
    /// loads its own), so that the first request does not wait for them.
    pub fn preload<F>(&mut self, mut on_event: F) -> Result<(), PipelineError>
    where
        F: FnMut(&Event) -> ControlFlow<()>,
    {
        if !self.options.keep_in_memory {
            return Ok(());
        }
        let mut emit = emitter(&mut on_event);
        if !self.text.is_loaded() {
            emit(Event::Load {
                component: Component::TextEncoder,
                path: self.files.text_encoder.clone(),
            })?;
            self.text.load()?;
        }
        let dit = self.take_dit(&mut emit)?;
        self.dit = Some(dit);
        let vae = self.take_vae(&mut emit)?;
        self.vae = Some(vae);
        Ok(())
    }

    /// Stage 1: checks `request`, switches the models to its adapters, and encodes its prompt and
    /// negative prompt (from the embedding cache when they were encoded before).
    pub fn encode<F>(
        &mut self,
        request: &GenerationRequest,
        mut on_event: F,
    ) -> Result<Encoded<B>, PipelineError>
    where
        F: FnMut(&Event) -> ControlFlow<()>,
    {
        let mut emit = emitter(&mut on_event);
        let mut warnings = request.validate()?;
        warnings.extend(self.prepare_adapters(request, &mut emit)?);

        let positive_text = request.model_text();
        let positive_ids = self.text.tokenize(&positive_text)?;
        let negative_ids = self.text.tokenize(&request.negative)?;
        emit(Event::Tokens {
            positive: positive_ids.len(),
            negative: negative_ids.len(),
        })?;
        for (what, n) in [
            ("prompt", positive_ids.len()),
            ("negative prompt", negative_ids.len()),
        ] {
            if n > TRAINED_TOKENS {
                warnings.push(format!(
                    "the {what} is {n} tokens; the model was trained on at most {TRAINED_TOKENS} \
                     (it is encoded whole, not truncated)"
                ));
            }
        }
        for w in &warnings {
            emit(Event::Warning(w.clone()))?;
        }
        emit(Event::Memory(self.estimate(request, positive_ids.len())))?;
        let positive = self.conditioning(&positive_text, &positive_ids, &mut emit)?;
        let negative = self.conditioning(&request.negative, &negative_ids, &mut emit)?;
        if !self.options.keep_in_memory && self.text.is_loaded() {
            self.text.release();
            emit(Event::Release {
                component: Component::TextEncoder,
            })?;
        }
        Ok(Encoded {
            positive,
            negative,
            positive_tokens: positive_ids.len(),
            negative_tokens: negative_ids.len(),
            warnings,
        })
    }

    /// Stage 2: samples the latent of `request` from its encoded prompts, reporting each step
    /// (and, with [`GenerationRequest::preview_every`], a preview image). Returns the final
    /// latent in model space, `[batch, 16, H/8, W/8]`.
    pub fn sample<F>(
        &mut self,
        request: &GenerationRequest,
        encoded: &Encoded<B>,
        mut on_event: F,
    ) -> Result<Tensor<B, 4>, PipelineError>
    where
        F: FnMut(&Event) -> ControlFlow<()>,
    {
        let mut emit = emitter(&mut on_event);
        request.validate()?;
        // A no-op when `encode` already switched to the request's adapters.
        self.prepare_adapters(request, &mut emit)?;
        let ms = FlowSampling::with_shift(request.shift)?;
        let sigmas = if request.init_image.is_some() {
            request
                .scheduler
                .sigmas_with_denoise(&ms, request.steps, request.denoise)?
        } else {
            request.scheduler.sigmas(&ms, request.steps)?
        };

        // Starting point.
        let (b, c) = (request.batch, self.dit_config.in_channels);
        let down = self.vae_config.downscale();
        let shape = [b, c, request.height / down, request.width / down];
        let latent = match &request.init_image {
            Some(image) => {
                let vae = self.take_vae(&mut emit)?;
                let encoded = encode_image(&vae, image, request, &self.device).and_then(|z| {
                    ensure_finite(&z, "VAE encoder", None, self.vae_dtype)?;
                    Ok(z)
                });
                self.vae = Some(vae);
                encoded?.repeat_dim(0, b)
            }
            None => Tensor::zeros(shape, &self.device),
        };
        let noise = TorchGenerator::new(request.seed).randn_tensor(
            shape,
            request.noise_kernel,
            &self.device,
        );
        let x = FlowSampling::noise_scaling(sigmas[0], noise, latent);

        // Sampling.
        let dit = self.take_dit(&mut emit)?;
        let mut denoiser =
            LuminaDenoiser::new(&dit, encoded.positive.clone(), encoded.negative.clone());
        let mut ancestral = TorchNoise::new(request.seed, request.noise_kernel);
        // The first failure inside the step callback: NaN/infinity in the latent, or a cancel.
        let mut stopped = None;
        let every = request.preview_every;
        let sampled = sample(
            &request.sampler_config(),
            &mut denoiser,
            x,
            &sigmas,
            &mut ancestral,
            |info| {
                let step = Some((info.step, info.steps));
                let checked = ensure_finite(info.x, "denoiser", step, self.dit_dtype)
                    .and_then(|()| {
                        emit(Event::Step {
                            step: info.step,
                            steps: info.steps,
                            sigma: info.sigma,
                        })
                    })
                    .and_then(|()| {
                        let due = every > 0
                            && ((info.step + 1) % every == 0 || info.step + 1 == info.steps);
                        match due.then(|| latent_preview(info.denoised)).flatten() {
                            Some(image) => emit(Event::Preview {
                                step: info.step,
                                steps: info.steps,
                                image,
                            }),
                            None => Ok(()),
                        }
                    });
                match checked {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        stopped.get_or_insert(e);
                        ControlFlow::Break(())
                    }
                }
            },
        );
        drop(denoiser);
        self.put_dit(dit, &mut emit)?;
        // (The sampler ignores a break after its last step; the failure still counts.)
        if let Some(e @ PipelineError::NonFinite { .. }) = stopped {
            return Err(e);
        }
        Ok(FlowSampling::inverse_noise_scaling(
            sigmas[sigmas.len() - 1],
            sampled?,
        ))
    }

    /// Stage 3: decodes a model-space latent `[batch, 16, H/8, W/8]` into images.
    pub fn decode<F>(
        &mut self,
        latent: Tensor<B, 4>,
        depth: OutputDepth,
        mut on_event: F,
    ) -> Result<Vec<DynamicImage>, PipelineError>
    where
        F: FnMut(&Event) -> ControlFlow<()>,
    {
        let mut emit = emitter(&mut on_event);
        let vae = self.take_vae(&mut emit)?;
        emit(Event::Decode)?;
        let decoded = decode(&vae, latent, self.options.vae_tiling, depth, self.vae_dtype);
        if self.options.keep_in_memory {
            self.vae = Some(vae);
        } else {
            drop(vae);
            emit(Event::Release {
                component: Component::Vae,
            })?;
        }
        decoded
    }

    /// Switches to the request's adapters (reporting newly read ones); returns the warnings
    /// about adapter modules that match no layer.
    fn prepare_adapters(
        &mut self,
        request: &GenerationRequest,
        emit: &mut impl FnMut(Event) -> Result<(), PipelineError>,
    ) -> Result<Vec<String>, PipelineError> {
        if self.set_adapters(&request.adapters)? {
            for report in self.adapters.reports() {
                emit(Event::Adapter(report.clone()))?;
            }
        }
        Ok(self
            .adapters
            .reports()
            .iter()
            .filter_map(|report| {
                report.unmatched.first().map(|first| {
                    format!(
                        "adapter {}: {} of its modules or keys match no layer and are not applied (first: `{first}`)",
                        report.path.display(),
                        report.unmatched.len()
                    )
                })
            })
            .collect())
    }

    /// The conditioning of `text` (ids given), from the cache or the encoder.
    fn conditioning(
        &mut self,
        text: &str,
        ids: &[u32],
        emit: &mut impl FnMut(Event) -> Result<(), PipelineError>,
    ) -> Result<Conditioning<B>, PipelineError> {
        // The text encoder's adapters and strengths are part of the key.
        let key = format!("{}\u{0}{text}", self.adapters.text_encoder_key());
        if let Some(data) = self.cache.get(&key) {
            return Ok(Conditioning {
                features: Tensor::from_data(data, &self.device),
            });
        }
        if !self.text.is_loaded() {
            emit(Event::Load {
                component: Component::TextEncoder,
                path: self.files.text_encoder.clone(),
            })?;
        }
        let features = self.text.encode(ids)?;
        if self.options.cache_embeddings {
            self.cache.insert(key, features.clone().into_data());
        }
        Ok(Conditioning { features })
    }

    fn take_dit(
        &mut self,
        emit: &mut impl FnMut(Event) -> Result<(), PipelineError>,
    ) -> Result<NextDit<B>, PipelineError> {
        if let Some(dit) = self.dit.take() {
            return Ok(dit);
        }
        emit(Event::Load {
            component: Component::Dit,
            path: self.files.dit.clone(),
        })?;
        let keep = self.kept_quantized() > 0;
        let dit = NextDit::from_weights_as(
            &self
                .files
                .open_dit()?
                .with_value_check(self.options.check_weights)
                .with_q8_0_kept(keep),
            Some(self.dit_config.clone()),
            self.dit_dtype,
            &self.device,
        )?;
        Ok(self.merge_dit(dit))
    }

    fn put_dit(
        &mut self,
        dit: NextDit<B>,
        emit: &mut impl FnMut(Event) -> Result<(), PipelineError>,
    ) -> Result<(), PipelineError> {
        if self.options.keep_in_memory {
            self.dit = Some(dit);
            Ok(())
        } else {
            drop(dit);
            emit(Event::Release {
                component: Component::Dit,
            })
        }
    }

    fn take_vae(
        &mut self,
        emit: &mut impl FnMut(Event) -> Result<(), PipelineError>,
    ) -> Result<Vae<B>, PipelineError> {
        if let Some(vae) = self.vae.take() {
            return Ok(vae);
        }
        emit(Event::Load {
            component: Component::Vae,
            path: self.files.vae.clone(),
        })?;
        Ok(Vae::from_weights_as(
            &self
                .files
                .open_vae()?
                .with_value_check(self.options.check_weights),
            Some(self.vae_config.clone()),
            self.vae_dtype,
            &self.device,
        )?)
    }
}

/// The init image as a model-space latent `[1, C, H/8, W/8]` (resized to the request's size).
fn encode_image<B: Backend>(
    vae: &Vae<B>,
    image: &RgbImage,
    request: &GenerationRequest,
    device: &B::Device,
) -> Result<Tensor<B, 4>, PipelineError> {
    let (w, h) = (request.width as u32, request.height as u32);
    let resized;
    let image = if image.dimensions() == (w, h) {
        image
    } else {
        resized = image::imageops::resize(image, w, h, image::imageops::FilterType::Lanczos3);
        &resized
    };
    let pixels = sakiko_vae::image_to_tensor(std::slice::from_ref(image), device)?;
    Ok(vae.latent_format().to_model(vae.encode(pixels)?))
}

/// Model-space latents → images.
fn decode<B: Backend>(
    vae: &Vae<B>,
    latent: Tensor<B, 4>,
    tiling: Option<Tiling>,
    depth: OutputDepth,
    dtype: FloatDType,
) -> Result<Vec<DynamicImage>, PipelineError> {
    let z = vae.latent_format().to_vae(latent);
    let pixels = match tiling {
        Some(t) => vae.decode_tiled(z, t)?,
        None => vae.decode(z)?,
    };
    ensure_finite(&pixels, "VAE decoder", None, dtype)?;
    Ok(match depth {
        OutputDepth::Eight => sakiko_vae::to_rgb8(pixels)
            .into_iter()
            .map(DynamicImage::ImageRgb8)
            .collect(),
        OutputDepth::Sixteen => sakiko_vae::to_rgb16(pixels)
            .into_iter()
            .map(DynamicImage::ImageRgb16)
            .collect(),
    })
}
