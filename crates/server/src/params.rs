//! What every API's request becomes: [`Settings`] (the union of their generation fields) checked
//! against the server's [`Limits`] and turned into the same [`GenerationRequest`] that
//! `sakiko generate` builds from the same values (same defaults), so that a seed gives the same
//! image from either.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use sakiko_adapters::{Strength, extract_tags, find_adapter};
use sakiko_pipeline::{AdapterSpec, GenerationRequest};
use sakiko_sampling::{Guidance, Sampler, Scheduler};
use serde::Deserialize;

use crate::ApiError;

/// Per-request limits (a server is shared: one request must not take it for an hour).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest width or height.
    pub max_side: usize,
    /// The most pixels per image.
    pub max_pixels: usize,
    /// The most sampling steps.
    pub max_steps: usize,
    /// The most images per request.
    pub max_images: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_side: 2048,
            max_pixels: 2048 * 2048,
            max_steps: 100,
            max_images: 4,
        }
    }
}

/// An adapter named in a request: a file in the server's adapters folder (never a path: clients
/// cannot make the server read arbitrary files).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraRef {
    /// The file's name in the adapters folder, with or without extension.
    pub name: String,
    /// Strength on the denoiser (default 1).
    #[serde(default = "one")]
    pub strength: f32,
    /// Strength on the text encoder (default: the denoiser's).
    pub text_encoder_strength: Option<f32>,
}

fn one() -> f32 {
    1.0
}

/// The generation fields the APIs share (missing ones take `sakiko generate`'s defaults).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The prompt: natural language or the XML tag format; `<lora:NAME:S>` tags pick adapters.
    pub prompt: String,
    /// The negative prompt.
    #[serde(default)]
    pub negative_prompt: String,
    /// Width in pixels.
    pub width: Option<usize>,
    /// Height in pixels.
    pub height: Option<usize>,
    /// Sampling steps.
    pub steps: Option<usize>,
    /// CFG scale.
    pub cfg_scale: Option<f32>,
    /// Sampler: ComfyUI names (`euler_ancestral`) or A1111's (`Euler a`).
    pub sampler: Option<String>,
    /// Scheduler: ComfyUI names (`linear_quadratic`); A1111's `Automatic` is the default.
    pub scheduler: Option<String>,
    /// Flow shift.
    pub shift: Option<f32>,
    /// Seed; absent or negative: random.
    pub seed: Option<i64>,
    /// Images (one batch).
    pub n: Option<usize>,
    /// Image-to-image: the starting image, base64 (optionally a `data:` URL).
    pub init_image: Option<String>,
    /// Image-to-image strength in (0, 1].
    pub denoising_strength: Option<f64>,
    /// Adapters from the server's adapters folder.
    #[serde(default)]
    pub loras: Vec<LoraRef>,
    /// A preview every this many steps (0: none; default: the server's).
    pub preview_every: Option<usize>,
}

/// What the server knows when it turns settings into a request.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The limits.
    pub limits: Limits,
    /// Where named adapters are found.
    pub lora_dir: Option<PathBuf>,
    /// Preview cadence when a request does not say.
    pub preview_every: usize,
}

/// `Euler a` → `euler_ancestral`, and the other A1111 names of samplers we have.
fn sampler(name: &str) -> Result<Sampler, ApiError> {
    let comfy = match name {
        "Euler a" => "euler_ancestral",
        "Euler" => "euler",
        "DPM++ 2M" => "dpmpp_2m",
        "Heun" => "heun",
        "Res Multistep" => "res_multistep",
        other => other,
    };
    comfy
        .parse()
        .map_err(|e: sakiko_sampling::SamplingError| ApiError::bad_request(e.to_string()))
}

fn scheduler(name: &str) -> Result<Option<Scheduler>, ApiError> {
    if name.is_empty() || name.eq_ignore_ascii_case("automatic") {
        return Ok(None);
    }
    // A1111 capitalises ("Simple", "SGM Uniform"); ComfyUI's names are snake case.
    let comfy = name.to_lowercase().replace(' ', "_");
    comfy
        .parse()
        .map(Some)
        .map_err(|e: sakiko_sampling::SamplingError| ApiError::bad_request(e.to_string()))
}

/// A random seed (A1111's `-1`), within the 48 bits that survive a JSON number everywhere.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() & 0xffff_ffff_ffff
}

/// Decodes a base64 image (plain or a `data:image/…;base64,` URL).
pub fn decode_image(data: &str) -> Result<image::RgbImage, ApiError> {
    let b64 = data
        .split_once(";base64,")
        .map_or(data, |(_, rest)| rest)
        .trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| ApiError::bad_request(format!("init image: not base64 ({e})")))?;
    image::load_from_memory(&bytes)
        .map(|i| i.to_rgb8())
        .map_err(|e| ApiError::bad_request(format!("init image: {e}")))
}

