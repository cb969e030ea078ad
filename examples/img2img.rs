//! Image → image: re-draws an image with a prompt, keeping its composition (`denoise` 0.6 runs the
//! last 60 % of the schedule from the encoded image).
//!
//! ```sh
//! cargo run --release --example img2img -- [COMFYUI_MODELS_DIR] [INPUT.png] [OUT.png]
//! ```

mod common;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use sakiko_lumina::backend::Flex;
use sakiko_lumina::pipeline::{GenerationRequest, Pipeline, png_parameters, write_png};
use sakiko_lumina::sampling::Sampler;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let models = args.next();
    let input = args.next().map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/pipeline/tests/fixtures/e2e/init.png")
    });
    let out = PathBuf::from(args.next().unwrap_or_else(|| "img2img.png".into()));
    let image = image::open(&input)?.to_rgb8();
    // Sides rounded down to multiples of 16; the image is resized to them.
    let (width, height) = (
        image.width() as usize / 16 * 16,
        image.height() as usize / 16 * 16,
    );

    let mut pipeline = Pipeline::<Flex>::builder(common::model_files(models)?).build()?;
    let request = GenerationRequest::new("1girl, smile, watercolor")
        .size(width, height)
        .sampler(Sampler::Euler)
        .steps(20)
        .seed(3)
        .init_image(image, 0.6);
    let result = pipeline.generate(&request, |_| ControlFlow::Continue(()))?;
    write_png(
        &out,
        &result.images[0],
        &png_parameters(&request, pipeline.files(), 0),
    )?;
    println!("{} → {}", input.display(), out.display());
    Ok(())
}
