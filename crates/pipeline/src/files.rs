//! Where the model files are: explicit paths, a ComfyUI `models/` folder, an all-in-one
//! checkpoint or a diffusers folder; and what a file holds, read from its header alone.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sakiko_gemma::{Gemma2Config, GemmaTokenizer};
use sakiko_nextdit::NextDitConfig;
use sakiko_vae::VaeConfig;
use sakiko_weights::{Format, WeightError, WeightFile};

use crate::{Component, PipelineError};

/// The files of the three components (a path may be a file or a diffusers folder; the same
/// all-in-one checkpoint may serve all three).
///
/// ```
/// use sakiko_pipeline::ModelFiles;
/// let files = ModelFiles::new("lumina.safetensors", "gemma_2_2b_fp16.safetensors", "ae.safetensors")
///     .with_vae_config("ae_config.json");
/// assert_eq!(files.dit.to_str(), Some("lumina.safetensors"));
/// let aio = ModelFiles::checkpoint("neta-lumina-aio.safetensors");
/// assert_eq!(aio.dit, aio.vae);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelFiles {
    /// The NextDiT checkpoint (original or diffusers names, any prefix) or diffusers folder.
    pub dit: PathBuf,
    /// The Gemma-2 checkpoint (ComfyUI, Hugging Face, sharded folder).
    pub text_encoder: PathBuf,
    /// The FLUX VAE (`ae.safetensors`, diffusers names or folder).
    pub vae: PathBuf,
    /// `tokenizer.json` or SentencePiece `tokenizer.model`; without it, the tokenizer embedded in
    /// the text-encoder file (`spiece_model`) or next to a Hugging Face folder is used.
    pub tokenizer: Option<PathBuf>,
    /// diffusers `config.json` of the denoiser (otherwise detected from the shapes).
    pub dit_config: Option<PathBuf>,
    /// Hugging Face `config.json` of the text encoder (otherwise the 2B preset, widths from shapes).
    pub text_encoder_config: Option<PathBuf>,
    /// diffusers `config.json` of the VAE (otherwise FLUX's, widths from shapes).
    pub vae_config: Option<PathBuf>,
}

/// ComfyUI's folders for each component, the current name first.
const COMFY_FOLDERS: [(Component, &[&str]); 3] = [
    (Component::Dit, &["diffusion_models", "unet", "checkpoints"]),
    (
        Component::TextEncoder,
        &["text_encoders", "clip", "checkpoints"],
    ),
    (Component::Vae, &["vae", "checkpoints"]),
];

impl ModelFiles {
    /// Three explicit paths.
    pub fn new(
        dit: impl Into<PathBuf>,
        text_encoder: impl Into<PathBuf>,
        vae: impl Into<PathBuf>,
    ) -> Self {
        Self {
            dit: dit.into(),
            text_encoder: text_encoder.into(),
            vae: vae.into(),
            ..Self::default()
        }
    }

    /// One all-in-one checkpoint (`model.diffusion_model.`, `text_encoders.gemma2_2b.…`, `vae.`).
    pub fn checkpoint(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        Self::new(path.clone(), path.clone(), path)
    }

    /// A ComfyUI `models/` folder: the one denoiser in `diffusion_models/` (or `unet/`), the one
    /// Gemma-2 in `text_encoders/` (or `clip/`), the one VAE in `vae/`, each recognised from its
    /// tensors, with an all-in-one checkpoint in `checkpoints/` as a fallback. Several candidates
    /// are an [`PipelineError::Ambiguous`] error; choose with [`ModelFiles::models_dir_with`].
    pub fn models_dir(dir: impl AsRef<Path>) -> Result<Self, PipelineError> {
        Self::models_dir_with(dir, [None, None, None])
    }

