//! Idea → Sakiko-Prompter → validated XML prompt → image, in one process: the prompter is
//! dropped before the image models load, and the expanded prompt goes into the PNG.
//!
//! ```sh
//! cargo run --release --example expand_and_generate -- [PROMPTER_DIR [COMFYUI_MODELS_DIR]] [OUT.png]
//! ```
//!
//! With no folders it runs the tiny models in this repository: a Qwen3 trained by
//! `tools/reference/qwen3.py` to expand one idea, and random image models (the image is noise).

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use sakiko_lumina::backend::Flex;
use sakiko_lumina::burn::tensor::FloatDType;
use sakiko_lumina::pipeline::{GenerationRequest, Pipeline, png_parameters, write_png};
use sakiko_lumina::prompter::Prompter;

const IDEA: &str = "a girl with blue hair under cherry blossoms";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (prompter_dir, models, out) = match args.as_slice() {
        [p, m, o, ..] => (PathBuf::from(p), Some(m.clone()), o.clone()),
        [p, m] if Path::new(m).is_dir() => (PathBuf::from(p), Some(m.clone()), "idea.png".into()),
        [p] if Path::new(p).is_dir() => (PathBuf::from(p), None, "idea.png".into()),
        rest => {
            let tiny = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("crates/prompter/tests/fixtures/prompter");
            eprintln!(
                "no prompter folder given: using the tiny one in {}",
                tiny.display()
            );
            (
                tiny,
                None,
                rest.first().cloned().unwrap_or_else(|| "idea.png".into()),
            )
        }
    };
    let device = Default::default();

    let expansion = {
        let prompter = Prompter::<Flex>::load(&prompter_dir, FloatDType::F32, &device)?;
        let options = prompter.expand_options(42);
        let expansion = prompter.expand(IDEA, &options, |piece| {
            eprint!("{piece}");
            ControlFlow::Continue(())
        })?;
        eprintln!();
        expansion
        // The prompter is dropped here, before the image models load.
    };
    println!("{}", expansion.text);

    let (width, height) = common::size(models.is_some());
    let mut pipeline = Pipeline::<Flex>::builder(common::model_files(models)?).build()?;
    let request = GenerationRequest::new(expansion.text.clone())
        .size(width, height)
        .seed(42);
    let result = pipeline.generate(&request, |_| ControlFlow::Continue(()))?;
    let mut parameters = png_parameters(&request, pipeline.files(), 0);
    parameters.push(("idea".into(), IDEA.into()));
    write_png(Path::new(&out), &result.images[0], &parameters)?;
    println!("{out}");
    Ok(())
}
