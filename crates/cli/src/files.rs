//! The arguments that choose the model files and their compute dtypes (`generate`, `serve`).

use std::path::PathBuf;

use burn::tensor::FloatDType;
use clap::{Args, ValueEnum};
use sakiko_pipeline::ModelFiles;

use crate::CliError;

/// A model's compute dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DitDtype {
    /// bf16 on CUDA, f32 elsewhere.
    Auto,
    /// f32 everywhere.
    F32,
    /// bf16 (half the memory; CPUs and CUDA).
    Bf16,
    /// f16 with ComfyUI's overflow clamp (e.g. wgpu devices without bf16).
    F16,
}

impl DitDtype {
    /// The dtype asked for; `None` for the backend's default.
    pub(crate) fn float(self) -> Option<FloatDType> {
        match self {
            DitDtype::Auto => None,
            DitDtype::F32 => Some(FloatDType::F32),
            DitDtype::Bf16 => Some(FloatDType::BF16),
            DitDtype::F16 => Some(FloatDType::F16),
        }
    }
}

/// Which model files to load.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// The NextDiT denoiser: a file or diffusers folder (with --text-encoder and --vae).
    #[arg(long, value_name = "F", conflicts_with_all = ["checkpoint", "hub"])]
    pub dit: Option<PathBuf>,
    /// The Gemma-2 text encoder.
    #[arg(long, value_name = "F")]
    pub text_encoder: Option<PathBuf>,
    /// The VAE.
    #[arg(long, value_name = "F")]
    pub vae: Option<PathBuf>,
    /// An all-in-one checkpoint holding all three.
    #[arg(long, value_name = "F", conflicts_with_all = ["models_dir", "hub"])]
    pub checkpoint: Option<PathBuf>,
    /// A ComfyUI `models/` folder (diffusion_models/, text_encoders/, vae/); --dit, --text-encoder
    /// and --vae may name files in it.
    #[arg(long, value_name = "D", conflicts_with = "hub")]
    pub models_dir: Option<PathBuf>,
    /// A diffusers pipeline folder (transformer/, text_encoder/, tokenizer/, vae/).
    #[arg(long, value_name = "D", conflicts_with_all = ["dit", "checkpoint", "models_dir", "hub"])]
    pub diffusers: Option<PathBuf>,
    /// Download from this Hugging Face repository (needs the `hub` feature and network).
    #[arg(long, value_name = "REPO")]
    pub hub: Option<String>,
    /// The denoiser's diffusers config.json.
    #[arg(long, value_name = "J")]
    pub dit_config: Option<PathBuf>,
    /// The text encoder's Hugging Face config.json.
    #[arg(long, value_name = "J")]
    pub text_encoder_config: Option<PathBuf>,
    /// The VAE's diffusers config.json.
    #[arg(long, value_name = "J")]
    pub vae_config: Option<PathBuf>,
    /// tokenizer.json or tokenizer.model (default: embedded in the text-encoder file).
    #[arg(long, value_name = "F")]
    pub tokenizer: Option<PathBuf>,
}

impl ModelArgs {
    pub fn files(&self) -> Result<ModelFiles, CliError> {
        let mut files = if let Some(repo) = &self.hub {
            hub(repo)?
        } else if let Some(dir) = &self.diffusers {
            ModelFiles::diffusers(dir)?
        } else if let Some(ckpt) = &self.checkpoint {
            let mut files = ModelFiles::checkpoint(ckpt);
            // Single components may still be overridden.
            files.text_encoder = self.text_encoder.clone().unwrap_or(files.text_encoder);
            files.vae = self.vae.clone().unwrap_or(files.vae);
            files
        } else if let Some(dir) = &self.models_dir {
            ModelFiles::models_dir_with(
                dir,
                [
                    self.dit.as_deref(),
                    self.text_encoder.as_deref(),
                    self.vae.as_deref(),
                ],
            )?
        } else {
            match (&self.dit, &self.text_encoder, &self.vae) {
                (Some(d), Some(t), Some(v)) => ModelFiles::new(d, t, v),
                _ => {
                    return Err(CliError::Usage(
                        "give the models: --dit F --text-encoder F --vae F, --checkpoint F, \
                         --models-dir D, --diffusers D or --hub REPO"
                            .into(),
                    ));
                }
            }
        };
        files.dit_config = self.dit_config.clone().or(files.dit_config);
        files.text_encoder_config = self
            .text_encoder_config
            .clone()
            .or(files.text_encoder_config);
        files.vae_config = self.vae_config.clone().or(files.vae_config);
        files.tokenizer = self.tokenizer.clone().or(files.tokenizer);
        Ok(files)
    }
}

/// The compute dtypes of the three models.
#[derive(Debug, Args)]
pub struct DtypeArgs {
    /// The compute dtype of the denoiser, the text encoder and the VAE.
    #[arg(long, value_enum, default_value_t = DitDtype::Auto)]
    dtype: DitDtype,
    /// The denoiser's compute dtype, overriding --dtype.
    #[arg(long, value_enum, value_name = "DTYPE")]
    dit_dtype: Option<DitDtype>,
    /// The text encoder's compute dtype, overriding --dtype.
    #[arg(long, value_enum, value_name = "DTYPE")]
    text_encoder_dtype: Option<DitDtype>,
    /// The VAE's compute dtype, overriding --dtype.
    #[arg(long, value_enum, value_name = "DTYPE")]
    vae_dtype: Option<DitDtype>,
    /// Keep a GGUF denoiser's Q8_0 weights quantised on the device (1.125 instead of 2 bytes
    /// per weight). Default: on CUDA and wgpu (adapters dequantise the layers they patch); Flex
    /// dequantises at load.
    #[arg(long, value_name = "BOOL")]
    keep_quantized: Option<bool>,
}

impl DtypeArgs {
    /// Whether Q8_0 denoiser weights stay quantised (`None`: automatic).
    pub fn keep_quantized(&self) -> Option<bool> {
        self.keep_quantized
    }

    /// The denoiser's dtype (`None`: the backend's default).
    pub fn dit(&self) -> Option<FloatDType> {
        self.dit_dtype.unwrap_or(self.dtype).float()
    }

    /// The text encoder's dtype.
    pub fn text_encoder(&self) -> Option<FloatDType> {
        self.text_encoder_dtype.unwrap_or(self.dtype).float()
    }

    /// The VAE's dtype.
    pub fn vae(&self) -> Option<FloatDType> {
        self.vae_dtype.unwrap_or(self.dtype).float()
    }
}

#[cfg(feature = "hub")]
fn hub(repo: &str) -> Result<ModelFiles, CliError> {
    Ok(sakiko_pipeline::HubSource::new(repo).download()?)
}

#[cfg(not(feature = "hub"))]
fn hub(_: &str) -> Result<ModelFiles, CliError> {
    Err(CliError::Usage(
        "this `sakiko` was built without Hugging Face downloads; rebuild it with \
         `cargo install sakiko-cli --features hub`, or download the files and pass them"
            .into(),
    ))
}