    /// [`ModelFiles::models_dir`] with some components chosen: `[dit, text_encoder, vae]`, each an
    /// existing path or a file name inside the component's folder.
    pub fn models_dir_with(
        dir: impl AsRef<Path>,
        chosen: [Option<&Path>; 3],
    ) -> Result<Self, PipelineError> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(PipelineError::NotFound {
                component: Component::Dit,
                detail: format!("{} is not a folder", dir.display()),
            });
        }
        let mut found = Vec::with_capacity(3);
        for ((component, folders), chosen) in COMFY_FOLDERS.iter().zip(chosen) {
            found.push(match chosen {
                Some(p) if p.exists() => p.to_path_buf(),
                Some(name) => folders
                    .iter()
                    .map(|f| dir.join(f).join(name))
                    .find(|p| p.exists())
                    .ok_or_else(|| PipelineError::NotFound {
                        component: *component,
                        detail: format!(
                            "{} is neither a file nor in {}/{{{}}}",
                            name.display(),
                            dir.display(),
                            folders.join(",")
                        ),
                    })?,
                None => find_in(dir, *component, folders)?,
            });
        }
        let vae = found.pop().unwrap_or_default();
        let text_encoder = found.pop().unwrap_or_default();
        let dit = found.pop().unwrap_or_default();
        Ok(Self::new(dit, text_encoder, vae))
    }

    /// A diffusers pipeline folder (`transformer/`, `text_encoder/`, `tokenizer/`, `vae/`).
    pub fn diffusers(dir: impl AsRef<Path>) -> Result<Self, PipelineError> {
        let dir = dir.as_ref();
        let sub = |name: &str, component| {
            let p = dir.join(name);
            if p.join("config.json").exists() {
                Ok(p)
            } else {
                Err(PipelineError::NotFound {
                    component,
                    detail: format!("no {}/config.json in {}", name, dir.display()),
                })
            }
        };
        let mut files = Self::new(
            sub("transformer", Component::Dit)?,
            sub("text_encoder", Component::TextEncoder)?,
            sub("vae", Component::Vae)?,
        );
        files.tokenizer = ["tokenizer.json", "tokenizer.model"]
            .iter()
            .map(|f| dir.join("tokenizer").join(f))
            .find(|p| p.exists());
        Ok(files)
    }

    /// Sets the tokenizer file.
    pub fn with_tokenizer(mut self, path: impl Into<PathBuf>) -> Self {
        self.tokenizer = Some(path.into());
        self
    }

    /// Sets the denoiser's `config.json`.
    pub fn with_dit_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.dit_config = Some(path.into());
        self
    }

    /// Sets the text encoder's `config.json`.
    pub fn with_text_encoder_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.text_encoder_config = Some(path.into());
        self
    }

    /// Sets the VAE's `config.json`.
    pub fn with_vae_config(mut self, path: impl Into<PathBuf>) -> Self {
        self.vae_config = Some(path.into());
        self
    }

    /// The denoiser's weights.
    pub(crate) fn open_dit(&self) -> Result<WeightFile, PipelineError> {
        Ok(open_component(&self.dit, "transformer")?.0)
    }

    /// The VAE's weights.
    pub(crate) fn open_vae(&self) -> Result<WeightFile, PipelineError> {
        Ok(open_component(&self.vae, "vae")?.0)
    }

    /// The denoiser's weights and configuration (explicit, from its folder, or detected).
    pub(crate) fn dit_source(&self) -> Result<(WeightFile, NextDitConfig), PipelineError> {
        let (file, folder_config) = open_component(&self.dit, "transformer")?;
        let config = match self.dit_config.as_ref().or(folder_config.as_ref()) {
            Some(c) => NextDitConfig::from_file(c)?,
            None => {
                sakiko_nextdit::detect(&file)
                    .map_err(|e| wrong(&file, Component::Dit, e))?
                    .config
            }
        };
        Ok((file, config))
    }

    /// The VAE's weights and configuration.
    pub(crate) fn vae_source(&self) -> Result<(WeightFile, VaeConfig), PipelineError> {
        let (file, folder_config) = open_component(&self.vae, "vae")?;
        let config = match self.vae_config.as_ref().or(folder_config.as_ref()) {
            Some(c) => VaeConfig::from_file(c)?,
            None => {
                sakiko_vae::detect(&file)
                    .map_err(|e| wrong(&file, Component::Vae, e))?
                    .config
            }
        };
        Ok((file, config))
    }

    /// The text encoder's configuration (the weights are opened by `Gemma2::load`, which also
    /// reads sharded folders).
    pub(crate) fn text_encoder_config(&self) -> Result<Gemma2Config, PipelineError> {
        let path = &self.text_encoder;
        if let Some(c) = &self.text_encoder_config {
            return Ok(Gemma2Config::from_file(c)?);
        }
        if path.is_dir() {
            return Ok(Gemma2Config::from_file(path.join("config.json"))?);
        }
        let file = WeightFile::open_any(path)?;
        Ok(sakiko_gemma::detect(&file)
            .map_err(|e| wrong(&file, Component::TextEncoder, e))?
            .config)
    }

    /// The tokenizer: the explicit file, one in (or next to) a Hugging Face folder, or the
    /// SentencePiece model embedded in the text-encoder file.
    pub fn load_tokenizer(&self) -> Result<GemmaTokenizer, PipelineError> {
        let te = &self.text_encoder;
        let candidates = match &self.tokenizer {
            Some(p) => vec![p.clone()],
            None if te.is_dir() => ["tokenizer.json", "tokenizer.model"]
                .iter()
                .flat_map(|f| [te.join(f), te.join("..").join("tokenizer").join(f)])
                .filter(|p| p.exists())
                .collect(),
            None => Vec::new(),
        };
        if let Some(path) = candidates.first() {
            return if path.extension().is_some_and(|e| e == "json") {
                Ok(GemmaTokenizer::from_tokenizer_json(path)?)
            } else {
                let bytes = std::fs::read(path).map_err(|e| WeightError::Io {
                    path: path.clone(),
                    source: e,
                })?;
                Ok(GemmaTokenizer::from_sentencepiece(&bytes)?)
            };
        }
        if te.is_dir() {
            return Err(PipelineError::NotFound {
                component: Component::TextEncoder,
                detail: format!(
                    "no tokenizer.json or tokenizer.model in or next to {}; pass the tokenizer file",
                    te.display()
                ),
            });
        }
        let file = WeightFile::open_any(te)?;
        GemmaTokenizer::from_weights(&file).map_err(|_| PipelineError::NotFound {
            component: Component::TextEncoder,
            detail: format!(
                "{} embeds no tokenizer (`spiece_model`); pass tokenizer.json or tokenizer.model",
                te.display()
            ),
        })
    }
}

