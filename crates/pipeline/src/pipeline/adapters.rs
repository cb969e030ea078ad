//! The adapters in effect: opened and matched against the models' layers once per set (before any
//! model loads), merged into each model as it loads, and switched on resident models by
//! restoring their base weights from memory.

use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use sakiko_adapters::{Adapter, AdapterError, AdapterReport, Backup, Patches, Plan, Strength};
use sakiko_nextdit::{NextDit, NextDitConfig};
use sakiko_weights::LinearKeys;

use super::Pipeline;
use crate::PipelineError;

/// An adapter file and how strongly it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// Its strengths on the denoiser and the text encoder.
    pub strength: Strength,
}

impl AdapterSpec {
    /// The file's stem, as prompts and A1111's metadata name adapters.
    pub fn name(&self) -> String {
        self.path.file_stem().map_or_else(
            || self.path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        )
    }
}

/// The adapter set a pipeline has merged (or will merge as models load).
#[derive(Debug)]
pub(crate) struct Active<B: Backend> {
    pub specs: Vec<AdapterSpec>,
    pub plan: Option<Plan>,
    /// The resident denoiser's base weights (kept only with `keep_in_memory`).
    pub dit_backup: Option<Backup<B>>,
}

impl<B: Backend> Default for Active<B> {
    fn default() -> Self {
        Self {
            specs: Vec::new(),
            plan: None,
            dit_backup: None,
        }
    }
}

impl<B: Backend> Active<B> {
    /// The denoiser's patches.
    pub fn dit(&self) -> Patches {
        self.plan
            .as_ref()
            .map(|p| p.dit().clone())
            .unwrap_or_default()
    }

    /// The text encoder's patches.
    pub fn text_encoder(&self) -> Patches {
        self.plan
            .as_ref()
            .map(|p| p.text_encoder().clone())
            .unwrap_or_default()
    }

    /// What the text encoder's weights depend on: each adapter that patches it, with its
    /// strength there (empty without such adapters).
    pub fn text_encoder_key(&self) -> String {
        self.reports()
            .iter()
            .filter(|r| r.text_encoder_layers > 0 && r.strength.text_encoder != 0.0)
            .map(|r| format!("{}:{};", r.path.display(), r.strength.text_encoder))
            .collect()
    }

    /// The reports of the adapters in effect.
    pub fn reports(&self) -> &[AdapterReport] {
        self.plan.as_ref().map_or(&[], |p| p.reports())
    }
}

/// Opens `specs` and matches them against a denoiser of `dit` and a text encoder with `te_keys`.
pub(crate) fn plan<B: Backend>(
    specs: &[AdapterSpec],
    dit: &NextDitConfig,
    te_keys: &[LinearKeys],
    device: &B::Device,
) -> Result<Option<Plan>, AdapterError> {
    if specs.is_empty() {
        return Ok(None);
    }
    let adapters = specs
        .iter()
        .map(|s| Ok((Arc::new(Adapter::open(&s.path)?), s.strength)))
        .collect::<Result<Vec<_>, AdapterError>>()?;
    // A model fresh from `init` is lazy: listing its layers allocates nothing.
    let dit_keys = dit.init::<B>(device).linear_keys();
    Plan::new(adapters, &dit_keys, te_keys).map(Some)
}

impl<B: Backend> Pipeline<B> {
    /// Uses `specs` from now on (as [`Pipeline::generate`] does with a request's adapters): opens
    /// them and matches them to the models' layers (errors come before any model loads);
    /// resident models get their base weights back from memory and the new updates (cached
    /// conditionings are keyed by the text encoder's adapters, so switching back reuses them).
    /// Returns whether the set changed. [`Pipeline::generate`] calls this with each request's
    /// adapters, so the set in effect is always the last request's.
    pub fn set_adapters(&mut self, specs: &[crate::AdapterSpec]) -> Result<bool, PipelineError> {
        if specs == self.adapters.specs {
            return Ok(false);
        }
        let plan = plan::<B>(
            specs,
            &self.dit_config,
            &self.text.linear_keys(),
            &self.device,
        )?;
        let merged = !self.adapters.dit().is_empty();
        let dit = self
            .dit
            .take()
            .and_then(|dit| match self.adapters.dit_backup.take() {
                Some(backup) => Some(backup.restore(dit)),
                None if !merged => Some(dit),
                // Merged without a backup: read again when needed.
                None => None,
            });
        self.adapters = Active {
            specs: specs.to_vec(),
            plan,
            dit_backup: None,
        };
        self.dit = dit.map(|dit| self.merge_dit(dit));
        self.text.set_adapters(self.adapters.text_encoder());
        Ok(true)
    }

    /// The reports of the adapters in effect.
    pub fn adapter_reports(&self) -> &[sakiko_adapters::AdapterReport] {
        self.adapters.reports()
    }

    /// Merges the adapters' updates into a freshly loaded (or restored) denoiser, keeping its base
    /// weights only when it stays resident (to switch adapters without reading the file).
    pub(super) fn merge_dit(&mut self, dit: NextDit<B>) -> NextDit<B> {
        let patches = self.adapters.dit();
        if patches.is_empty() {
            return dit;
        }
        if !self.options.keep_in_memory {
            return patches.apply(dit);
        }
        let merged = patches.merge(dit);
        self.adapters.dit_backup = Some(merged.backup);
        merged.model
    }
}
