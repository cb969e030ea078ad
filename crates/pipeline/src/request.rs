//! What to generate.

use std::fmt::Display;

use image::RgbImage;
use sakiko_prompt::{Severity, with_prefix};
use sakiko_sampling::{Guidance, RandnKernel, Sampler, SamplerConfig, Scheduler};

use crate::PipelineError;

/// The longest prompt the model was trained on, in tokens (BOS included); longer prompts are
/// encoded whole, with a warning.
pub const TRAINED_TOKENS: usize = 256;
/// The smallest and largest image side accepted, in pixels.
pub const SIDE_RANGE: (usize, usize) = (16, 8192);
/// Sides must be multiples of this (VAE ×8, then 2×2 patches).
pub const SIDE_MULTIPLE: usize = 16;
/// The largest batch accepted.
pub const MAX_BATCH: usize = 64;

/// Bit depth of the output images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputDepth {
    /// 8 bits per channel, truncated as ComfyUI saves (the reference behaviour).
    #[default]
    Eight,
    /// 16 bits per channel, rounded: keeps the decoder's full precision.
    Sixteen,
}

/// One text-to-image (or image-to-image) request. Defaults follow the model card: 1024×1024,
/// 30 steps, CFG 4.5, `euler_ancestral`, `linear_quadratic`, shift 6.
///
/// ```
/// use sakiko_pipeline::GenerationRequest;
/// use sakiko_sampling::{Guidance, Sampler};
///
/// let request = GenerationRequest::new("a girl with blue hair under cherry blossoms")
///     .negative("lowres")
///     .size(832, 1216)
///     .steps(30)
///     .guidance(Guidance::Cfg { scale: 5.0 })
///     .sampler(Sampler::ResMultistep)
///     .seed(42);
/// assert!(request.model_text().starts_with(sakiko_prompt::PREFIX));
/// request.validate()?;
/// assert!(GenerationRequest::new("x").size(1000, 1000).validate().is_err());
/// # Ok::<(), sakiko_pipeline::PipelineError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationRequest {
    /// The prompt body or full model text (natural language or XML; the prefix is added when missing).
    pub prompt: String,
    /// The negative prompt, encoded as given (no prefix); empty encodes to BOS alone, as in ComfyUI.
    pub negative: String,
    /// Image width in pixels (a multiple of 16).
    pub width: usize,
    /// Image height in pixels (a multiple of 16).
    pub height: usize,
    /// Sampling steps (with `denoise < 1`, the steps actually run).
    pub steps: usize,
    /// How the positive and negative predictions combine.
    pub guidance: Guidance,
    /// The sampler.
    pub sampler: Sampler,
    /// The σ schedule.
    pub scheduler: Scheduler,
    /// The flow shift of the model sampling (6 for Lumina 2).
    pub shift: f32,
    /// The seed of the initial (and ancestral) noise.
    pub seed: u64,
    /// Which `torch.randn` CPU kernel to reproduce (AVX2 on x86 machines with it, scalar otherwise).
    pub noise_kernel: RandnKernel,
    /// Images per request (noise for the whole batch is drawn at once, as ComfyUI does).
    pub batch: usize,
    /// Image-to-image: the starting image (resized to the request's size when it differs).
    pub init_image: Option<RgbImage>,
    /// How much of the schedule to run from the init image (1 = all of it, ignoring the image).
    pub denoise: f64,
    /// Ancestral noise amount (`None`: the sampler's default).
    pub eta: Option<f32>,
    /// Output bit depth.
    pub depth: OutputDepth,
    /// Adapters merged into the models for this request, applied in order.
    pub adapters: Vec<crate::AdapterSpec>,
    /// Report an [`Event::Preview`](crate::Event::Preview) every this many steps (and after the
    /// last); 0, the default, makes none. Previews never change the result.
    pub preview_every: usize,
}

impl GenerationRequest {
    /// A request for `prompt` (text, [`sakiko_prompt::Prompt`] or [`sakiko_prompt::TagPrompt`])
    /// with the model card's defaults.
    pub fn new(prompt: impl Display) -> Self {
        Self {
            prompt: prompt.to_string(),
            negative: String::new(),
            width: 1024,
            height: 1024,
            steps: 30,
            guidance: Guidance::Cfg { scale: 4.5 },
            sampler: Sampler::EulerAncestral,
            scheduler: Scheduler::LinearQuadratic,
            shift: 6.0,
            seed: 0,
            noise_kernel: RandnKernel::Avx2,
            batch: 1,
            init_image: None,
            denoise: 1.0,
            eta: None,
            depth: OutputDepth::Eight,
            adapters: Vec::new(),
            preview_every: 0,
        }
    }

