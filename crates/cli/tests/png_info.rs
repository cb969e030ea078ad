//! The generation parameters in `sakiko generate`'s PNGs: plain text chunks, and an
//! AUTOMATIC1111 `parameters` chunk read back by a port of A1111's own parser.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::fixture;

use assert_cmd::Command;

/// Runs a one-step generation on the tiny models with `extra` arguments; returns the PNG's text
/// chunks and its colour type.
fn generate(extra: &[&str]) -> (Vec<(String, String)>, image::ColorType) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.png");
    Command::cargo_bin("sakiko")
        .expect("the sakiko binary is built")
        .arg("generate")
        .arg("--models-dir")
        .arg(fixture("models"))
        .arg("--text-encoder-config")
        .arg(fixture("text_encoder_config.json"))
        .arg("--vae-config")
        .arg(fixture("vae_config.json"))
        .args([
            "--quiet", "--width", "64", "--height", "48", "--steps", "1", "--seed", "42",
        ])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let color = image::open(&out).expect("png").color();
    (
        sakiko_pipeline::read_png_text(&out).expect("text chunks"),
        color,
    )
}

fn get<'a>(text: &'a [(String, String)], key: &str) -> Option<&'a str> {
    text.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// AUTOMATIC1111's `parse_generation_parameters` (modules/infotext_utils.py), without the
