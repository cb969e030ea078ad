//! Gemma-2 against transformers (`tools/reference/gemma.py`, eager attention): every hidden state,
//! for an unpadded prompt and a right-padded batch, with softcapping and sliding window on and off,
//! from the Hugging Face (f32) and ComfyUI (`model.`, fp16) layouts.

use burn::backend::Flex;
use burn::tensor::{ElementConversion, FloatDType, Tensor, backend::Backend};
use sakiko_gemma::{EncoderOptions, Gemma2, Gemma2Config, GemmaError};
use sakiko_weights::WeightFile;

const TOL: f32 = 5e-5;

fn fixture(name: &str) -> String {
    // At run time when set (a prebuilt test binary run elsewhere, e.g. tools/gpu-check).
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    format!("{root}/tests/fixtures/{name}")
}

fn ids(io: &WeightFile) -> Vec<Vec<u32>> {
    let raw: Vec<i64> = io
        .read_bytes("ids")
        .unwrap()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mask: Vec<i64> = io
        .read_bytes("mask")
        .unwrap()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    raw.chunks(10)
        .zip(mask.chunks(10))
        .map(|(r, m)| {
            r.iter()
                .zip(m)
                .filter(|(_, m)| **m == 1)
                .map(|(id, _)| *id as u32)
                .collect()
        })
        .collect()
}

fn variant(name: &str) -> (Gemma2Config, EncoderOptions) {
    let mut c = Gemma2Config::from_file(fixture("config.json")).unwrap();
    let (softcap, sliding) = match name {
        "plain" => (false, false),
        "softcap" => (true, false),
        "sliding" => (false, true),
        _ => (true, true),
    };
    if softcap {
        c.attn_logit_softcapping = Some(2.0);
    }
    if sliding {
        c.sliding_window = Some(4);
    }
    (
        c,
        EncoderOptions {
            softcap,
            sliding_window: sliding,
            pad_to: None,
        },
    )
}

fn parity<B: Backend>(backend: &str, device: &B::Device) -> f32 {
    let io = WeightFile::open(fixture("io.safetensors")).unwrap();
    let prompts = ids(&io);
    assert_eq!(prompts[0].len(), 10);
    assert_eq!(prompts[1].len(), 6);
    let mut worst = 0.0f32;
    for name in ["plain", "softcap", "sliding", "both"] {
        let (config, options) = variant(name);
        for file in ["model.safetensors", "comfyui_fp16.safetensors"] {
            let model = Gemma2::<B>::load(fixture(file), Some(config.clone()), device).unwrap();
            for (case, batch) in [("single", &prompts[..1]), ("batch", &prompts[..])] {
                let hidden = model.forward(batch, options, device).unwrap();
                assert_eq!(hidden.states.len(), 4);
                let mut case_worst = 0.0f32;
                for (j, state) in hidden.states.iter().enumerate() {
                    let want: Tensor<B, 3> = io
                        .tensor(&format!("{name}/{case}/hidden{j}"), device)
                        .unwrap();
                    // Only real tokens count: at padding, a sliding window can mask a whole row,
                    // which transformers turns into a uniform softmax and Burn into zeros.
                    for (i, &len) in hidden.lengths.iter().enumerate() {
                        let got = state.clone().narrow(0, i, 1).narrow(1, 0, len);
                        let exp = want.clone().narrow(0, i, 1).narrow(1, 0, len);
                        let d: f32 = (got - exp).abs().max().into_scalar().elem();
                        case_worst = case_worst.max(d);
                    }
                }
                println!(
                    "{backend} {name} {file} {case}: max |diff| over all hidden states {case_worst:e}"
                );
                worst = worst.max(case_worst);
            }
        }
    }
    worst
}

#[test]
fn matches_transformers_on_flex() {
    let worst = parity::<Flex>("flex", &Default::default());
    assert!(worst < TOL, "{worst}");
}

#[cfg(feature = "wgpu")]
#[test]
fn matches_transformers_on_wgpu() {
    let worst = parity::<burn::backend::Wgpu>("wgpu", &Default::default());
    assert!(worst < TOL, "{worst}");
}

#[cfg(feature = "cuda")]
#[test]
fn matches_transformers_on_cuda() {
    let worst = parity::<burn::backend::Cuda>("cuda", &Default::default());
    assert!(worst < TOL, "{worst}");
}

#[test]
fn conditioning_is_the_state_entering_the_last_layer() {
    let device = Default::default();
    let io = WeightFile::open(fixture("io.safetensors")).unwrap();
    let (config, options) = variant("plain");
    let model = Gemma2::<Flex>::load(fixture("model.safetensors"), Some(config), &device).unwrap();
    let hidden = model.forward(&ids(&io)[..1], options, &device).unwrap();
    let cond = hidden.conditioning();
    let want: Tensor<Flex, 3> = io.tensor("plain/single/hidden2", &device).unwrap();
    assert_eq!(want.dims(), [1, 10, 16]);
    let d: f32 = (cond - want).abs().max().into_scalar();
    assert!(d < TOL);
}