    /// Adds an adapter (applied after those already added).
    pub fn adapter(
        mut self,
        path: impl Into<std::path::PathBuf>,
        strength: crate::Strength,
    ) -> Self {
        self.adapters.push(crate::AdapterSpec {
            path: path.into(),
            strength,
        });
        self
    }

    /// Sets the negative prompt.
    pub fn negative(mut self, negative: impl Display) -> Self {
        self.negative = negative.to_string();
        self
    }

    /// Sets width and height in pixels.
    pub fn size(mut self, width: usize, height: usize) -> Self {
        self.width = width;
        self.height = height;
        self
    }

    /// Sets the number of steps.
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = steps;
        self
    }

    /// Sets the guidance (e.g. `Guidance::Cfg { scale: 4.5 }`).
    pub fn guidance(mut self, guidance: Guidance) -> Self {
        self.guidance = guidance;
        self
    }

    /// Sets the sampler.
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = sampler;
        self
    }

    /// Sets the scheduler.
    pub fn scheduler(mut self, scheduler: Scheduler) -> Self {
        self.scheduler = scheduler;
        self
    }

    /// Sets the flow shift.
    pub fn shift(mut self, shift: f32) -> Self {
        self.shift = shift;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the batch size.
    pub fn batch(mut self, batch: usize) -> Self {
        self.batch = batch;
        self
    }

    /// Image-to-image from `image`, running the last `denoise` fraction of the schedule.
    pub fn init_image(mut self, image: RgbImage, denoise: f64) -> Self {
        self.init_image = Some(image);
        self.denoise = denoise;
        self
    }

    /// Reports a preview image every `steps` steps (0: none).
    pub fn preview_every(mut self, steps: usize) -> Self {
        self.preview_every = steps;
        self
    }

    /// Sets the output bit depth.
    pub fn depth(mut self, depth: OutputDepth) -> Self {
        self.depth = depth;
        self
    }

    /// The exact text the encoder receives for the prompt: the prefix (once), one space, the body.
    pub fn model_text(&self) -> String {
        with_prefix(&self.prompt)
    }

    /// The sampler settings.
    pub fn sampler_config(&self) -> SamplerConfig {
        SamplerConfig {
            eta: self.eta,
            ..SamplerConfig::new(self.sampler, self.guidance)
        }
    }

    /// Checks every setting and the prompt; returns the prompt's warnings (one line each).
    pub fn validate(&self) -> Result<Vec<String>, PipelineError> {
        let bad = |name, value: String, expected: String| {
            Err(PipelineError::Request {
                name,
                value,
                expected,
            })
        };
        let (min, max) = SIDE_RANGE;
        for (name, side) in [("width", self.width), ("height", self.height)] {
            if !(min..=max).contains(&side) || !side.is_multiple_of(SIDE_MULTIPLE) {
                return bad(
                    name,
                    side.to_string(),
                    format!("a multiple of {SIDE_MULTIPLE} between {min} and {max} pixels"),
                );
            }
        }
        if !(1..=1000).contains(&self.steps) {
            return bad("steps", self.steps.to_string(), "1 to 1000".into());
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return bad(
                "batch size",
                self.batch.to_string(),
                format!("1 to {MAX_BATCH}"),
            );
        }
        if !(self.shift.is_finite() && self.shift > 0.0) {
            return bad("shift", self.shift.to_string(), "a positive number".into());
        }
        if !(self.denoise > 0.0 && self.denoise <= 1.0) {
            return bad("denoise", self.denoise.to_string(), "in (0, 1]".into());
        }
        if self.denoise < 1.0 && self.init_image.is_none() {
            return bad(
                "denoise",
                self.denoise.to_string(),
                "1 without an init image (denoise < 1 needs one)".into(),
            );
        }
        self.guidance.validate()?;
        // Checked as given, so that positions point into the user's text.
        let report = sakiko_prompt::check(&self.prompt);
        let lines = |severity: Severity| -> Vec<String> {
            report
                .diagnostics
                .iter()
                .filter(|d| d.severity == severity)
                .map(ToString::to_string)
                .collect()
        };
        let errors = lines(Severity::Error);
        if !errors.is_empty() {
            return Err(PipelineError::Prompt(errors.join("\n")));
        }
        Ok(lines(Severity::Warning))
    }
}
