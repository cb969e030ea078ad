//! The Qwen3 decoder against transformers' `Qwen3ForCausalLM` (tools/reference/qwen3.py): tiny
//! random models with tied (f32, one file, no `lm_head.weight`) and untied (bf16, two shards)
//! embeddings, GQA and a head width unlike hidden/heads.

mod common;

use std::ops::ControlFlow;

use burn::tensor::FloatDType;
use common::{B, fixtures, ids, json, max_abs_diff, tensor};
use sakiko_prompter::{GenerateOptions, Qwen3, Sampling, generate};

/// transformers' logits (f32 eager attention) against ours in f32.
const TOLERANCE: f32 = 5e-5;

fn check(name: &str) {
    let device = Default::default();
    let model = Qwen3::<B>::load(fixtures().join(name), FloatDType::F32, &device).unwrap();
    let case = &json("models.json")[name];
    let (prompt, steps) = (ids(&case["ids"]), ids(&case["steps"]));
    let file = format!("{name}/logits.safetensors");
    let (want_prefill, shape) = tensor(&file, "prefill");
    let (want_steps, _) = tensor(&file, "steps");
    let vocab = shape[1];

    let mut cache = model.new_cache();
    let prefill = model.forward(&prompt, &mut cache).unwrap();
    assert_eq!(prefill.dims(), [prompt.len(), vocab]);
    let got = prefill.into_data().into_vec::<f32>().unwrap();
    let d = max_abs_diff(&got, &want_prefill);
    assert!(d < TOLERANCE, "{name} prefill: max |Δ| {d}");
    eprintln!("{name}: prefill max |Δ| {d}");

    for (t, &id) in steps.iter().enumerate() {
        let got = model.next_logits(&[id], &mut cache).unwrap();
        let want = &want_steps[t * vocab..(t + 1) * vocab];
        let d = max_abs_diff(&got, want);
        assert!(d < TOLERANCE, "{name} cached step {t}: max |Δ| {d}");
    }
    assert_eq!(cache.len(), prompt.len() + steps.len());

    let options = GenerateOptions {
        sampling: Sampling::greedy(),
        max_new_tokens: 20,
        stop: vec![],
    };
    let out = generate(&model, &prompt, &options, |_| ControlFlow::Continue(())).unwrap();
    assert_eq!(out.ids, ids(&case["greedy"]), "{name}: greedy ids");
}

#[test]
fn tied_embeddings_single_file_f32() {
    check("tied");
}

#[test]
fn untied_embeddings_sharded_bf16() {
    check("untied");
}

/// Running the prompt in pieces through the cache equals running it at once (the causal mask
/// offset by the cached length).
#[test]
fn chunked_prefill_matches_one_prefill() {
    let device = Default::default();
    let model = Qwen3::<B>::load(fixtures().join("tied"), FloatDType::F32, &device).unwrap();
    let prompt = ids(&json("models.json")["tied"]["ids"]);
    let mut whole = model.new_cache();
    let want = model.next_logits(&prompt, &mut whole).unwrap();
    let mut parts = model.new_cache();
    model.next_logits(&prompt[..5], &mut parts).unwrap();
    let got = model.next_logits(&prompt[5..], &mut parts).unwrap();
    let d = max_abs_diff(&got, &want);
    assert!(d < TOLERANCE, "max |Δ| {d}");
}

/// Half-precision compute stays close to the f32 reference (the weights are bf16-exact): bf16,
/// or f16 on devices without bf16 (lavapipe).
#[test]
fn half_precision_compute_is_close() {
    use burn::tensor::backend::Backend;
    let device = Default::default();
    let dtype = if B::supports_dtype(&device, FloatDType::BF16.into()) {
        FloatDType::BF16
    } else {
        FloatDType::F16
    };
    let model = Qwen3::<B>::load(fixtures().join("untied"), dtype, &device).unwrap();
    let case = &json("models.json")["untied"];
    let (want, _) = tensor("untied/logits.safetensors", "prefill");
    let mut cache = model.new_cache();
    let got = model.forward(&ids(&case["ids"]), &mut cache).unwrap();
    let got = got.into_data().into_vec::<f32>().unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = max_abs_diff(&got, &want);
    assert!(d < 3e-2 * scale, "max |Δ| {d} (largest logit {scale})");
}

/// The context ends at `max_position_embeddings` (128 here): filling it exactly works, one token
/// more is an error (not a sliding window that would shift RoPE positions), and the cache is
/// left as it was.
#[test]
fn the_context_limit_is_an_error() {
    let device = Default::default();
    let model = Qwen3::<B>::load(fixtures().join("tied"), FloatDType::F32, &device).unwrap();
    let max = model.config().max_position_embeddings;
    let ids: Vec<u32> = (0..max as u32).map(|i| i % 50).collect();
    let mut cache = model.new_cache();
    model.next_logits(&ids[..max - 1], &mut cache).unwrap();
    model.next_logits(&ids[max - 1..], &mut cache).unwrap();
    assert_eq!(cache.len(), max);
    let err = model.next_logits(&[1], &mut cache).unwrap_err();
    assert!(
        matches!(err, sakiko_prompter::PrompterError::ContextFull { needed, max: m } if needed == max + 1 && m == max),
        "{err}"
    );
    assert_eq!(cache.len(), max);
    let err = model
        .next_logits(&[10_000], &mut model.new_cache())
        .unwrap_err();
    assert!(err.to_string().contains("outside the vocabulary"), "{err}");
}

/// RoPE θ is read from both config layouts: `rope_parameters.rope_theta` (transformers 5; the
/// tied fixture, θ 1e4) and a top-level `rope_theta` (published Qwen3 folders; the untied one).
#[test]
fn rope_theta_from_both_config_layouts() {
    let read = |name: &str| {
        sakiko_prompter::Qwen3Config::from_file(fixtures().join(name).join("config.json"))
            .unwrap()
            .rope_theta
    };
    assert_eq!(read("tied"), 1e4);
    assert_eq!(read("untied"), 1e6);
}