#[test]
fn bad_inputs_and_files_are_typed_errors() {
    let device = Default::default();
    let (config, options) = variant("plain");
    let model =
        Gemma2::<Flex>::load(fixture("model.safetensors"), Some(config.clone()), &device).unwrap();
    assert!(matches!(
        model.forward(&[vec![2, 300]], options, &device),
        Err(GemmaError::Input(_))
    ));
    assert!(matches!(
        model.forward(&[vec![]], options, &device),
        Err(GemmaError::Input(_))
    ));
    // A config that does not fit the file names the key and both shapes.
    let wrong = Gemma2Config {
        vocab_size: 256,
        ..config
    };
    let err = Gemma2::<Flex>::load(fixture("model.safetensors"), Some(wrong), &device).unwrap_err();
    assert!(
        err.to_string().contains("embed_tokens.weight") && err.to_string().contains("[300, 16]"),
        "{err}"
    );
}

#[test]
fn detection_from_shapes() {
    // The tiny model's head dimension (8) differs from the preset's (256), so detection cannot
    // find its heads: it fails clearly instead of building a wrong model.
    let err =
        Gemma2::<Flex>::load(fixture("model.safetensors"), None, &Default::default()).unwrap_err();
    assert!(
        matches!(err, GemmaError::UndetectableConfig { ref found, .. } if found == "hidden size 16"),
        "{err}"
    );
}

#[test]
fn padding_to_a_length_changes_nothing_for_real_tokens() {
    let device = Default::default();
    let io = WeightFile::open(fixture("io.safetensors")).unwrap();
    let prompts = ids(&io);
    let (config, options) = variant("both");
    let model = Gemma2::<Flex>::load(fixture("model.safetensors"), Some(config), &device).unwrap();
    let plain = model
        .forward(&prompts, options, &device)
        .unwrap()
        .conditioning();
    let padded = model
        .forward(
            &prompts,
            EncoderOptions {
                pad_to: Some(16),
                ..options
            },
            &device,
        )
        .unwrap()
        .conditioning();
    assert_eq!(padded.dims(), [2, 16, 16]);
    let d: f32 = (padded.narrow(1, 0, 10) - plain).abs().max().into_scalar();
    assert!(d < 1e-6, "{d}");
}