/// Opens a component given as a file or a diffusers folder; returns the folder's `config.json`.
fn open_component(
    path: &Path,
    subfolder: &str,
) -> Result<(WeightFile, Option<PathBuf>), PipelineError> {
    match sakiko_weights::diffusers_component(path, subfolder) {
        Some((config, weights)) => Ok((WeightFile::open_any(weights)?, Some(config))),
        None => Ok((WeightFile::open_any(path)?, None)),
    }
}

/// A detection failure: a missing prefix means the file holds something else.
fn wrong(file: &WeightFile, expected: Component, e: impl Into<PipelineError>) -> PipelineError {
    let e = e.into();
    let missing_prefix = matches!(
        &e,
        PipelineError::Denoiser(sakiko_nextdit::NextDitError::Weights(
            WeightError::NoPrefix { .. }
        )) | PipelineError::Vae(sakiko_vae::VaeError::Weights(WeightError::NoPrefix { .. }))
            | PipelineError::TextEncoder(sakiko_gemma::GemmaError::Weights(
                WeightError::NoPrefix { .. }
            ))
    );
    if !missing_prefix {
        return e;
    }
    let found = match inspect_file(file).components.as_slice() {
        [] => "it holds no known model component".to_owned(),
        found => format!(
            "it holds a {}",
            found
                .iter()
                .map(|d| d.component().to_string())
                .collect::<Vec<_>>()
                .join(" and a ")
        ),
    };
    PipelineError::WrongComponent {
        path: file.path().to_path_buf(),
        expected,
        found,
    }
}

/// Whether `file` holds tensors of `component` (from its keys alone).
fn holds(file: &WeightFile, component: Component) -> bool {
    match component {
        Component::Dit => sakiko_nextdit::identify(file).is_ok(),
        Component::TextEncoder => sakiko_gemma::identify(file).is_ok(),
        Component::Vae => sakiko_vae::identify(file).is_ok(),
    }
}

/// The weight files (`.safetensors`, `.gguf`) directly in `dir`, sorted; `None` when `dir`
/// cannot be read.
pub fn weight_files(dir: &Path) -> Option<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "safetensors" || e == "gguf")
        })
        .collect();
    names.sort();
    Some(names)
}

/// The one file in `dir/{folders}` that holds `component`.
fn find_in(dir: &Path, component: Component, folders: &[&str]) -> Result<PathBuf, PipelineError> {
    let mut looked = Vec::new();
    for folder in folders {
        let sub = dir.join(folder);
        let Some(names) = weight_files(&sub) else {
            continue;
        };
        looked.push(format!("{} ({} files)", sub.display(), names.len()));
        let matching: Vec<PathBuf> = names
            .into_iter()
            .filter(|p| WeightFile::open_any(p).is_ok_and(|f| holds(&f, component)))
            .collect();
        match matching.len() {
            0 => continue,
            1 => return Ok(matching.into_iter().next().unwrap_or_default()),
            _ => {
                return Err(PipelineError::Ambiguous {
                    component,
                    dir: sub,
                    candidates: matching
                        .iter()
                        .filter_map(|p| p.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect(),
                });
            }
        }
    }
    Err(PipelineError::NotFound {
        component,
        detail: if looked.is_empty() {
            format!(
                "{} has none of the folders {}",
                dir.display(),
                folders.join(", ")
            )
        } else {
            format!("searched {}", looked.join(", "))
        },
    })
}

/// One component found in a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Detected {
    /// A NextDiT denoiser.
    Dit(sakiko_nextdit::Detected),
    /// A Gemma-2 text encoder.
    TextEncoder(sakiko_gemma::Detected),
    /// A FLUX-style VAE.
    Vae(sakiko_vae::Detected),
    /// A component whose tensors are present but whose configuration cannot be detected from
    /// the shapes (tiny or unusual models: pass its `config.json`).
    Undetected {
        /// The component.
        component: Component,
        /// Why detection failed.
        reason: String,
    },
}

