//! Text → image: the pipeline and its stages (the builder and its options are in `builder`, the
//! progress events in `event`).

use std::ops::ControlFlow;

use burn::tensor::{DType, FloatDType, Tensor, backend::Backend};
use image::{DynamicImage, RgbImage};
use sakiko_nextdit::{NextDit, NextDitConfig};
use sakiko_sampling::{FlowSampling, TorchGenerator, TorchNoise, sample};
use sakiko_vae::{Tiling, Vae, VaeConfig};

use crate::denoiser::{Conditioning, LuminaDenoiser};
use crate::error::ensure_finite;
use crate::preview::latent_preview;
use crate::request::{OutputDepth, TRAINED_TOKENS};
use crate::{Component, GenerationRequest, MemoryEstimate, ModelFiles, PipelineError, TextEncoder};

mod adapters;
mod builder;
mod event;

pub use adapters::AdapterSpec;
pub use builder::{PipelineBuilder, PipelineOptions, auto_dtype};
pub use event::Event;
use event::emitter;

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
        PipelineBuilder::new(files)
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
