//! `sakiko generate`.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use sakiko_pipeline::{
    Event, GenerationRequest, OutputDepth, Pipeline, Tiling, png_parameters, save_latent, write_png,
};
use sakiko_sampling::{Guidance, RandnKernel};

use crate::CliError;
use crate::backend::{BackendChoice, Job};
use crate::files::{DtypeArgs, ModelArgs};

/// How the positive and negative predictions combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum GuidanceKind {
    /// ComfyUI's CFG on x0 predictions.
    Cfg,
    /// ComfyUI's RenormCFG node (uses --cfg-trunc and --renorm).
    RenormCfg,
    /// CFG-Zero*.
    ZeroStar,
    /// diffusers' Lumina2Pipeline CFG (uses --cfg-trunc as the truncation ratio and --cfg-normalization).
    Diffusers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kernel {
    /// PyTorch's AVX2 kernel (x86 CPUs with AVX2: most ComfyUI machines).
    Avx2,
    /// PyTorch's scalar kernel (ARM, older x86).
    Scalar,
}

/// `sakiko generate`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("text").required(true).args(["prompt", "prompt_file", "idea"])))]
// A later option overrides an earlier one (handy for scripts that append to a base command).
#[command(args_override_self = true)]
pub struct GenerateArgs {
    /// The prompt: natural language or the XML tag format (the Sakiko prefix is added once).
    #[arg(long)]
    prompt: Option<String>,
    /// Read the prompt from a file.
    #[arg(long, value_name = "F")]
    prompt_file: Option<PathBuf>,
    /// An idea to expand into the prompt with Sakiko-Prompter (needs --prompter); the expanded
    /// prompt is printed and stored in the PNG with the idea.
    #[arg(long, requires = "prompter")]
    idea: Option<String>,
    /// The prompter's model folder (with --idea). It is freed before the image models load.
    #[arg(long, value_name = "DIR", requires = "idea")]
    prompter: Option<PathBuf>,
    /// The prompter's seed (default: the image seed).
    #[arg(long, value_name = "N", requires = "idea")]
    prompter_seed: Option<u64>,
    #[command(flatten, next_help_heading = "Prompter (with --idea)")]
    prompter_sampling: crate::expand::SamplingArgs,
    /// The negative prompt (no prefix; empty by default).
    #[arg(long, default_value = "")]
    negative: String,

    #[command(flatten)]
    models: ModelArgs,

    /// Width in pixels (multiple of 16).
    #[arg(long, default_value_t = 1024)]
    width: usize,
    /// Height in pixels (multiple of 16).
    #[arg(long, default_value_t = 1024)]
    height: usize,
    /// Sampling steps.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Guidance scale.
    #[arg(long, default_value_t = 4.5)]
    cfg: f32,
    /// Guidance variant.
    #[arg(long, value_enum, default_value_t = GuidanceKind::Cfg)]
    guidance: GuidanceKind,
    /// RenormCFG: CFG while σ < this; diffusers: CFG for this fraction of the steps.
    #[arg(long, value_name = "X")]
    cfg_trunc: Option<f32>,
    /// RenormCFG's norm clamp (0 disables).
    #[arg(long, default_value_t = 1.0)]
    renorm: f32,
    /// diffusers guidance: rescale to the positive prediction's norm.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cfg_normalization: bool,
    /// Sampler (ComfyUI names).
    #[arg(long, default_value = "euler_ancestral")]
    sampler: String,
    /// Scheduler (ComfyUI names).
    #[arg(long, default_value = "linear_quadratic")]
    scheduler: String,
    /// Flow shift.
    #[arg(long, default_value_t = 6.0)]
    shift: f32,
    /// Ancestral noise amount (default: the sampler's).
    #[arg(long)]
    eta: Option<f32>,
    /// Seed (default: random; it is printed and stored in the PNG).
    #[arg(long)]
    seed: Option<u64>,
    /// Which torch.randn CPU kernel the noise reproduces.
    #[arg(long, value_enum, default_value_t = Kernel::Avx2)]
    noise_kernel: Kernel,
    /// Images to generate (OUT gets `_0`, `_1`, … before its extension when more than one).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Image-to-image: the starting image (resized to --width × --height).
    #[arg(long, value_name = "F", requires = "denoise")]
    init_image: Option<PathBuf>,
    /// Image-to-image strength in (0, 1].
    #[arg(long, value_name = "X", requires = "init_image")]
    denoise: Option<f64>,
    /// Bits per channel of the PNG: 8 (as ComfyUI saves) or 16.
    #[arg(long, default_value_t = 8, value_parser = clap::builder::ValueParser::new(parse_depth))]
    depth: u8,
    #[command(flatten)]
    dtypes: DtypeArgs,
    /// Skip the load-time check of every weight for NaN, infinity and f16 overflow (slightly
    /// faster loading of files you trust).
    #[arg(long)]
    no_weight_check: bool,
    /// Decode the latent in tiles of this many latent pixels (less memory).
    #[arg(long, value_name = "N")]
    vae_tile: Option<usize>,
    /// An adapter (LoRA, LoKr, LoHa, DoRA; kohya, LyCORIS, PEFT / diffusers or ComfyUI names): a
    /// file or a name in the adapters folder, with its strength on the denoiser and on the text
    /// encoder (default 1, and the text encoder's the denoiser's). Repeatable; `<lora:NAME:S>`
    /// tags in the prompt add more.
    #[arg(long = "lora", value_name = "FILE[:S[:TE]]")]
    loras: Vec<String>,
    /// Where adapters named by --lora or prompt tags are found (default: the models folder's
    /// loras/).
    #[arg(long, value_name = "D")]
    lora_dir: Option<PathBuf>,
    /// The backend to run on.
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
    /// Also write the final latent (model space, before VAE scaling) as the f32 tensor `latent`.
    #[arg(long, value_name = "F")]
    save_latent: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Output PNG.
    #[arg(short, long, value_name = "OUT.png")]
    output: PathBuf,
}

