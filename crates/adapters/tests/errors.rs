//! Bad adapters: clear, typed errors naming the file, the module and both shapes; never a panic,
//! never a model half-patched.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::Flex;
use safetensors::{Dtype, tensor::TensorView};
use sakiko_adapters::{Adapter, AdapterError, Plan, Strength};
use sakiko_nextdit::NextDitConfig;
use sakiko_weights::LinearKeys;

fn tiny_dit_keys() -> Vec<LinearKeys> {
    let config = NextDitConfig::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../nextdit/tests/fixtures/gqa16_diffusers/config.json"
    ))
    .unwrap();
    config.init::<Flex>(&Default::default()).linear_keys()
}

/// Writes an f32 safetensors file of `(key, shape)` tensors filled with 0.1.
fn write(dir: &Path, name: &str, tensors: &[(&str, &[usize])]) -> PathBuf {
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| {
            let n: usize = shape.iter().product();
            (0..n).flat_map(|_| 0.1f32.to_le_bytes()).collect()
        })
        .collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&data)
        .map(|((k, shape), d)| (*k, TensorView::new(Dtype::F32, shape.to_vec(), d).unwrap()))
        .collect();
    let path = dir.join(name);
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

fn plan(path: &Path) -> Result<Plan, AdapterError> {
    let adapter = Arc::new(Adapter::open(path)?);
    Plan::new(vec![(adapter, Strength::both(1.0))], &tiny_dit_keys(), &[])
}

const QKV: &str = "lora_unet_layers_0_attention_qkv";

/// A key and its shape.
type Tensor = (String, Vec<usize>);

#[test]
fn a_model_file_is_not_an_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "model.safetensors",
        &[("layers.0.attention.qkv.weight", &[64, 32])],
    );
    let e = Adapter::open(&path).unwrap_err();
    assert!(matches!(e, AdapterError::NotAnAdapter { .. }), "{e}");
    assert!(
        e.to_string().contains("layers.0.attention.qkv.weight"),
        "{e}"
    );
}

#[test]
fn an_adapter_for_another_model_is_an_error_with_the_closest_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "other.safetensors",
        &[
            ("lora_unet_layers_0_attention_qvk.lora_up.weight", &[64, 4]),
            (
                "lora_unet_layers_0_attention_qvk.lora_down.weight",
                &[4, 32],
            ),
        ],
    );
    let e = plan(&path).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, AdapterError::NoMatch { count: 1, .. }),
        "{text}"
    );
    assert!(
        text.contains("closest layer name: `lora_unet_layers_0_attention_qkv`"),
        "{text}"
    );
}

#[test]
fn an_update_of_another_shape_names_both_shapes() {
    let dir = tempfile::tempdir().unwrap();
    // The 2B model's equal-thirds mistake at this size: 48 rows where the GQA qkv has 64.
    let path = write(
        dir.path(),
        "shape.safetensors",
        &[
            (&format!("{QKV}.lora_up.weight"), &[48, 4]),
            (&format!("{QKV}.lora_down.weight"), &[4, 32]),
        ],
    );
    let e = plan(&path).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(&e, AdapterError::Shape { expected, found, .. } if *expected == [64, 32] && *found == [48, 32]),
        "{text}"
    );
    assert!(
        text.contains(QKV) && text.contains("layers.0.attention.qkv"),
        "{text}"
    );
}

