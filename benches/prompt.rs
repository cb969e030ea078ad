//! Prompt handling cost: check (parse + validate), render and normalise a long tag prompt.
//!
//! `cargo bench --bench prompt`

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use sakiko_lumina::prompt::{Rating, TagPrompt, check, normalize};
use std::hint::black_box;

fn long_prompt() -> TagPrompt {
    let general: Vec<String> = (0..200).map(|i| format!("general tag {i}")).collect();
    TagPrompt::builder()
        .special("1girl, 1boy")
        .artists("artist one, artist two")
        .characters("togawa sakiko")
        .copyright("bang dream! it's mygo!!!!!")
        .general(&general.join(", "))
        .rating(Rating::Sensitive)
        .meta("masterpiece, newest, highres")
        .build()
        .expect("valid prompt")
}

fn bench(c: &mut Criterion) {
    let prompt = long_prompt();
    let text = prompt.to_string();
    let prompter = text
        .replace(' ', "_")
        .replace("<meta>masterpiece,_newest,_highres</meta>\n", "");
    c.bench_function("check 200-tag prompt", |b| {
        b.iter(|| check(black_box(&text)))
    });
    c.bench_function("render 200-tag prompt", |b| {
        b.iter(|| black_box(&prompt).to_string())
    });
    c.bench_function("normalize 200-tag Prompter output", |b| {
        b.iter(|| normalize(black_box(&prompter)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