fn adapter(dir: Option<&Path>, name: &str, strength: Strength) -> Result<AdapterSpec, ApiError> {
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(ApiError::bad_request(format!(
            "adapter `{name}`: give a name from GET /sdapi/v1/loras, not a path"
        )));
    }
    let Some(dir) = dir else {
        return Err(ApiError::bad_request(format!(
            "adapter `{name}`: this server has no adapters folder (start it with --lora-dir)"
        )));
    };
    let path = find_adapter(dir, name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(AdapterSpec { path, strength })
}

impl Settings {
    /// The request these settings describe, checked against `ctx`'s limits; the seed is fixed
    /// (random when not given), adapters from the tags and `loras` resolved.
    pub fn to_request(&self, ctx: &Context) -> Result<GenerationRequest, ApiError> {
        let limits = ctx.limits;
        let (width, height) = (self.width.unwrap_or(1024), self.height.unwrap_or(1024));
        if width > limits.max_side || height > limits.max_side || width * height > limits.max_pixels
        {
            return Err(ApiError::bad_request(format!(
                "size {width}x{height} is over this server's limit ({} per side, {} pixels)",
                limits.max_side, limits.max_pixels
            )));
        }
        let steps = self.steps.unwrap_or(30);
        if steps > limits.max_steps {
            return Err(ApiError::bad_request(format!(
                "steps {steps} is over this server's limit of {}",
                limits.max_steps
            )));
        }
        let n = self.n.unwrap_or(1);
        if n == 0 || n > limits.max_images {
            return Err(ApiError::bad_request(format!(
                "n {n}: this server makes 1 to {} images per request",
                limits.max_images
            )));
        }
        if self.prompt.trim().is_empty() {
            return Err(ApiError::bad_request("the prompt is empty"));
        }
        if extract_tags(&self.negative_prompt).is_ok_and(|(_, tags)| !tags.is_empty()) {
            return Err(ApiError::bad_request(
                "adapter tags (<lora:…>) belong in the prompt, not the negative prompt",
            ));
        }
        let (prompt, tags) =
            extract_tags(&self.prompt).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let dir = ctx.lora_dir.as_deref();
        let mut adapters = Vec::new();
        for l in &self.loras {
            let strength = Strength {
                dit: l.strength,
                text_encoder: l.text_encoder_strength.unwrap_or(l.strength),
            };
            adapters.push(adapter(dir, &l.name, strength)?);
        }
        for tag in tags {
            adapters.push(adapter(dir, &tag.name, tag.strength)?);
        }
        let seed = match self.seed {
            Some(s) if s >= 0 => s as u64,
            _ => random_seed(),
        };
        let mut request = GenerationRequest::new(prompt)
            .negative(&self.negative_prompt)
            .size(width, height)
            .steps(steps)
            .guidance(Guidance::Cfg {
                scale: self.cfg_scale.unwrap_or(4.5),
            })
            .seed(seed)
            .batch(n)
            .preview_every(self.preview_every.unwrap_or(ctx.preview_every));
        if let Some(s) = &self.sampler {
            request = request.sampler(sampler(s)?);
        }
        if let Some(s) = scheduler(self.scheduler.as_deref().unwrap_or(""))? {
            request = request.scheduler(s);
        }
        if let Some(shift) = self.shift {
            request = request.shift(shift);
        }
        match (&self.init_image, self.denoising_strength) {
            (Some(image), denoise) => {
                request = request.init_image(decode_image(image)?, denoise.unwrap_or(0.75));
            }
            (None, Some(d)) if d < 1.0 => {
                return Err(ApiError::bad_request(
                    "denoising_strength below 1 needs an init image",
                ));
            }
            (None, _) => {}
        }
        request.adapters = adapters;
        request.validate()?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(prompt: &str) -> Settings {
        Settings {
            prompt: prompt.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_cli_defaults() {
        let r = Settings {
            seed: Some(7),
            ..settings("1girl")
        }
        .to_request(&Context::default())
        .unwrap();
        assert_eq!(r, GenerationRequest::new("1girl").seed(7));
    }

    #[test]
    fn a1111_names_and_limits() {
        let ctx = Context::default();
        let r = Settings {
            sampler: Some("Euler a".into()),
            scheduler: Some("Simple".into()),
            ..settings("x")
        }
        .to_request(&ctx)
        .unwrap();
        assert_eq!(r.sampler, Sampler::EulerAncestral);
        assert_eq!(r.scheduler, Scheduler::Simple);
        for bad in [
            Settings {
                width: Some(4096),
                ..settings("x")
            },
            Settings {
                steps: Some(101),
                ..settings("x")
            },
            Settings {
                n: Some(0),
                ..settings("x")
            },
            Settings {
                sampler: Some("DDIM".into()),
                ..settings("x")
            },
            Settings {
                width: Some(1000),
                ..settings("x")
            },
            settings(" "),
            Settings {
                loras: vec![LoraRef {
                    name: "../x".into(),
                    strength: 1.0,
                    text_encoder_strength: None,
                }],
                ..settings("x")
            },
        ] {
            let e = bad.to_request(&ctx).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}: {e}");
        }
    }
}
