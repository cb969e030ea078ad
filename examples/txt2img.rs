//! Text → image with the model card's settings, a progress line per step, and a PNG that carries
//! its parameters.
//!
//! ```sh
//! cargo run --release --example txt2img -- [COMFYUI_MODELS_DIR] [OUT.png]
//! ```

mod common;

use std::ops::ControlFlow;
use std::path::PathBuf;

use sakiko_lumina::backend::Flex;
use sakiko_lumina::pipeline::{Event, GenerationRequest, Pipeline, png_parameters, write_png};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let models = args.next();
    let out = PathBuf::from(args.next().unwrap_or_else(|| "txt2img.png".into()));
    let (width, height) = common::size(models.is_some());
    let mut pipeline = Pipeline::<Flex>::builder(common::model_files(models)?).build()?;

    let request = GenerationRequest::new(
        "A girl with long blue hair in a formal black suit stands under cherry blossoms at dusk.",
    )
    .negative("lowres, bad anatomy, blurry")
    .size(width, height)
    .seed(42);
    let result = pipeline.generate(&request, |event| {
        match event {
            Event::Step { step, steps, sigma } => {
                eprintln!("step {}/{steps} (σ {sigma:.3})", step + 1)
            }
            Event::Warning(w) => eprintln!("warning: {w}"),
            other => eprintln!("{other:?}"),
        }
        ControlFlow::Continue(())
    })?;
    write_png(
        &out,
        &result.images[0],
        &png_parameters(&request, pipeline.files(), 0),
    )?;
    println!(
        "{} ({} prompt tokens)",
        out.display(),
        result.positive_tokens
    );
    Ok(())
}