/// defaults it fills in for its own settings: the last line holds the parameters if A1111's
/// `re_param` finds at least 3 `key: value` pairs in it; earlier lines are the prompt until one
/// starts with `Negative prompt:`; every line is stripped; quoted values are JSON-decoded;
/// `WxH` values are split into `-1` / `-2`.
fn parse_a1111(text: &str) -> BTreeMap<String, String> {
    let re_param =
        regex::Regex::new(r#"\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)"#).unwrap();
    let re_imagesize = regex::Regex::new(r"^(\d+)x(\d+)$").unwrap();
    let mut lines: Vec<&str> = text.trim().split('\n').collect();
    let mut last = lines.pop().unwrap_or_default();
    if re_param.captures_iter(last).count() < 3 {
        lines.push(last);
        last = "";
    }
    let (mut prompt, mut negative, mut done_with_prompt) = (String::new(), String::new(), false);
    for line in lines {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix("Negative prompt:") {
            done_with_prompt = true;
            line = rest.trim();
        }
        let target = if done_with_prompt {
            &mut negative
        } else {
            &mut prompt
        };
        if !target.is_empty() {
            target.push('\n');
        }
        target.push_str(line);
    }
    let mut res = BTreeMap::new();
    res.insert("Prompt".to_owned(), prompt);
    res.insert("Negative prompt".to_owned(), negative);
    for c in re_param.captures_iter(last) {
        let (k, mut v) = (c[1].to_owned(), c[2].to_owned());
        if v.is_empty() {
            continue; // A1111's `v[0]` raises and the key is dropped.
        }
        if v.len() >= 2 && v.starts_with('"') && v.ends_with('"') {
            v = serde_json::from_str(&v).unwrap_or(v);
        }
        if let Some(m) = re_imagesize.captures(&v) {
            res.insert(format!("{k}-1"), m[1].to_owned());
            res.insert(format!("{k}-2"), m[2].to_owned());
        } else {
            res.insert(k, v);
        }
    }
    res
}

const XML_PROMPT: &str =
    "<tags>\n<special>1girl</special>\n<general>blue hair, smile</general>\n</tags>";

#[test]
fn the_png_carries_plain_parameters_and_a1111_reads_them() {
    let (text, color) = generate(&[
        "--prompt",
        XML_PROMPT,
        "--negative",
        "lowres, 悪い: x",
        "--depth",
        "16",
    ]);
    assert_eq!(color, image::ColorType::Rgb16);
    let chunk = |k| get(&text, k);
    assert_eq!(chunk("prompt"), Some(XML_PROMPT));
    assert_eq!(chunk("negative_prompt"), Some("lowres, 悪い: x"));
    assert_eq!(chunk("seed"), Some("42"));
    assert_eq!(chunk("steps"), Some("1"));
    assert_eq!(chunk("cfg"), Some("4.5"));
    assert_eq!(chunk("guidance"), Some("cfg"));
    assert_eq!(chunk("sampler"), Some("euler_ancestral"));
    assert_eq!(chunk("scheduler"), Some("linear_quadratic"));
    assert_eq!(chunk("shift"), Some("6"));
    assert_eq!((chunk("width"), chunk("height")), (Some("64"), Some("48")));
    assert_eq!(chunk("dit"), Some("tiny_lumina_bf16.safetensors"));
    assert_eq!(chunk("text_encoder"), Some("tiny_gemma2_fp16.safetensors"));
    assert_eq!(chunk("vae"), Some("tiny_ae.safetensors"));
    // Every value is plain: no Rust debug syntax anywhere.
    for (k, v) in &text {
        assert!(!v.contains(" { "), "{k} = {v}");
    }

    let a1111 = parse_a1111(chunk("parameters").expect("parameters"));
    let field = |k: &str| a1111.get(k).map(String::as_str);
    // The user's prompt, multi-line as given; the fixed prefix is its own field.
    assert_eq!(field("Prompt"), Some(XML_PROMPT));
    assert_eq!(field("Negative prompt"), Some("lowres, 悪い: x"));
    assert_eq!(field("System prompt"), Some(sakiko_prompt::PREFIX));
    assert_eq!(field("Steps"), Some("1"));
    assert_eq!(field("Sampler"), Some("euler_ancestral"));
    assert_eq!(field("Schedule type"), Some("linear_quadratic"));
    assert_eq!(field("CFG scale"), Some("4.5"));
    assert_eq!(field("Seed"), Some("42"));
    assert_eq!((field("Size-1"), field("Size-2")), (Some("64"), Some("48")));
    assert_eq!(field("Model"), Some("tiny_lumina_bf16.safetensors"));
    assert_eq!(field("VAE"), Some("tiny_ae.safetensors"));
    assert_eq!(field("Shift"), Some("6"));
    assert_eq!(field("Guidance"), Some("cfg"));
    assert_eq!(field("Text encoder"), Some("tiny_gemma2_fp16.safetensors"));
    assert!(field("Version").is_some_and(|v| v.starts_with("sakiko-lumina ")));
}

#[test]
fn guidance_settings_and_img2img_are_plain_fields() {
    let init = fixture("init.png").display().to_string();
    let (text, _) = generate(&[
        "--prompt",
        "a girl, under cherry blossoms: spring",
        "--guidance",
        "renorm-cfg",
        "--cfg-trunc",
        "0.5",
        "--renorm",
        "2",
        "--init-image",
        &init,
        "--denoise",
        "0.6",
    ]);
    assert_eq!(get(&text, "guidance"), Some("renorm-cfg"));
    assert_eq!(get(&text, "cfg_trunc"), Some("0.5"));
    assert_eq!(get(&text, "renorm"), Some("2"));
    assert_eq!(get(&text, "denoise"), Some("0.6"));
    let a1111 = parse_a1111(get(&text, "parameters").expect("parameters"));
    let field = |k: &str| a1111.get(k).map(String::as_str);
    assert_eq!(
        field("Prompt"),
        Some("a girl, under cherry blossoms: spring")
    );
    // No negative prompt: no `Negative prompt:` line, and A1111 reads an empty one.
    assert_eq!(field("Negative prompt"), Some(""));
    assert_eq!(field("Denoising strength"), Some("0.6"));
    assert_eq!(field("Guidance"), Some("renorm-cfg"));
}

/// `--idea` expands the idea with the prompter before generating: the expanded, normalised
/// prompt is the PNG's prompt, and the idea, prompter and its seed are stored with it.
#[test]
fn an_expanded_idea_is_the_prompt_and_is_recorded() {
    let prompter =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../prompter/tests/fixtures/prompter");
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(prompter.with_file_name("prompter.json")).expect("json"),
    )
    .expect("json");
    let idea = reference["idea"].as_str().expect("idea");
    let dir = prompter.display().to_string();
    let (text, _) = generate(&["--idea", idea, "--prompter", &dir, "--temperature", "0"]);
    let expanded = sakiko_prompt::normalize(reference["greedy_text"].as_str().expect("text"));
    assert_eq!(get(&text, "prompt"), Some(expanded.as_str()));
    assert_eq!(get(&text, "idea"), Some(idea));
    assert_eq!(get(&text, "prompter"), Some(dir.as_str()));
    assert_eq!(get(&text, "prompter_seed"), Some("42"));
    assert!(parse_a1111(get(&text, "parameters").expect("parameters")).contains_key("Seed"));
}