impl GenerateArgs {
    pub fn run(self) -> Result<(), CliError> {
        let backend = self.backend;
        backend.run(self)
    }

    /// The request. With --idea its prompt is a valid stand-in until the prompter has written
    /// the real one (which the prompter checks), so that the settings are validated before the
    /// prompter runs.
    fn request(&self) -> Result<GenerationRequest, CliError> {
        let usage = |e: sakiko_sampling::SamplingError| CliError::Usage(e.to_string());
        let prompt = match (&self.prompt, &self.prompt_file, &self.idea) {
            (Some(p), _, _) => p.clone(),
            (None, Some(f), _) => std::fs::read_to_string(f)
                .map_err(|e| CliError::Failed(format!("{}: {e}", f.display())))?,
            (None, None, Some(_)) => "1girl".into(),
            (None, None, None) => String::new(),
        };
        let scale = self.cfg;
        let guidance = match self.guidance {
            GuidanceKind::Cfg => Guidance::Cfg { scale },
            GuidanceKind::ZeroStar => Guidance::ZeroStar { scale },
            GuidanceKind::RenormCfg => Guidance::RenormCfg {
                scale,
                trunc: self.cfg_trunc.unwrap_or(100.0),
                renorm: self.renorm,
            },
            GuidanceKind::Diffusers => Guidance::Diffusers {
                scale,
                normalization: self.cfg_normalization,
                trunc_ratio: self.cfg_trunc.unwrap_or(1.0),
            },
        };
        let mut request = GenerationRequest::new(prompt)
            .negative(&self.negative)
            .size(self.width, self.height)
            .steps(self.steps)
            .guidance(guidance)
            .sampler(self.sampler.parse().map_err(usage)?)
            .scheduler(self.scheduler.parse().map_err(usage)?)
            .shift(self.shift)
            .seed(self.seed.unwrap_or_else(random_seed))
            .batch(self.batch)
            .depth(if self.depth == 16 {
                OutputDepth::Sixteen
            } else {
                OutputDepth::Eight
            });
        request.eta = self.eta;
        request.noise_kernel = match self.noise_kernel {
            Kernel::Avx2 => RandnKernel::Avx2,
            Kernel::Scalar => RandnKernel::Scalar,
        };
        if let (Some(path), Some(denoise)) = (&self.init_image, self.denoise) {
            let image = image::open(path)
                .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?
                .to_rgb8();
            request = request.init_image(image, denoise);
        }
        Ok(request)
    }

    /// Where image `index` of `batch` goes.
    fn output_path(&self, index: usize, batch: usize) -> PathBuf {
        if batch == 1 {
            return self.output.clone();
        }
        let stem = self
            .output
            .file_stem()
            .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
        let ext = self
            .output
            .extension()
            .map_or_else(|| "png".into(), |s| s.to_string_lossy().into_owned());
        self.output.with_file_name(format!("{stem}_{index}.{ext}"))
    }
}

