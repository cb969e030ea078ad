//! Build a Sakiko-Lumina tag prompt from data a user has, check it, and print the model text.
//!
//! `cargo run --example prompt_builder`

use sakiko_lumina::prompt::{
    Form, Meta, Period, Prompt, PromptError, Quality, Rating, Resolution, TagPrompt, check,
    normalize,
};

fn main() -> Result<(), PromptError> {
    // An image's metadata: Danbooru-style tags, its popularity percentile, year and size.
    let (percentile, year, width, height) = (96.4, 2024, 832, 1216);
    let meta = Meta::new()
        .quality(Quality::from_percentile(percentile)?)
        .period(Period::from_year(year))
        .resolution(Resolution::from_size(width, height)?);

    let full = TagPrompt::builder()
        .special("1girl")
        .characters("togawa_sakiko")
        .copyright("bang_dream!_it's_mygo!!!!!")
        .general("blue hair, two side up, black ribbon, formal, suit, white gloves, ^_^")
        .rating(Rating::General)
        .derived_meta(meta.clone())
        .build()?;
    println!("full form:\n{full}\n");

    let simple = TagPrompt::builder()
        .form(Form::Simple)
        .artists("some_artist")
        .general("solo, 1girl, smile, cherry blossoms")
        .derived_meta(meta)
        .build()?;
    println!("simple form:\n{simple}\n");

    // What the text encoder receives.
    println!("model text:\n{}\n", Prompt::from(full).model_text());

    // Sakiko-Prompter output needs normalising before use.
    let prompter = "<tags>\n<special>1girl</special>\n<copyrights>bang_dream!</copyrights>\n\
                    <general>long_hair, school_uniform</general>\n</tags>";
    let fixed = normalize(prompter);
    println!("normalised Prompter output:\n{fixed}\n");
    for diagnostic in check(&fixed).diagnostics {
        println!("{diagnostic}");
    }
    Ok(())
}
