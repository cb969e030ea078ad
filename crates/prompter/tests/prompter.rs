//! The whole prompter folder: a tiny Qwen3 trained by tools/reference/qwen3.py to write one XML
//! tag prompt for one idea, with its tokenizer, chat template and generation defaults.

mod common;

use std::ops::ControlFlow;
use std::path::Path;

use burn::tensor::FloatDType;
use common::{B, fixtures, ids, json};
use sakiko_prompter::{Prompter, PrompterError, Qwen3Config, Sampling};

fn prompter() -> Prompter<B> {
    Prompter::load(
        fixtures().join("prompter"),
        FloatDType::F32,
        &Default::default(),
    )
    .unwrap()
}

/// The chat prompt and its ids equal transformers' (system prompt from system_prompt.txt,
/// thinking off), and greedy decoding writes transformers' tokens.
#[test]
fn prompt_and_greedy_generation_match_transformers() {
    let reference = json("prompter.json");
    let p = prompter();
    let idea = reference["idea"].as_str().unwrap();
    let rendered = p.render(idea).unwrap();
    assert_eq!(rendered, reference["prompt"].as_str().unwrap());
    assert_eq!(p.encode(&rendered).unwrap(), ids(&reference["prompt_ids"]));

    let mut streamed = String::new();
    let out = p
        .generate(idea, &Sampling::greedy(), 200, |piece| {
            streamed.push_str(piece);
            ControlFlow::Continue(())
        })
        .unwrap();
    // transformers keeps the stop token; ours ends before it.
    let want = ids(&reference["greedy_ids"]);
    assert_eq!(
        Some(want[want.len() - 1]),
        p.tokenizer().token_to_id("<|im_end|>")
    );
    assert_eq!(out.tokens.ids, want[..want.len() - 1]);
    assert_eq!(out.tokens.finish, sakiko_prompter::Finish::Stop);
    assert_eq!(out.text, reference["greedy_text"].as_str().unwrap());
    assert_eq!(streamed, out.text, "the streamed pieces add up to the text");
}

/// Expansion normalises the raw XML (underscores, `<copyrights>`, default meta) and validates it.
#[test]
fn expand_normalises_and_validates() {
    let reference = json("prompter.json");
    let p = prompter();
    let options = sakiko_prompter::ExpandOptions {
        sampling: Sampling::greedy(),
        ..p.expand_options(0)
    };
    let e = p
        .expand(reference["idea"].as_str().unwrap(), &options, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(e.raw, reference["greedy_text"].as_str().unwrap());
    assert_eq!(e.text, sakiko_prompt::normalize(&e.raw));
    assert!(
        e.text.contains("<copyright>bang dream!</copyright>"),
        "{}",
        e.text
    );
    assert!(
        e.text.contains("blue hair, long hair, cherry blossoms"),
        "{}",
        e.text
    );
    assert!(
        e.text.contains("<meta>masterpiece, newest, highres</meta>"),
        "{}",
        e.text
    );
    assert_eq!(e.attempts, 1);
    assert!(sakiko_prompt::check(&e.text).diagnostics.is_empty());
}

/// Sampling with the folder's defaults is deterministic for a seed.
#[test]
fn a_seed_gives_the_same_text() {
    let p = prompter();
    let options = p.expand_options(11);
    assert!(
        !options.sampling.is_greedy(),
        "generation_config.json samples"
    );
    let run = |seed| {
        let s = Sampling {
            seed,
            temperature: 1.5,
            ..options.sampling.clone()
        };
        p.generate("a cat", &s, 40, |_| ControlFlow::Continue(()))
            .unwrap()
            .tokens
            .ids
    };
    assert_eq!(run(3), run(3));
}

/// The callback can stop generation.
#[test]
fn cancelling_stops_generation() {
    let p = prompter();
    let mut pieces = 0;
    let err = p
        .generate("a cat", &Sampling::greedy(), 100, |_| {
            pieces += 1;
            if pieces == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, PrompterError::Cancelled));
    assert_eq!(pieces, 3);
}

/// Output that never becomes a valid tag prompt is an error carrying the last text and what was
/// wrong, after the given number of attempts.
#[test]
fn invalid_output_is_a_clear_error_after_retries() {
    // Random weights never write <tags>: every attempt fails.
    let dir = fixtures().join("prompter");
    let device = Default::default();
    let p = prompter();
    let model = Qwen3Config::from_file(dir.join("config.json"))
        .unwrap()
        .init::<B>(&device);
    let random = Prompter::from_parts(
        model,
        p.tokenizer().clone(),
        sakiko_prompter::ChatTemplate::from_folder(&dir).unwrap(),
        p.generation_config().clone(),
    );
    let options = sakiko_prompter::ExpandOptions {
        max_new_tokens: 12,
        attempts: 2,
        ..p.expand_options(1)
    };
    let mut runs = 0;
    let err = random
        .expand("a cat", &options, |_| {
            runs += 1;
            ControlFlow::Continue(())
        })
        .unwrap_err();
    let PrompterError::InvalidOutput {
        attempts, problem, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(*attempts, 2);
    assert!(problem.contains("no <tags>"), "{problem}");
    assert!(runs > 0);
    // Malformed XML reports the checker's diagnostics with positions.
    let err = sakiko_prompt::check("<tags>\n<general>cat</general>\n").diagnostics;
    assert!(!err.is_empty());
}

#[test]
fn an_empty_idea_is_refused() {
    let err = prompter().render("   ").unwrap_err();
    assert!(
        matches!(err, PrompterError::Input(ref m) if m.contains("empty")),
        "{err}"
    );
}

fn copy_folder(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn load(dir: &Path) -> Result<Prompter<B>, PrompterError> {
    Prompter::load(dir, FloatDType::F32, &Default::default())
}

#[test]
fn missing_files_are_named() {
    let err = load(Path::new("/nonexistent/prompter"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a folder") && err.contains("Sakiko-Prompt-Gen"),
        "{err}"
    );
    for file in ["tokenizer.json", "config.json", "model.safetensors"] {
        let dir = tempfile::tempdir().unwrap();
        copy_folder(&fixtures().join("prompter"), dir.path());
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(file), "without {file}: {err}");
    }
}

/// Configs of other architectures are refused by name before any weight is read.
#[test]
fn other_architectures_are_refused() {
    let qwen2 = serde_json::json!({ "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
        "vocab_size": 425, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2 });
    let gemma =
        serde_json::json!({ "architectures": ["Gemma2ForCausalLM"], "model_type": "gemma2" });
    let biased = {
        let mut c: serde_json::Value = json("prompter/config.json");
        c["attention_bias"] = true.into();
        c
    };
    for (config, expect) in [
        (qwen2, "qwen2"),
        (gemma, "gemma2"),
        (biased, "attention_bias"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        copy_folder(&fixtures().join("prompter"), dir.path());
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
    }
}

/// A truncated weight file is an error, not a panic.
#[test]
fn a_truncated_weight_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    copy_folder(&fixtures().join("prompter"), dir.path());
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(dir.path()).unwrap_err().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
}
