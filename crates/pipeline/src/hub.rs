//! Downloading model files from Hugging Face (feature `hub`).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiRepo};
use hf_hub::{Repo, RepoType};

use crate::{ModelFiles, PipelineError};

/// A Hugging Face model repository to take the three components from. The file names come from
/// the repository's listing: a diffusers repository (`model_index.json`) is downloaded by
/// component folder; otherwise `.safetensors` files under a `diffusion_models`/`unet`,
/// `text_encoders`/`clip` and `vae` folder (ComfyUI's repackaged layout), or a repository's only
/// `.safetensors` file as an all-in-one checkpoint. `HF_ENDPOINT`, `HF_HOME` and the token are
/// read from the environment, as by `huggingface_hub`.
///
/// ```no_run
/// use sakiko_pipeline::HubSource;
/// let files = HubSource::new("Comfy-Org/Lumina_Image_2.0_Repackaged").download()?;
/// # Ok::<(), sakiko_pipeline::PipelineError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSource {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit (default `main`).
    pub revision: Option<String>,
}

impl HubSource {
    /// The repository `repo` at `main`.
    pub fn new(repo: impl Into<String>) -> Self {
        Self {
            repo: repo.into(),
            revision: None,
        }
    }

    /// Lists the repository, downloads (or reuses from the cache) the files the pipeline needs,
    /// and returns their local paths.
    pub fn download(&self) -> Result<ModelFiles, PipelineError> {
        let api = ApiBuilder::from_env()
            .with_progress(true)
            .build()
            .map_err(|e| PipelineError::Hub(e.to_string()))?;
        let revision = self.revision.clone().unwrap_or_else(|| "main".into());
        let repo = api.repo(Repo::with_revision(
            self.repo.clone(),
            RepoType::Model,
            revision,
        ));
        let info = repo.info().map_err(|e| {
            PipelineError::Hub(format!(
                "cannot list {} at {} ({e}); without network, download the files yourself and \
                 pass them as files, a models folder or a checkpoint",
                self.repo,
                repo.url("")
            ))
        })?;
        let names: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
        let get = |name: &str| -> Result<PathBuf, PipelineError> {
            repo.get(name)
                .map_err(|e| PipelineError::Hub(format!("{}/{name}: {e}", self.repo)))
        };
        if names.iter().any(|n| n == "model_index.json") {
            return self.diffusers(&repo, &names);
        }
        let pick = |folders: &[&str]| -> Vec<&String> {
            names
                .iter()
                .filter(|n| n.ends_with(".safetensors"))
                .filter(|n| folders.iter().any(|f| n.split('/').any(|part| part == *f)))
                .collect()
        };
        let dit = pick(&["diffusion_models", "unet"]);
        let te = pick(&["text_encoders", "clip"]);
        let vae = pick(&["vae"]);
        if let ([dit], [te], [vae]) = (dit.as_slice(), te.as_slice(), vae.as_slice()) {
            return Ok(ModelFiles::new(get(dit)?, get(te)?, get(vae)?));
        }
        let all: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with(".safetensors"))
            .collect();
        match all.as_slice() {
            [single] => Ok(ModelFiles::checkpoint(get(single)?)),
            _ => Err(PipelineError::Hub(format!(
                "{} has no diffusers layout, no single diffusion_models/text_encoders/vae file \
                 each, and not exactly one checkpoint; its .safetensors files: {}",
                self.repo,
                all.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    fn diffusers(&self, repo: &ApiRepo, names: &[String]) -> Result<ModelFiles, PipelineError> {
        let wanted = |n: &&String| {
            ["transformer/", "text_encoder/", "tokenizer/", "vae/"]
                .iter()
                .any(|dir| n.starts_with(dir))
                && (n.ends_with(".json") || n.ends_with(".safetensors") || n.ends_with(".model"))
        };
        let mut index = None;
        for name in names
            .iter()
            .filter(wanted)
            .chain(names.iter().filter(|n| *n == "model_index.json"))
        {
            let path = repo
                .get(name)
                .map_err(|e| PipelineError::Hub(format!("{}/{name}: {e}", self.repo)))?;
            if name == "model_index.json" {
                index = path.parent().map(Path::to_path_buf);
            }
        }
        let root = index.ok_or_else(|| PipelineError::Hub("model_index.json missing".into()))?;
        ModelFiles::diffusers(root)
    }
}