#[test]
fn hugging_face_folders_single_and_sharded() {
    let device = Default::default();
    let io = WeightFile::open(fixture("io.safetensors")).unwrap();
    let prompts = ids(&io);
    let want = Gemma2::<Flex>::load(
        fixture("model.safetensors"),
        Some(variant("plain").0),
        &device,
    )
    .unwrap()
    .forward(&prompts, EncoderOptions::comfyui(), &device)
    .unwrap()
    .conditioning();
    // A folder with config.json + model.safetensors, and the same weights in two shards.
    let dir = std::env::temp_dir().join(format!("sakiko-gemma-hf-{}", std::process::id()));
    let sharded = dir.join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    std::fs::copy(fixture("config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(fixture("config.json"), sharded.join("config.json")).unwrap();
    std::fs::copy(fixture("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let src = WeightFile::open(fixture("model.safetensors")).unwrap();
    let mut keys: Vec<String> = src.keys().map(str::to_owned).collect();
    keys.sort();
    let (first, second) = keys.split_at(keys.len() / 2);
    let mut map = serde_json::Map::new();
    for (i, part) in [first, second].into_iter().enumerate() {
        let name = format!("model-0000{}-of-00002.safetensors", i + 1);
        let data: Vec<(String, Vec<u8>, Vec<usize>)> = part
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    src.read_bytes(k).unwrap(),
                    src.shape(k).unwrap().to_vec(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
            .iter()
            .map(|(k, b, s)| {
                (
                    k.clone(),
                    safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                        .unwrap(),
                )
            })
            .collect();
        safetensors::serialize_to_file(views, None, &sharded.join(&name)).unwrap();
        for k in part {
            map.insert(k.clone(), serde_json::Value::String(name.clone()));
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(
        sharded.join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    for folder in [&dir, &sharded] {
        let got = Gemma2::<Flex>::load(folder, None, &device)
            .unwrap()
            .forward(&prompts, EncoderOptions::comfyui(), &device)
            .unwrap()
            .conditioning();
        let d: f32 = (got - want.clone()).abs().max().into_scalar();
        assert_eq!(d, 0.0, "{}", folder.display());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tensor_shapes_list_exactly_a_real_comfyui_checkpoint() {
    let file = WeightFile::open(fixture("comfyui_fp16.safetensors")).expect("fixture");
    let config = Gemma2Config::from_file(fixture("config.json")).expect("config");
    let mut listed = config.tensor_shapes();
    listed.sort();
    assert_eq!(listed, file.shapes_under(""));
}

/// Our half-precision hidden states and transformers' (`{variant}/{tag}/batch/hidden{j}`) against
/// f32, real tokens only: our error may be at most twice PyTorch's own. (The distance between the
/// two is printed, not bounded: their roundings are independent, so it is up to their sum, about
/// 2× PyTorch's error in f16 here.)
fn half_precision_checked<B: Backend>(
    backend: &str,
    device: &B::Device,
    dtypes: &[(FloatDType, &str)],
) {
    let io = WeightFile::open(fixture("io.safetensors")).unwrap();
    let prompts = ids(&io);
    for name in ["plain", "both"] {
        let (config, options) = variant(name);
        let file = WeightFile::open(fixture("comfyui_fp16.safetensors")).unwrap();
        for &(dtype, tag) in dtypes {
            let model =
                Gemma2::<B>::from_weights_as(&file, Some(config.clone()), dtype, device).unwrap();
            assert_eq!(model.dtype(), dtype);
            let hidden = model.forward(&prompts, options, device).unwrap();
            let (mut ours, mut theirs, mut between) = (0.0f32, 0.0f32, 0.0f32);
            for (j, state) in hidden.states.iter().enumerate() {
                assert_eq!(state.dtype(), burn::tensor::DType::F32);
                let f32_ref: Tensor<B, 3> = io
                    .tensor(&format!("{name}/batch/hidden{j}"), device)
                    .unwrap();
                let torch: Tensor<B, 3> = io
                    .tensor(&format!("{name}/{tag}/batch/hidden{j}"), device)
                    .unwrap();
                for (i, &len) in hidden.lengths.iter().enumerate() {
                    let real = |t: &Tensor<B, 3>| t.clone().narrow(0, i, 1).narrow(1, 0, len);
                    let d = |a: Tensor<B, 3>, b: Tensor<B, 3>| -> f32 {
                        (a - b).abs().max().into_scalar().elem()
                    };
                    ours = ours.max(d(real(state), real(&f32_ref)));
                    theirs = theirs.max(d(real(&torch), real(&f32_ref)));
                    between = between.max(d(real(state), real(&torch)));
                }
            }
            println!(
                "{backend} {name} {tag}: |ours − f32| {ours:.3e}, |transformers {tag} − f32| {theirs:.3e}, |ours − transformers {tag}| {between:.3e}"
            );
            assert!(ours <= 2.0 * theirs, "{name} {tag}: {ours} vs {theirs}");
        }
    }
}

#[test]
fn half_precision_matches_transformers_half_on_flex() {
    let dtypes = [(FloatDType::BF16, "bf16"), (FloatDType::F16, "f16")];
    half_precision_checked::<Flex>("flex", &Default::default(), &dtypes);
}

/// Wgpu computes in the half types the device offers (lavapipe: f16, no bf16); the others are a
/// typed error.
#[cfg(feature = "wgpu")]
#[test]
fn half_precision_on_wgpu() {
    use burn::backend::Wgpu;
    let device = Default::default();
    let file = WeightFile::open(fixture("comfyui_fp16.safetensors")).unwrap();
    let (config, _) = variant("plain");
    for dtype in [FloatDType::BF16, FloatDType::F16] {
        let supported = <Wgpu as Backend>::supports_dtype(&device, dtype.into());
        let loaded = Gemma2::<Wgpu>::from_weights_as(&file, Some(config.clone()), dtype, &device);
        assert_eq!(loaded.is_ok(), supported, "{dtype:?}");
        if let Err(e) = loaded {
            assert!(e.to_string().contains("cannot compute in"), "{e}");
        }
    }
    if <Wgpu as Backend>::supports_dtype(&device, FloatDType::F16.into()) {
        half_precision_checked::<Wgpu>("wgpu", &device, &[(FloatDType::F16, "f16")]);
    }
}

#[test]
fn f16_overflow_is_clamped() {
    // Scale layer 1's MLP output projection so that its output exceeds f16's 65504: without the
    // clamp the residual stream becomes inf and the final norm NaN.
    let device = Default::default();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("overflow.safetensors");
    let key = "layers.1.mlp.down_proj.weight";
    sakiko_weights::write_edited(fixture("model.safetensors"), &path, key, |v| {
        v.iter_mut().for_each(|v| *v *= 1e6)
    })
    .unwrap();
    let (config, options) = variant("plain");
    // The scaled weights exceed f16's range themselves, which the load check refuses; this
    // test is about the activations' guard, so it loads them anyway.
    let file = WeightFile::open(&path).unwrap().with_value_check(false);
    let model =
        Gemma2::<Flex>::from_weights_as(&file, Some(config), FloatDType::F16, &device).unwrap();
    let hidden = model
        .forward(
            &ids(&WeightFile::open(fixture("io.safetensors")).unwrap())[..1],
            options,
            &device,
        )
        .unwrap();
    for state in &hidden.states {
        let finite: bool = state.clone().is_finite().all().into_scalar();
        assert!(finite, "an f16 hidden state is not finite");
    }
}
