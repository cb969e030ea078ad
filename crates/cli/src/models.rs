//! `sakiko tokenize | encode | schedule | inspect`.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use clap::Args;
use sakiko_pipeline::{ModelFiles, TextEncoder};
use sakiko_sampling::{FlowSampling, Scheduler};

use crate::CliError;
use crate::backend::{BackendChoice, Job};

/// The text encoder and the text to run it on.
#[derive(Debug, Clone, Args)]
pub struct TextArgs {
    /// Gemma-2 weights: a file (ComfyUI, Hugging Face, all-in-one checkpoint) or a Hugging Face folder.
    #[arg(long, value_name = "F")]
    text_encoder: PathBuf,
    /// The text encoder's Hugging Face `config.json` (default: the 2B preset, widths from the shapes).
    #[arg(long, value_name = "J")]
    text_encoder_config: Option<PathBuf>,
    /// `tokenizer.json` or `tokenizer.model` (default: embedded in the weights, or next to a folder).
    #[arg(long, value_name = "F")]
    tokenizer: Option<PathBuf>,
    /// Apply the Sakiko prefix as `generate` does (once, even if TEXT has it).
    #[arg(long)]
    prefix: bool,
    /// The text.
    text: String,
}

impl TextArgs {
    fn files(&self) -> ModelFiles {
        ModelFiles {
            text_encoder: self.text_encoder.clone(),
            tokenizer: self.tokenizer.clone(),
            text_encoder_config: self.text_encoder_config.clone(),
            ..ModelFiles::default()
        }
    }

    fn text(&self) -> String {
        if self.prefix {
            sakiko_prompt::with_prefix(&self.text)
        } else {
            self.text.clone()
        }
    }
}

/// `sakiko tokenize`.
#[derive(Debug, Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    text: TextArgs,
}

impl TokenizeArgs {
    pub fn run(self) -> Result<(), CliError> {
        let tokenizer = self.text.files().load_tokenizer()?;
        let ids = tokenizer
            .encode(&self.text.text())
            .map_err(|e| CliError::Failed(e.to_string()))?;
        println!("{}", serde_json::json!({ "ids": ids, "count": ids.len() }));
        Ok(())
    }
}

/// `sakiko encode`.
#[derive(Debug, Args)]
pub struct EncodeArgs {
    #[command(flatten)]
    text: TextArgs,
    /// Output safetensors file (tensor `cond`, f32 [1, L, hidden]).
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// The backend to run on.
    #[arg(long, value_enum, default_value_t = BackendChoice::Flex)]
    backend: BackendChoice,
}

impl EncodeArgs {
    pub fn run(self) -> Result<(), CliError> {
        let backend = self.backend;
        backend.run(self)
    }
}

impl Job for EncodeArgs {
    type Output = ();

    fn run<B: Backend>(self, device: B::Device) -> Result<(), CliError> {
        crate::backend::probe::<B>(&device)?;
        let mut te = TextEncoder::<B>::new(&self.text.files(), Default::default(), device)?;
        let ids = te.tokenize(&self.text.text())?;
        let cond = te.encode(&ids)?;
        sakiko_pipeline::save_tensor(&self.output, "cond", &cond)?;
        eprintln!("{} tokens → {}", ids.len(), self.output.display());
        Ok(())
    }
}

/// `sakiko schedule`.
#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// ComfyUI scheduler name (simple, normal, karras, exponential, sgm_uniform, beta, linear_quadratic, kl_optimal, ddim_uniform).
    #[arg(long)]
    scheduler: String,
    /// Steps.
    #[arg(long)]
    steps: usize,
    /// Flow shift.
    #[arg(long, default_value_t = 6.0)]
    shift: f32,
    /// Image-to-image strength: run the last `denoise` fraction of a longer schedule.
    #[arg(long, default_value_t = 1.0)]
    denoise: f64,
}

impl ScheduleArgs {
    pub fn run(self) -> Result<(), CliError> {
        let usage = |e: sakiko_sampling::SamplingError| CliError::Usage(e.to_string());
        let scheduler: Scheduler = self.scheduler.parse().map_err(usage)?;
        let ms = FlowSampling::with_shift(self.shift).map_err(usage)?;
        let sigmas = scheduler
            .sigmas_with_denoise(&ms, self.steps, self.denoise)
            .map_err(usage)?;
        println!("{}", serde_json::json!({ "sigmas": sigmas }));
        Ok(())
    }
}

/// `sakiko inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A safetensors file, or a diffusers / Hugging Face component folder.
    file: PathBuf,
}

impl InspectArgs {
    pub fn run(self) -> Result<(), CliError> {
        let inspection = sakiko_pipeline::inspect(&self.file)?;
        if inspection.components.is_empty() {
            // Not a model: an adapter?
            let adapter = sakiko_adapters::Adapter::open(&self.file).map_err(|e| {
                CliError::Failed(format!(
                    "{}: no NextDiT, Gemma-2 or VAE tensors found, and not an adapter ({e})",
                    self.file.display()
                ))
            })?;
            let json = crate::backend::first_compiled().run(DescribeAdapter { adapter })?;
            let json =
                serde_json::to_string_pretty(&json).map_err(|e| CliError::Failed(e.to_string()))?;
            println!("{json}");
            return Ok(());
        }
        let json = serde_json::to_string_pretty(&inspection.to_json())
            .map_err(|e| CliError::Failed(e.to_string()))?;
        println!("{json}");
        Ok(())
    }
}

/// An adapter file described against the released models' layers (2B NextDiT, Gemma-2-2B).
struct DescribeAdapter {
    adapter: sakiko_adapters::Adapter,
}

impl crate::backend::Job for DescribeAdapter {
    type Output = serde_json::Value;

    fn run<B: burn::tensor::backend::Backend>(
        self,
        device: B::Device,
    ) -> Result<serde_json::Value, CliError> {
        // Models fresh from `init` are lazy: listing their layers allocates nothing.
        let dit = sakiko_nextdit::NextDitConfig::lumina2_2b()
            .init::<B>(&device)
            .linear_keys();
        let te = sakiko_gemma::Gemma2Config::gemma_2_2b()
            .init::<B>(&device)
            .linear_keys();
        let a = &self.adapter;
        let targets = a.targets(&dit, &te);
        let training: serde_json::Map<String, serde_json::Value> = [
            "ss_network_module",
            "ss_network_dim",
            "ss_network_alpha",
            "ss_network_args",
            "ss_base_model_version",
            "ss_output_name",
            "modelspec.architecture",
            "modelspec.title",
        ]
        .into_iter()
        .filter_map(|k| a.metadata(k).map(|v| (k.to_owned(), v.into())))
        .collect();
        Ok(serde_json::json!({
            "path": a.path(),
            "adapter": {
                "formats": a.formats().iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                "dora": a.has_dora(),
                "rank": a.rank(),
                "alpha": a.alpha(),
                "modules": a.modules().len(),
                "hash": sakiko_adapters::short_hash(a.path()).ok(),
                "targets": {
                    "dit_layers": targets.dit,
                    "text_encoder_layers": targets.text_encoder,
                    "unmatched": targets.unmatched,
                    "ignored_keys": a.ignored_keys(),
                },
                "training": training,
            },
        }))
    }
}