impl Detected {
    /// Which component this is.
    pub fn component(&self) -> Component {
        match self {
            Detected::Dit(_) => Component::Dit,
            Detected::TextEncoder(_) => Component::TextEncoder,
            Detected::Vae(_) => Component::Vae,
            Detected::Undetected { component, .. } => *component,
        }
    }

    /// A JSON description: component, prefix, layout and configuration.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Detected::Dit(d) => json!({
                "component": Component::Dit, "prefix": d.prefix,
                "layout": format!("{:?}", d.layout).to_lowercase(), "config": d.config,
            }),
            Detected::TextEncoder(d) => json!({
                "component": Component::TextEncoder, "prefix": d.prefix,
                "embedded_tokenizer": d.has_tokenizer, "config": d.config,
            }),
            Detected::Vae(d) => json!({
                "component": Component::Vae, "prefix": d.prefix,
                "layout": format!("{:?}", d.layout).to_lowercase(), "config": d.config,
            }),
            Detected::Undetected { component, reason } => json!({
                "component": component, "config": null, "detection_error": reason,
            }),
        }
    }
}

/// What a weight file holds, from its header.
#[derive(Debug, Clone, PartialEq)]
pub struct Inspection {
    /// The file.
    pub path: PathBuf,
    /// The container format.
    pub format: Format,
    /// A GGUF file's `general.architecture` (`"lumina2"`; compatibility tags such as `"pig"`).
    pub architecture: Option<String>,
    /// Tensor count per stored dtype (`"BF16"`, `"F8_E4M3"`, `"Q8_0"`, …).
    pub dtypes: BTreeMap<String, usize>,
    /// The components found (an all-in-one checkpoint has three).
    pub components: Vec<Detected>,
}

impl Inspection {
    /// A JSON description.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "path": self.path,
            "format": format!("{:?}", self.format).to_lowercase(),
            "architecture": self.architecture,
            "dtypes": self.dtypes,
            "components": self.components.iter().map(Detected::to_json).collect::<Vec<_>>(),
        })
    }
}

/// Reads the header of a weight file (or of a diffusers / Hugging Face folder's weights) and
/// reports what it holds; no tensor is loaded.
pub fn inspect(path: impl AsRef<Path>) -> Result<Inspection, PipelineError> {
    let path = path.as_ref();
    let file = if path.is_dir() {
        let found = [
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.safetensors.index.json",
            "model.safetensors",
            "model.safetensors.index.json",
        ]
        .iter()
        .map(|f| path.join(f))
        .find(|p| p.exists())
        .ok_or_else(|| PipelineError::NotFound {
            component: Component::Dit,
            detail: format!("no weights file in {}", path.display()),
        })?;
        WeightFile::open_any(found)?
    } else {
        WeightFile::open_any(path)?
    };
    Ok(inspect_file(&file))
}

fn inspect_file(file: &WeightFile) -> Inspection {
    let mut dtypes = BTreeMap::new();
    for key in file.keys() {
        if let Some(d) = file.dtype(key) {
            *dtypes.entry(d.to_string()).or_insert(0) += 1;
        }
    }
    let undetected = |component, e: &dyn std::fmt::Display| Detected::Undetected {
        component,
        reason: e.to_string(),
    };
    let components = [Component::Dit, Component::TextEncoder, Component::Vae]
        .into_iter()
        .filter(|&c| holds(file, c))
        .map(|c| match c {
            Component::Dit => {
                sakiko_nextdit::detect(file).map_or_else(|e| undetected(c, &e), Detected::Dit)
            }
            Component::TextEncoder => {
                sakiko_gemma::detect(file).map_or_else(|e| undetected(c, &e), Detected::TextEncoder)
            }
            Component::Vae => {
                sakiko_vae::detect(file).map_or_else(|e| undetected(c, &e), Detected::Vae)
            }
        })
        .collect();
    Inspection {
        path: file.path().to_path_buf(),
        format: file.format(),
        architecture: file
            .metadata("general.architecture")
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        dtypes,
        components,
    }
}
