//! Downloading model files from Hugging Face (feature `hub`).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
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
        match choose(&self.repo, &names)? {
            Choice::Diffusers(files) => {
                let mut root = None;
                for name in &files {
                    let path = get(name)?;
                    if name == "model_index.json" {
                        root = path.parent().map(Path::to_path_buf);
                    }
                }
                let root =
                    root.ok_or_else(|| PipelineError::Hub("model_index.json missing".into()))?;
                ModelFiles::diffusers(root)
            }
            Choice::Split {
                dit,
                text_encoder,
                vae,
            } => Ok(ModelFiles::new(get(&dit)?, get(&text_encoder)?, get(&vae)?)),
            Choice::Checkpoint(name) => Ok(ModelFiles::checkpoint(get(&name)?)),
        }
    }
}

/// Which files of a repository listing to download.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// A diffusers pipeline: these files (component folders and `model_index.json`, last).
    Diffusers(Vec<String>),
    /// ComfyUI's repackaged layout: one file per component.
    Split {
        dit: String,
        text_encoder: String,
        vae: String,
    },
    /// The repository's one checkpoint.
    Checkpoint(String),
}

/// Chooses from the listing `names` of `repo` (see [`HubSource`]).
fn choose(repo: &str, names: &[String]) -> Result<Choice, PipelineError> {
    if names.iter().any(|n| n == "model_index.json") {
        let wanted = |n: &&String| {
            ["transformer/", "text_encoder/", "tokenizer/", "vae/"]
                .iter()
                .any(|dir| n.starts_with(dir))
                && [".json", ".safetensors", ".model"]
                    .iter()
                    .any(|ext| n.ends_with(ext))
        };
        let mut files: Vec<String> = names.iter().filter(wanted).cloned().collect();
        files.push("model_index.json".into());
        return Ok(Choice::Diffusers(files));
    }
    let safetensors: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    let pick = |folders: &[&str]| -> Vec<&String> {
        safetensors
            .iter()
            .copied()
            .filter(|n| folders.iter().any(|f| n.split('/').any(|part| part == *f)))
            .collect()
    };
    let (dit, te, vae) = (
        pick(&["diffusion_models", "unet"]),
        pick(&["text_encoders", "clip"]),
        pick(&["vae"]),
    );
    if let ([dit], [te], [vae]) = (dit.as_slice(), te.as_slice(), vae.as_slice()) {
        return Ok(Choice::Split {
            dit: (*dit).clone(),
            text_encoder: (*te).clone(),
            vae: (*vae).clone(),
        });
    }
    match safetensors.as_slice() {
        [single] => Ok(Choice::Checkpoint((*single).clone())),
        _ => Err(PipelineError::Hub(format!(
            "{repo} has no diffusers layout, no single diffusion_models/text_encoders/vae file \
             each, and not exactly one checkpoint; its .safetensors files: {}",
            safetensors
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn comfyui_repackaged_repositories_give_one_file_per_component() {
        let listing = names(&[
            ".gitattributes",
            "README.md",
            "all_in_one/lumina_2.safetensors",
            "split_files/diffusion_models/lumina_2_model_bf16.safetensors",
            "split_files/text_encoders/gemma_2_2b_fp16.safetensors",
            "split_files/vae/ae.safetensors",
        ]);
        assert_eq!(
            choose("r", &listing).unwrap(),
            Choice::Split {
                dit: "split_files/diffusion_models/lumina_2_model_bf16.safetensors".into(),
                text_encoder: "split_files/text_encoders/gemma_2_2b_fp16.safetensors".into(),
                vae: "split_files/vae/ae.safetensors".into(),
            }
        );
    }

    #[test]
    fn diffusers_repositories_download_the_component_folders() {
        let listing = names(&[
            "model_index.json",
            "scheduler/scheduler_config.json",
            "transformer/config.json",
            "transformer/diffusion_pytorch_model-00001-of-00002.safetensors",
            "text_encoder/config.json",
            "text_encoder/model.safetensors.index.json",
            "tokenizer/tokenizer.json",
            "tokenizer/tokenizer.model",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "assets/demo.png",
        ]);
        let Choice::Diffusers(files) = choose("r", &listing).unwrap() else {
            panic!("not a diffusers choice");
        };
        assert_eq!(files.len(), 9);
        assert_eq!(files.last().map(String::as_str), Some("model_index.json"));
        assert!(
            !files
                .iter()
                .any(|f| f.starts_with("scheduler/") || f.ends_with(".png"))
        );
    }

    #[test]
    fn single_checkpoints_and_unclear_listings() {
        let one = names(&["README.md", "neta-lumina-v1.0-all-in-one.safetensors"]);
        assert_eq!(
            choose("r", &one).unwrap(),
            Choice::Checkpoint("neta-lumina-v1.0-all-in-one.safetensors".into())
        );
        let two = names(&["a.safetensors", "b.safetensors"]);
        let err = choose("owner/two", &two).unwrap_err();
        assert!(err.to_string().contains("owner/two") && err.to_string().contains("b.safetensors"));
    }
}
