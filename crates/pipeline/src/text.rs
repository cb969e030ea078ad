//! The text side: tokenizer and Gemma-2 encoder, loaded on demand.

use std::path::PathBuf;

use burn::tensor::{FloatDType, Tensor, backend::Backend};
use sakiko_adapters::{Backup, Patches};
use sakiko_gemma::{EncoderOptions, Gemma2, Gemma2Config, GemmaTokenizer};
use sakiko_weights::LinearKeys;

use crate::{ModelFiles, PipelineError};

/// Tokenizer plus encoder. The tokenizer is loaded at once (it is small); the encoder weights only
/// when something is encoded, and [`TextEncoder::release`] frees them.
///
/// ```no_run
/// use burn::backend::Flex;
/// use sakiko_pipeline::{ModelFiles, TextEncoder};
///
/// let files = ModelFiles::new("", "gemma_2_2b_fp16.safetensors", "");
/// let mut te = TextEncoder::<Flex>::new(&files, Default::default(), Default::default())?;
/// let ids = te.tokenize(&sakiko_prompt::with_prefix("1girl, smile"))?;
/// let cond = te.encode(&ids)?; // [1, ids.len(), 2304]
/// # Ok::<(), sakiko_pipeline::PipelineError>(())
/// ```
#[derive(Debug)]
pub struct TextEncoder<B: Backend> {
    tokenizer: GemmaTokenizer,
    path: PathBuf,
    config: Gemma2Config,
    options: EncoderOptions,
    dtype: FloatDType,
    check_weights: bool,
    device: B::Device,
    model: Option<Gemma2<B>>,
    /// Adapter updates merged into the weights as they load.
    adapters: Patches,
    /// The loaded model's base weights, to switch adapters without reading the file (kept only
    /// when asked: it costs the memory of the patched layers).
    backup: Option<Backup<B>>,
    keep_backup: bool,
}

impl<B: Backend> TextEncoder<B> {
    /// The tokenizer and configuration of `files`' text encoder (its weights are not read yet).
    pub fn new(
        files: &ModelFiles,
        options: EncoderOptions,
        device: B::Device,
    ) -> Result<Self, PipelineError> {
        Ok(Self {
            tokenizer: files.load_tokenizer()?,
            path: files.text_encoder.clone(),
            config: files.text_encoder_config()?,
            options,
            dtype: FloatDType::F32,
            check_weights: true,
            device,
            model: None,
            adapters: Patches::default(),
            backup: None,
            keep_backup: false,
        })
    }

    /// Computes in `dtype` (f32 by default; see `Gemma2::from_weights_as`); frees weights loaded
    /// in another dtype.
    pub fn with_dtype(mut self, dtype: FloatDType) -> Self {
        if dtype != self.dtype {
            self.release();
        }
        self.dtype = dtype;
        self
    }

    /// Whether loading checks the weights for NaN, infinity and values beyond f16's range (on
    /// by default; see `sakiko_weights::WeightFile::with_value_check`).
    pub fn with_weight_check(mut self, on: bool) -> Self {
        self.check_weights = on;
        self
    }

    /// The compute dtype.
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    /// The configuration.
    pub fn config(&self) -> &Gemma2Config {
        &self.config
    }

    /// Every linear layer of the encoder (what adapters patch), from its configuration.
    pub fn linear_keys(&self) -> Vec<LinearKeys> {
        self.config.init::<B>(&self.device).linear_keys()
    }

    /// Keeps the base weights of patched layers while the model is loaded, so that switching
    /// adapters reads no file.
    pub(crate) fn with_adapter_backup(mut self, keep: bool) -> Self {
        self.keep_backup = keep;
        self
    }

    /// Merges `adapters` into the weights from now on: a loaded model gets its base weights
    /// back (from its backup, or by being read again) and the new updates. (The pipeline calls
    /// this; its conditioning cache is keyed by the adapters it sets.)
    pub(crate) fn set_adapters(&mut self, adapters: Patches) {
        if let Some(model) = self.model.take() {
            self.model = match self.backup.take() {
                Some(backup) => Some(backup.restore(model)),
                None if self.adapters.is_empty() => Some(model),
                // Merged without a backup: read again when needed.
                None => None,
            };
        }
        self.adapters = adapters;
        if let Some(model) = self.model.take() {
            self.model = Some(self.merge(model));
        }
    }

    fn merge(&mut self, model: Gemma2<B>) -> Gemma2<B> {
        if self.adapters.is_empty() {
            return model;
        }
        if !self.keep_backup {
            return self.adapters.apply(model);
        }
        let merged = self.adapters.merge(model);
        self.backup = Some(merged.backup);
        merged.model
    }

    /// The model input for `text` as given: BOS, then its ids; never truncated.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, PipelineError> {
        Ok(self.tokenizer.encode(text)?)
    }

    /// Whether the weights are in memory.
    pub fn is_loaded(&self) -> bool {
        self.model.is_some()
    }

    /// Reads the weights (if not yet in memory).
    pub fn load(&mut self) -> Result<(), PipelineError> {
        if self.model.is_none() {
            self.model = Some(self.read()?);
        }
        Ok(())
    }

    fn read(&mut self) -> Result<Gemma2<B>, PipelineError> {
        let file = sakiko_gemma::open_weights(&self.path)?.with_value_check(self.check_weights);
        let model =
            Gemma2::from_weights_as(&file, Some(self.config.clone()), self.dtype, &self.device)?;
        Ok(self.merge(model))
    }

    /// Frees the weights.
    pub fn release(&mut self) {
        self.model = None;
        self.backup = None;
    }

    /// The conditioning for `ids`: `hidden_states[-2]`, `[1, ids.len(), hidden]`. Loads the
    /// weights if needed (and keeps them). NaN or infinity in it is a
    /// [`PipelineError::NonFinite`].
    pub fn encode(&mut self, ids: &[u32]) -> Result<Tensor<B, 3>, PipelineError> {
        let model = match self.model.take() {
            Some(m) => m,
            None => self.read()?,
        };
        let hidden = model.forward(&[ids.to_vec()], self.options, &self.device);
        self.model = Some(model);
        let cond = hidden?.conditioning().narrow(1, 0, ids.len());
        crate::error::ensure_finite(&cond, "text encoder", None, self.dtype)?;
        Ok(cond)
    }
}
