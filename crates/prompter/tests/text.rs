//! Tokenizer ids, chat templates and sampling against transformers (tools/reference/qwen3.py).

mod common;

use common::{fixtures, ids, json};
use sakiko_prompter::{ChatTemplate, Message, PrompterError, Sampling, load_tokenizer};

/// `tokenizers` in Rust gives the ids the Python tokenizer gave, on text with CJK, emoji,
/// whitespace runs, contractions and special tokens, and decodes them back.
#[test]
fn tokenizer_ids_match_transformers() {
    let tokenizer = load_tokenizer(&fixtures().join("tokenizer/tokenizer.json")).unwrap();
    let cases = json("tokenizer_ids.json");
    let map = cases["ids"].as_object().unwrap();
    assert!(map.len() >= 10);
    for (text, want) in map {
        let got = tokenizer.encode(text.as_str(), false).unwrap();
        assert_eq!(got.get_ids(), ids(want).as_slice(), "{text:?}");
        let decoded = tokenizer.decode(got.get_ids(), false).unwrap();
        assert_eq!(
            decoded,
            cases["decoded"][text].as_str().unwrap(),
            "{text:?}"
        );
    }
}

fn conversation(v: &serde_json::Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Every template × conversation × generation prompt × thinking switch renders byte for byte
/// what `tokenizer.apply_chat_template` rendered.
#[test]
fn templates_render_as_transformers() {
    let fixture = json("templates.json");
    let rendered = fixture["rendered"].as_array().unwrap();
    assert!(rendered.len() >= 60);
    for case in rendered {
        let name = case["template"].as_str().unwrap();
        let template =
            ChatTemplate::new(name, fixture["templates"][name].as_str().unwrap()).unwrap();
        let messages =
            conversation(&fixture["conversations"][case["conversation"].as_str().unwrap()]);
        let got = template
            .render(
                &messages,
                case["add_generation_prompt"].as_bool().unwrap(),
                case["enable_thinking"].as_bool(),
            )
            .unwrap();
        assert_eq!(got, case["text"].as_str().unwrap(), "{case}");
    }
}

/// A folder whose template sits in tokenizer_config.json (as Qwen/Qwen3-0.6B ships it) renders
/// like one with chat_template.jinja (as transformers 5 saves it).
#[test]
fn template_from_tokenizer_config_or_jinja_file() {
    let fixture = json("templates.json");
    let source = fixture["templates"]["qwen3"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({ "chat_template": source, "eos_token": "<|im_end|>" });
    std::fs::write(dir.path().join("tokenizer_config.json"), config.to_string()).unwrap();
    let from_config = ChatTemplate::from_folder(dir.path()).unwrap();
    let from_file = ChatTemplate::from_folder(fixtures().join("prompter")).unwrap();
    let messages = conversation(&fixture["conversations"]["multi_turn"]);
    assert_eq!(
        from_config.render(&messages, true, Some(false)).unwrap(),
        from_file.render(&messages, true, Some(false)).unwrap()
    );
    // Named templates: the "default" one.
    let named = serde_json::json!({ "chat_template": [
        { "name": "tool_use", "template": "x" }, { "name": "default", "template": source }
    ]});
    std::fs::write(dir.path().join("tokenizer_config.json"), named.to_string()).unwrap();
    let from_list = ChatTemplate::from_folder(dir.path()).unwrap();
    assert_eq!(
        from_list.render(&messages, true, Some(false)).unwrap(),
        from_config.render(&messages, true, Some(false)).unwrap()
    );
}

/// Template failures name the template and say what went wrong.
#[test]
fn template_errors_name_the_template() {
    let err = ChatTemplate::new("broken.jinja", "{% for m in messages %}{{ m.role }")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.jinja") && err.contains("line 1"),
        "{err}"
    );

    let fixture = json("templates.json");
    let t = ChatTemplate::new(
        "prompter",
        fixture["templates"]["prompter"].as_str().unwrap(),
    )
    .unwrap();
    let err = t
        .render(&[Message::new("narrator", "x")], true, None)
        .unwrap_err();
    assert!(matches!(&err, PrompterError::Template { name, .. } if name == "prompter"));
    assert!(err.to_string().contains("unknown role narrator"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), "{}").unwrap();
    let err = ChatTemplate::from_folder(dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no chat template"), "{err}");
}

/// Each processor and their combinations leave the distribution transformers' processors leave
/// (repetition penalty → temperature → top-k → top-p → min-p) on fixed logits.
#[test]
fn sampling_matches_transformers_processors() {
    let fixture = json("sampling.json");
    let logits: Vec<f32> = serde_json::from_value(fixture["logits"].clone()).unwrap();
    let context = ids(&fixture["context"]);
    let cases = fixture["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let s = &case["settings"];
        let f = |k: &str| s.get(k).and_then(|v| v.as_f64()).map(|v| v as f32);
        let sampling = Sampling {
            temperature: f("temperature").unwrap_or(1.0),
            top_k: s.get("top_k").and_then(|v| v.as_u64()).map(|k| k as usize),
            top_p: f("top_p"),
            min_p: f("min_p"),
            repetition_penalty: f("repetition_penalty").unwrap_or(1.0),
            seed: 0,
        };
        let got = sampling.probabilities(&logits, &context);
        let want: Vec<f64> = serde_json::from_value(case["probs"].clone()).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-6, "{s}: token {i}: {g} vs {w}");
            assert_eq!(*g == 0.0, *w == 0.0, "{s}: token {i} kept differently");
        }
    }
}
