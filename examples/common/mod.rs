//! Shared by the examples: which model files to use.
// Each example uses part of this module.
#![allow(dead_code)]

use std::path::Path;

use sakiko_lumina::pipeline::{ModelFiles, PipelineError};

/// The models from the first argument (a ComfyUI `models/` folder), or else the tiny random
/// test models in this repository (their images are noise, but every stage runs).
pub fn model_files(arg: Option<String>) -> Result<ModelFiles, PipelineError> {
    match arg {
        Some(dir) => ModelFiles::models_dir(dir),
        None => {
            let e2e =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/pipeline/tests/fixtures/e2e");
            eprintln!(
                "no models folder given: using the tiny test models in {}",
                e2e.display()
            );
            Ok(ModelFiles::models_dir(e2e.join("models"))?
                .with_text_encoder_config(e2e.join("text_encoder_config.json"))
                .with_vae_config(e2e.join("vae_config.json")))
        }
    }
}

/// A small size for the tiny models, the model card's 1024² for real ones.
pub fn size(real: bool) -> (usize, usize) {
    if real { (1024, 1024) } else { (64, 48) }
}