#[test]
fn incomplete_or_inconsistent_modules_are_malformed() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<Tensor>, &str); 6] = [
        (
            "up only",
            vec![(format!("{QKV}.lora_up.weight"), vec![64, 4])],
            "needs both up and down; its tensors are lora_unet_layers_0_attention_qkv.lora_up.weight",
        ),
        (
            "half a LoRA next to a diff",
            vec![
                (format!("{QKV}.lora_up.weight"), vec![64, 4]),
                (format!("{QKV}.diff"), vec![64, 32]),
            ],
            "needs both up and down",
        ),
        (
            "ranks differ",
            vec![
                (format!("{QKV}.lora_up.weight"), vec![64, 4]),
                (format!("{QKV}.lora_down.weight"), vec![3, 32]),
            ],
            "do not multiply",
        ),
        (
            "alpha of two values",
            vec![
                (format!("{QKV}.lora_up.weight"), vec![64, 4]),
                (format!("{QKV}.lora_down.weight"), vec![4, 32]),
                (format!("{QKV}.alpha"), vec![2]),
            ],
            "alpha has 2 values",
        ),
        (
            "a Tucker factor",
            vec![
                (format!("{QKV}.lora_up.weight"), vec![64, 4]),
                (format!("{QKV}.lora_down.weight"), vec![4, 32]),
                (format!("{QKV}.lora_mid.weight"), vec![4, 4, 3, 3]),
            ],
            "Tucker",
        ),
        (
            "a LoKr with one factor",
            vec![(format!("{QKV}.lokr_w1"), vec![2, 2])],
            "LoKr needs lokr_w1 (or lokr_w1_a and _b) and lokr_w2",
        ),
    ];
    for (what, tensors, needle) in cases {
        let tensors: Vec<(&str, &[usize])> = tensors
            .iter()
            .map(|(k, s)| (k.as_str(), s.as_slice()))
            .collect();
        let path = write(dir.path(), "bad.safetensors", &tensors);
        let e = Adapter::open(&path).unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, AdapterError::Malformed { .. }),
            "{what}: {text}"
        );
        assert!(
            text.contains(needle) && text.contains(QKV),
            "{what}: {text}"
        );
    }
}

#[test]
fn mixed_formats_in_one_module_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "mixed.safetensors",
        &[
            (&format!("{QKV}.lora_up.weight"), &[64, 4]),
            (&format!("{QKV}.lora_down.weight"), &[4, 32]),
            (&format!("{QKV}.lokr_w1"), &[2, 2]),
        ],
    );
    let e = Adapter::open(&path).unwrap_err().to_string();
    assert!(
        e.contains("lokr_w1 does not belong with a LoRA update"),
        "{e}"
    );
}

#[test]
fn non_finite_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "nan.safetensors",
        &[
            (&format!("{QKV}.lora_up.weight"), &[64, 4]),
            (&format!("{QKV}.lora_down.weight"), &[4, 32]),
        ],
    );
    let poisoned = dir.path().join("poisoned.safetensors");
    sakiko_weights::write_edited(&path, &poisoned, &format!("{QKV}.lora_down.weight"), |v| {
        v[5] = f32::NAN;
        v[7] = f32::INFINITY;
    })
    .unwrap();
    let e = Adapter::open(&poisoned).unwrap_err().to_string();
    assert!(
        e.contains("2 non-finite values") && e.contains("index 5"),
        "{e}"
    );
    // Negative control: the same file without the edit opens.
    Adapter::open(&path).unwrap();
}

#[test]
fn an_sdxl_lora_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "sdxl.safetensors",
        &[
            (
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight",
                &[640, 4],
            ),
            (
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight",
                &[4, 640],
            ),
            (
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight",
                &[3072, 4],
            ),
            (
                "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
                &[4, 768],
            ),
        ],
    );
    let e = plan(&path).unwrap_err();
    assert!(matches!(e, AdapterError::NoMatch { count: 2, .. }), "{e}");
}

#[test]
fn a_bias_update_for_a_layer_without_bias_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bias.safetensors",
        &[("lora_unet_layers_0_attention_out.diff_b", &[32])],
    );
    let e = plan(&path).unwrap_err();
    assert!(matches!(e, AdapterError::Shape { .. }), "{e}");
}