impl Job for GenerateArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<(), CliError> {
        let mut request = self.request()?;
        // Adapter tags leave the prompt before anything reads it (they are not XML).
        let lora_dir = self
            .lora_dir
            .clone()
            .or_else(|| self.models.models_dir.as_ref().map(|d| d.join("loras")));
        let (prompt, adapters) = crate::lora::adapters(
            &self.loras,
            &request.prompt,
            &request.negative,
            lora_dir.as_deref(),
        )?;
        request.prompt = prompt;
        request.adapters = adapters;
        request.validate()?;
        crate::backend::probe::<B>(&device)?;
        // Found out now, not after minutes of generating.
        for path in std::iter::once(&self.output).chain(&self.save_latent) {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir.filter(|d| !d.is_dir()) {
                return Err(CliError::Usage(format!(
                    "cannot write {}: the folder {} does not exist",
                    path.display(),
                    dir.display()
                )));
            }
        }
        let files = self.models.files()?;
        let expansion = match (&self.idea, &self.prompter) {
            (Some(idea), Some(dir)) => Some(crate::expand::expand_for_generate::<B>(
                dir,
                &self.prompter_sampling,
                idea,
                self.prompter_seed.unwrap_or(request.seed),
                self.quiet,
                &device,
            )?),
            _ => None,
        };
        if let Some(e) = &expansion {
            request.prompt = e.text.clone();
        }
        let mut pipeline = Pipeline::<B>::builder(files)
            .device(device)
            .vae_tiling(self.vae_tile.map(|tile| Tiling {
                tile,
                overlap: (tile / 8).max(1),
            }))
            .dit_dtype(self.dtypes.dit())
            .text_encoder_dtype(self.dtypes.text_encoder())
            .vae_dtype(self.dtypes.vae())
            .check_weights(!self.no_weight_check)
            .keep_quantized(self.dtypes.keep_quantized())
            .build()?;
        let quiet = self.quiet;
        let say = |line: String| {
            if !quiet {
                eprintln!("{line}");
            }
        };
        say(format!(
            "seed {}, denoiser in {:?}, text encoder in {:?}, VAE in {:?}",
            request.seed,
            pipeline.dit_dtype(),
            pipeline.text_encoder().dtype(),
            pipeline.vae_dtype()
        ));
        let kept = pipeline.kept_quantized();
        if kept > 0 {
            say(format!(
                "{:.1}M denoiser weights kept quantised (Q8_0){}",
                kept as f64 / 1e6,
                if request.adapters.is_empty() {
                    ""
                } else {
                    "; the adapters dequantise the layers they patch"
                }
            ));
        }
        let bar = if quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(request.steps as u64)
        };
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} steps, {elapsed} (eta {eta}) {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let result = pipeline.generate(&request, |event| {
            match event {
                Event::Step { step, steps, sigma } => {
                    bar.set_length(*steps as u64);
                    bar.set_position(*step as u64 + 1);
                    bar.set_message(format!("σ {sigma:.3}"));
                }
                Event::Load { component, path } => {
                    bar.suspend(|| say(format!("loading the {component} from {}", path.display())))
                }
                Event::Tokens { positive, negative } => {
                    bar.suspend(|| say(format!("tokens: {positive} (negative: {negative})")))
                }
                Event::Warning(w) => bar.suspend(|| eprintln!("warning: {w}")),
                Event::Memory(m) => bar.suspend(|| say(format!("memory: {m}"))),
                Event::Decode => bar.suspend(|| say("decoding".into())),
                Event::Adapter(r) => bar.suspend(|| say(crate::lora::describe(r))),
                Event::Release { .. } | Event::Preview { .. } => {}
            }
            ControlFlow::Continue(())
        });
        bar.finish_and_clear();
        let generation = result?;
        if let Some(path) = &self.save_latent {
            save_latent(path, &generation.latent)?;
        }
        let count = generation.images.len();
        for (i, image) in generation.images.iter().enumerate() {
            let path = self.output_path(i, count);
            let mut parameters = png_parameters(&request, pipeline.files(), i);
            if let (Some(e), Some(idea), Some(dir)) = (&expansion, &self.idea, &self.prompter) {
                parameters.push(("idea".into(), idea.clone()));
                parameters.push(("prompter".into(), dir.display().to_string()));
                parameters.push(("prompter_seed".into(), e.seed.to_string()));
            }
            let written = write_png(&path, image, &parameters);
            if let Err(e) = written {
                remove_partial(&path);
                return Err(e.into());
            }
            say(format!("wrote {}", path.display()));
        }
        Ok(())
    }
}

fn parse_depth(s: &str) -> Result<u8, String> {
    match s {
        "8" => Ok(8),
        "16" => Ok(16),
        _ => Err("8 or 16".into()),
    }
}

fn remove_partial(path: &Path) {
    // Best effort: a failed write should not leave a broken image behind.
    let _ = std::fs::remove_file(path);
}

/// A seed from the clock, for runs without --seed.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) & 0xffff_ffff_ffff
}
