//! A tag prompt built with `sakiko-prompt` (validated XML, derived meta tags), generated in a
//! batch of two, with the embedding cache making the second request skip the text encoder.
//!
//! ```sh
//! cargo run --release --example xml_prompt -- [COMFYUI_MODELS_DIR]
//! ```

mod common;

use std::ops::ControlFlow;

use sakiko_lumina::backend::Flex;
use sakiko_lumina::pipeline::{Event, GenerationRequest, Pipeline, png_parameters, write_png};
use sakiko_lumina::prompt::{Meta, Period, Quality, Rating, Resolution, TagPrompt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let models = std::env::args().nth(1);
    let (width, height) = common::size(models.is_some());
    let prompt = TagPrompt::builder()
        .special("1girl")
        .characters("togawa sakiko")
        .copyright("bang dream! it's mygo!!!!!")
        .general("blue hair, two side up, formal, black suit, cherry blossoms")
        .rating(Rating::General)
        .derived_meta(
            Meta::new()
                .quality(Quality::from_percentile(97.0)?)
                .period(Period::from_year(2024))
                .resolution(Resolution::from_size(width as u32, height as u32)?),
        )
        .build()?;
    println!("{prompt}");

    let mut pipeline = Pipeline::<Flex>::builder(common::model_files(models)?).build()?;
    for seed in [1, 2] {
        let request = GenerationRequest::new(&prompt)
            .size(width, height)
            .batch(2)
            .seed(seed);
        let mut loaded = Vec::new();
        let result = pipeline.generate(&request, |event| {
            if let Event::Load { component, .. } = event {
                loaded.push(*component);
            }
            ControlFlow::Continue(())
        })?;
        println!("seed {seed}: loaded {loaded:?}");
        for (i, image) in result.images.iter().enumerate() {
            let path = format!("xml_prompt_{seed}_{i}.png");
            write_png(
                path.as_ref(),
                image,
                &png_parameters(&request, pipeline.files(), i),
            )?;
            println!("  {path}");
        }
    }
    Ok(())
}