#[test]
fn truncated_files_are_reported_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cut.safetensors",
        &[
            (&format!("{QKV}.lora_up.weight"), &[64, 4]),
            (&format!("{QKV}.lora_down.weight"), &[4, 32]),
        ],
    );
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = Adapter::open(&path).unwrap_err();
    assert!(matches!(e, AdapterError::Weights(_)), "{e}");
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn modules_and_keys_that_match_nothing_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "partial.safetensors",
        &[
            (&format!("{QKV}.lora_up.weight"), &[64, 4]),
            (&format!("{QKV}.lora_down.weight"), &[4, 32]),
            ("lora_unet_layers_9_attention_qkv.lora_up.weight", &[64, 4]),
            (
                "lora_unet_layers_9_attention_qkv.lora_down.weight",
                &[4, 32],
            ),
            ("lora_unet_layers_0_attention_norm1.w_norm", &[32]),
        ],
    );
    let plan = plan(&path).unwrap();
    let report = &plan.reports()[0];
    assert_eq!((report.applied, report.dit_layers), (1, 1));
    assert_eq!(
        report.unmatched,
        [
            "lora_unet_layers_9_attention_qkv",
            "lora_unet_layers_0_attention_norm1.w_norm"
        ]
    );
}

/// Strength 0 on a model patches nothing there (ComfyUI skips such patches), but the adapter
/// still counts as matched.
#[test]
fn zero_strength_patches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "zero.safetensors",
        &[
            (&format!("{QKV}.lora_up.weight"), &[64, 4]),
            (&format!("{QKV}.lora_down.weight"), &[4, 32]),
        ],
    );
    let adapter = Arc::new(Adapter::open(&path).unwrap());
    let plan = Plan::new(vec![(adapter, Strength::both(0.0))], &tiny_dit_keys(), &[]).unwrap();
    assert!(plan.dit().is_empty());
    assert_eq!(plan.reports()[0].dit_layers, 1);
}

/// PEFT files saved by diffusers: the alpha comes from the metadata of the module's component
/// (`transformer.` / `text_encoder.`), rsLoRA scales by alpha ÷ √r, and per-module alpha patterns
/// are refused rather than applied wrongly.
#[test]
fn peft_alphas_come_from_the_component_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let write_peft = |name: &str, metadata: serde_json::Value| {
        let keys = [
            (
                "transformer.layers.0.attn.to_out.0.lora_B.weight",
                vec![32usize, 4],
            ),
            (
                "transformer.layers.0.attn.to_out.0.lora_A.weight",
                vec![4, 32],
            ),
            (
                "text_encoder.layers.0.self_attn.q_proj.lora_B.weight",
                vec![32, 4],
            ),
            (
                "text_encoder.layers.0.self_attn.q_proj.lora_A.weight",
                vec![4, 16],
            ),
        ];
        let data: Vec<Vec<u8>> = keys
            .iter()
            .map(|(_, s)| vec![0u8; 4 * s.iter().product::<usize>()])
            .collect();
        let views: Vec<(&str, TensorView<'_>)> = keys
            .iter()
            .zip(&data)
            .map(|((k, s), d)| (*k, TensorView::new(Dtype::F32, s.clone(), d).unwrap()))
            .collect();
        let path = dir.path().join(name);
        let meta = std::collections::HashMap::from([(
            "lora_adapter_metadata".to_owned(),
            metadata.to_string(),
        )]);
        safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
        path
    };
    let alphas = |path: &Path| -> Vec<(String, Option<f32>)> {
        Adapter::open(path)
            .unwrap()
            .modules()
            .iter()
            .map(|m| (m.name.clone(), m.alpha))
            .collect()
    };
    let path = write_peft(
        "peft.safetensors",
        serde_json::json!({"transformer.lora_alpha": 8, "transformer.r": 4,
            "text_encoder.lora_alpha": 2, "text_encoder.use_rslora": true}),
    );
    assert_eq!(
        alphas(&path),
        [
            (
                "text_encoder.layers.0.self_attn.q_proj".to_owned(),
                Some(4.0)
            ),
            ("transformer.layers.0.attn.to_out.0".to_owned(), Some(8.0)),
        ]
    );
    let path = write_peft(
        "pattern.safetensors",
        serde_json::json!({"transformer.lora_alpha": 8, "transformer.alpha_pattern": {"to_q": 4}}),
    );
    let e = Adapter::open(&path).unwrap_err().to_string();
    assert!(e.contains("alpha_pattern"), "{e}");
}
