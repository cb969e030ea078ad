//! NextDiT against diffusers' `Lumina2Transformer2DModel` (`tools/reference/nextdit.py`): two tiny
//! configurations, both key layouts, equal and ragged captions, a non-square latent, t ∈ {0, ½, 1},
//! and per-block intermediates.

use burn::backend::Flex;
use burn::tensor::{DType, ElementConversion, FloatDType, Tensor, TensorData, backend::Backend};
use sakiko_nextdit::{NextDit, NextDitConfig, Trace};
use sakiko_weights::{Format, StoredDtype, WeightFile};

const TOL: f32 = 5e-5;
const CONFIGS: [&str; 2] = ["test", "gqa16"];
const CASES: [&str; 4] = ["equal", "ragged", "nonsquare", "times"];

fn fixture(name: &str) -> String {
    // At run time when set (a prebuilt test binary run elsewhere, e.g. tools/gpu-check).
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    format!("{root}/tests/fixtures/{name}")
}

fn tensor<B: Backend, const D: usize>(
    file: &WeightFile,
    name: &str,
    device: &B::Device,
) -> Tensor<B, D> {
    file.tensor(name, device).unwrap()
}

fn cap_lens(file: &WeightFile, case: &str) -> Vec<usize> {
    file.read_bytes(&format!("{case}/cap_lens"))
        .unwrap()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect()
}

fn max_diff<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).abs().max().into_scalar().elem()
}

fn models<B: Backend>(config: &str, device: &B::Device) -> Vec<(&'static str, NextDit<B>)> {
    let diffusers = NextDit::load(fixture(&format!("{config}_diffusers")), device).unwrap();
    let cfg =
        NextDitConfig::from_file(fixture(&format!("{config}_diffusers/config.json"))).unwrap();
    let file = WeightFile::open(fixture(&format!("{config}_original_bf16.safetensors"))).unwrap();
    let original = NextDit::from_weights(&file, Some(cfg), device).unwrap();
    vec![
        ("diffusers f32", diffusers),
        ("original bf16 prefixed", original),
    ]
}

/// Every case of every configuration from both layouts on backend `B`; returns the worst difference.
fn parity<B: Backend>(backend: &str, device: &B::Device) -> f32 {
    let mut worst = 0.0f32;
    for config in CONFIGS {
        let io = WeightFile::open(fixture(&format!("{config}_io.safetensors"))).unwrap();
        for (layout, model) in models::<B>(config, device) {
            for case in CASES {
                let x: Tensor<B, 4> = tensor(&io, &format!("{case}/x"), device);
                let cap: Tensor<B, 3> = tensor(&io, &format!("{case}/cap"), device);
                let t: Vec<f32> = io.read_f32(&format!("{case}/t")).unwrap().0;
                let lens = cap_lens(&io, case);
                let mut trace = Trace::new();
                let out = model
                    .forward_traced(x, &t, cap, &lens, Some(&mut trace))
                    .unwrap();
                let diff = max_diff(out, tensor(&io, &format!("{case}/out"), device));
                println!("{backend} {config} {layout} {case}: max |diff| {diff:e}");
                worst = worst.max(diff);
                if case == "equal" {
                    for (name, value) in trace {
                        let d =
                            max_diff(value, tensor(&io, &format!("{case}/block/{name}"), device));
                        assert!(
                            d < TOL,
                            "{backend} {config} {layout}: block {name} differs by {d}"
                        );
                    }
                }
            }
        }
    }
    worst
}

#[test]
fn matches_diffusers_on_flex() {
    let worst = parity::<Flex>("flex", &Default::default());
    assert!(worst < TOL, "{worst}");
}

#[cfg(feature = "wgpu")]
#[test]
fn matches_diffusers_on_wgpu() {
    let worst = parity::<burn::backend::Wgpu>("wgpu", &Default::default());
    assert!(worst < TOL, "{worst}");
}

#[cfg(feature = "cuda")]
#[test]
fn matches_diffusers_on_cuda() {
    let worst = parity::<burn::backend::Cuda>("cuda", &Default::default());
    assert!(worst < TOL, "{worst}");
}

/// `file`'s tensors handed over in memory, each in its stored dtype.
fn in_memory(file: &WeightFile) -> WeightFile {
    let tensors = file.keys().map(|key| {
        let dtype = match file.dtype(key) {
            Some(StoredDtype::Safetensors(safetensors::Dtype::BF16)) => DType::BF16,
            Some(StoredDtype::Safetensors(safetensors::Dtype::F32)) => DType::F32,
            other => panic!("`{key}`: {other:?} in the fixture"),
        };
        let bytes = file.read_bytes(key).unwrap();
        let shape = file.shape(key).unwrap().to_vec();
        (
            key.to_owned(),
            TensorData::from_bytes_vec(bytes, shape, dtype),
        )
    });
    WeightFile::from_tensors("in memory", tensors.collect::<Vec<_>>()).unwrap()
}

/// Both key layouts, and the original layout handed over in memory, give the same outputs.
#[test]
fn both_layouts_give_identical_outputs() {
    let device = Default::default();
    let io = WeightFile::open(fixture("gqa16_io.safetensors")).unwrap();
    let mut models = models::<Flex>("gqa16", &device);
    let cfg = NextDitConfig::from_file(fixture("gqa16_diffusers/config.json")).unwrap();
    let file = WeightFile::open(fixture("gqa16_original_bf16.safetensors")).unwrap();
    let memory = in_memory(&file);
    assert_eq!(memory.format(), Format::Memory);
    models.push((
        "original bf16 in memory",
        NextDit::from_weights(&memory, Some(cfg), &device).unwrap(),
    ));
    let outs: Vec<Tensor<Flex, 4>> = models
        .into_iter()
        .map(|(_, m)| {
            let t = io.read_f32("ragged/t").unwrap().0;
            m.forward(
                tensor(&io, "ragged/x", &device),
                &t,
                tensor(&io, "ragged/cap", &device),
                &cap_lens(&io, "ragged"),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(max_diff(outs[0].clone(), outs[1].clone()), 0.0);
    assert_eq!(max_diff(outs[1].clone(), outs[2].clone()), 0.0);
}

#[test]
fn odd_latent_sizes_are_padded_circularly_and_cropped() {
    let device = Default::default();
    let model = NextDit::<Flex>::load(fixture("gqa16_diffusers"), &device).unwrap();
    let io = WeightFile::open(fixture("gqa16_io.safetensors")).unwrap();
    let x: Tensor<Flex, 4> = tensor(&io, "nonsquare/x", &device); // [1, 16, 12, 6]
    let cap: Tensor<Flex, 3> = tensor(&io, "nonsquare/cap", &device);
    let t = io.read_f32("nonsquare/t").unwrap().0;
    let lens = cap_lens(&io, "nonsquare");
    // An 11×5 latent is the 12×6 one with its last row and column replaced by the first ones
    // (circular padding), so its output is the 12×6 output of that padded input, cropped.
    let odd = x.clone().narrow(2, 0, 11).narrow(3, 0, 5);
    let padded = Tensor::cat(vec![odd.clone(), odd.clone().narrow(2, 0, 1)], 2);
    let padded = Tensor::cat(vec![padded.clone(), padded.narrow(3, 0, 1)], 3);
    let out_odd = model.forward(odd, &t, cap.clone(), &lens).unwrap();
    assert_eq!(out_odd.dims(), [1, 16, 11, 5]);
    let out_padded = model
        .forward(padded, &t, cap, &lens)
        .unwrap()
        .narrow(2, 0, 11)
        .narrow(3, 0, 5);
    assert_eq!(max_diff(out_odd, out_padded), 0.0);
}

#[test]
fn bad_inputs_are_typed_errors() {
    use sakiko_nextdit::NextDitError;
    let device = Default::default();
    let model = NextDit::<Flex>::load(fixture("test_diffusers"), &device).unwrap();
    let x = Tensor::<Flex, 4>::zeros([1, 4, 8, 8], &device);
    let cap = Tensor::<Flex, 3>::zeros([1, 5, 32], &device);
    type Case = (
        Tensor<Flex, 4>,
        Tensor<Flex, 3>,
        Vec<f32>,
        Vec<usize>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            Tensor::zeros([1, 3, 8, 8], &device),
            cap.clone(),
            vec![0.5],
            vec![5],
            "3 channels",
        ),
        (
            x.clone(),
            Tensor::zeros([1, 5, 8], &device),
            vec![0.5],
            vec![5],
            "8 wide",
        ),
        (
            x.clone(),
            cap.clone(),
            vec![0.5, 0.1],
            vec![5],
            "batch sizes differ",
        ),
        (
            x.clone(),
            cap.clone(),
            vec![0.5],
            vec![0],
            "caption length 0",
        ),
        (
            x.clone(),
            cap.clone(),
            vec![0.5],
            vec![6],
            "caption length 6",
        ),
    ];
    // Beyond diffusers' 128-entry position tables: angles are computed per position, as ComfyUI does.
    let tall = model
        .forward(
            Tensor::zeros([1, 4, 300, 8], &device),
            &[0.5],
            cap.clone(),
            &[5],
        )
        .expect("positions beyond axes_lens");
    assert_eq!(tall.dims(), [1, 4, 300, 8]);
    for (x, cap, t, lens, expect) in cases {
        let err = model.forward(x, &t, cap, &lens).unwrap_err();
        assert!(matches!(err, NextDitError::Input(_)), "{err}");
        assert!(
            err.to_string().contains(expect),
            "{err} should mention {expect}"
        );
    }
}

#[test]
fn comfyui_qk_norm_epsilon_changes_little() {
    let device = Default::default();
    let io = WeightFile::open(fixture("gqa16_io.safetensors")).unwrap();
    let mut config = NextDitConfig::from_file(fixture("gqa16_diffusers/config.json")).unwrap();
    assert_eq!(config.qk_norm_eps, 1e-5);
    config.qk_norm_eps = f64::from(f32::EPSILON);
    let file = WeightFile::open(fixture(
        "gqa16_diffusers/diffusion_pytorch_model.safetensors",
    ))
    .unwrap();
    let model = NextDit::<Flex>::from_weights(&file, Some(config), &device).unwrap();
    let t = io.read_f32("equal/t").unwrap().0;
    let out = model
        .forward(
            tensor(&io, "equal/x", &device),
            &t,
            tensor(&io, "equal/cap", &device),
            &cap_lens(&io, "equal"),
        )
        .unwrap();
    let diff = max_diff(out, tensor(&io, "equal/out", &device));
    // Different from diffusers' 1e-5, but only in the small digits.
    assert!(diff > 0.0 && diff < 1e-3, "{diff}");
}

/// bf16 and f16 compute on `B`: our error against the f32 reference must be of the size of
/// PyTorch's own error in that dtype (and our output close to PyTorch's).
fn half_precision_checked<B: Backend>(
    backend: &str,
    device: &B::Device,
    dtypes: &[(FloatDType, &str)],
) {
    for config in CONFIGS {
        let io = WeightFile::open(fixture(&format!("{config}_io.safetensors"))).unwrap();
        let file =
            WeightFile::open(fixture(&format!("{config}_original_bf16.safetensors"))).unwrap();
        let cfg =
            NextDitConfig::from_file(fixture(&format!("{config}_diffusers/config.json"))).unwrap();
        for &(dtype, tag) in dtypes {
            let model =
                NextDit::<B>::from_weights_as(&file, Some(cfg.clone()), dtype, device).unwrap();
            assert_eq!(model.dtype(), dtype);
            let x: Tensor<B, 4> = tensor(&io, "equal/x", device);
            let cap: Tensor<B, 3> = tensor(&io, "equal/cap", device);
            let t = io.read_f32("equal/t").unwrap().0;
            let out = model.forward(x, &t, cap, &cap_lens(&io, "equal")).unwrap();
            assert_eq!(out.dtype(), burn::tensor::DType::F32);
            let reference: Tensor<B, 4> = tensor(&io, "equal/out", device);
            let torch: Tensor<B, 4> = tensor(&io, &format!("equal/out_{tag}"), device);
            let ours = max_diff(out.clone(), reference.clone());
            let theirs = max_diff(torch.clone(), reference);
            let between = max_diff(out, torch);
            println!(
                "{backend} {config} {tag}: |ours − f32| {ours:.3e}, |PyTorch {tag} − f32| {theirs:.3e}, |ours − PyTorch {tag}| {between:.3e}"
            );
            assert!(
                ours <= 2.0 * theirs,
                "{config} {tag}: {ours} vs PyTorch's {theirs}"
            );
            assert!(
                between <= 2.0 * theirs,
                "{config} {tag}: {between} from PyTorch's {tag}"
            );
        }
    }
}

#[test]
fn half_precision_matches_pytorch_half_on_flex() {
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
    let file = WeightFile::open(fixture("gqa16_original_bf16.safetensors")).unwrap();
    let cfg = NextDitConfig::from_file(fixture("gqa16_diffusers/config.json")).unwrap();
    for dtype in [FloatDType::BF16, FloatDType::F16] {
        let supported = <Wgpu as Backend>::supports_dtype(&device, dtype.into());
        let loaded = NextDit::<Wgpu>::from_weights_as(&file, Some(cfg.clone()), dtype, &device);
        println!("wgpu {dtype:?}: supported {supported}");
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
fn f16_overflow_is_clamped_as_comfyui_does() {
    // Scale one block's feed-forward output projection so that its SwiGLU output exceeds f16's
    // 65504: without ComfyUI's clamp the block output is inf/NaN and so is the whole prediction.
    let device = Default::default();
    let dir = std::env::temp_dir().join(format!("sakiko-f16-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("overflow.safetensors");
    let key = "model.diffusion_model.layers.0.feed_forward.w2.weight";
    sakiko_weights::write_edited(
        fixture("gqa16_original_bf16.safetensors"),
        &path,
        key,
        |v| v.iter_mut().for_each(|v| *v *= 1e6),
    )
    .unwrap();
    // The scaled weights exceed f16's range themselves, which the load check refuses; this
    // test is about the activations' guard, so it loads them anyway.
    let file = WeightFile::open(&path).unwrap().with_value_check(false);
    let io = WeightFile::open(fixture("gqa16_io.safetensors")).unwrap();
    let cfg = NextDitConfig::from_file(fixture("gqa16_diffusers/config.json")).unwrap();
    let lens = cap_lens(&io, "equal");
    let t = io.read_f32("equal/t").unwrap().0;
    let run = |dtype| {
        let model =
            NextDit::<Flex>::from_weights_as(&file, Some(cfg.clone()), dtype, &device).unwrap();
        let x: Tensor<Flex, 4> = tensor(&io, "equal/x", &device);
        let cap: Tensor<Flex, 3> = tensor(&io, "equal/cap", &device);
        model.forward(x, &t, cap, &lens).unwrap()
    };
    let f16 = run(FloatDType::F16);
    let finite: bool = f16.clone().is_finite().all().into_scalar().elem();
    assert!(finite, "f16 output has inf/NaN despite the clamp");
    // The f32 model has no such problem; the clamped f16 result stays in its range.
    let f32_out = run(FloatDType::F32);
    let bound: f32 = f32_out.abs().max().into_scalar().elem();
    let got: f32 = f16.abs().max().into_scalar().elem();
    assert!(got < 10.0 * bound + 10.0, "{got} vs f32's {bound}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn unsupported_compute_dtypes_are_errors() {
    let file = WeightFile::open(fixture("gqa16_original_bf16.safetensors")).unwrap();
    let err = NextDit::<Flex>::from_weights_as(&file, None, FloatDType::F64, &Default::default())
        .unwrap_err();
    assert!(err.to_string().contains("F64"), "{err}");
}

#[test]
fn tensor_shapes_list_exactly_a_real_original_checkpoint() {
    let file = WeightFile::open(fixture("test_original_bf16.safetensors")).expect("fixture");
    let config = NextDitConfig::from_file(fixture("test_diffusers/config.json")).expect("config");
    let mut listed = config.tensor_shapes();
    listed.sort();
    assert_eq!(listed, file.shapes_under("model.diffusion_model."));
}

/// bf16 (the default on CUDA) and f16 on CUDA, against PyTorch's own half-precision error.
#[cfg(feature = "cuda")]
#[test]
fn half_precision_on_cuda() {
    half_precision_checked::<burn::backend::Cuda>(
        "cuda",
        &Default::default(),
        &[(FloatDType::BF16, "bf16"), (FloatDType::F16, "f16")],
    );
}

/// A copy of the `test` fixture in f32 with `edit` applied to its (key, shape, values) list.
fn edited_fixture(
    name: &str,
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>),
) -> std::path::PathBuf {
    let src = WeightFile::open(fixture("test_original_bf16.safetensors")).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = src
        .keys()
        .map(|k| {
            let (v, s) = src.read_f32(k).unwrap();
            (k.to_owned(), s, v)
        })
        .collect();
    edit(&mut tensors);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((k, s, _), b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (k.clone(), view.unwrap())
        })
        .collect();
    let path =
        std::env::temp_dir().join(format!("sakiko-{name}-{}.safetensors", std::process::id()));
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn loading_names_the_missing_or_misshapen_tensor() {
    let device = Default::default();
    let config = NextDitConfig::from_file(fixture("test_diffusers/config.json")).unwrap();
    let key = "model.diffusion_model.layers.1.feed_forward.w2.weight";
    // Negative control: the unedited copy loads.
    let same = edited_fixture("same", |_| {});
    let file = WeightFile::open(&same).unwrap();
    NextDit::<Flex>::from_weights(&file, Some(config.clone()), &device).expect("loads");

    let missing = edited_fixture("missing", |t| t.retain(|(k, _, _)| k != key));
    let file = WeightFile::open(&missing).unwrap();
    let err = NextDit::<Flex>::from_weights(&file, Some(config.clone()), &device).unwrap_err();
    assert!(
        err.to_string().contains(&format!("missing tensor `{key}`")),
        "{err}"
    );

    let misshapen = edited_fixture("misshapen", |t| {
        let (_, shape, values) = t.iter_mut().find(|(k, _, _)| k == key).unwrap();
        shape[1] -= 1;
        values.truncate(shape.iter().product());
    });
    let file = WeightFile::open(&misshapen).unwrap();
    let want = config
        .tensor_shapes()
        .into_iter()
        .find(|(k, _)| k == &key["model.diffusion_model.".len()..]);
    let (_, want) = want.expect("listed");
    let err = NextDit::<Flex>::from_weights(&file, Some(config), &device).unwrap_err();
    let mut found = want.clone();
    found[1] -= 1;
    assert!(
        err.to_string()
            .contains(&format!("`{key}` has shape {found:?}, expected {want:?}")),
        "{err}"
    );
    for p in [same, missing, misshapen] {
        std::fs::remove_file(p).ok();
    }
}

#[test]
fn an_undetectable_configuration_says_what_to_pass() {
    // The tiny model's RoPE axes (8, 4, 4) are not the thirds of its head width that detection
    // assumes (every released Lumina 2 model splits them evenly).
    let shapes = NextDitConfig::tiny().tensor_shapes();
    let file = WeightFile::synthetic("dit.safetensors", &shapes, safetensors::Dtype::BF16).unwrap();
    let err = sakiko_nextdit::detect(&file).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot tell the configuration of the NextDiT denoiser in dit.safetensors: width 64 with \
         4 heads of 16 and 2 KV heads, which no released Lumina 2 layout fits (RoPE axes [5, 5, \
         5] must be even and sum to the head dimension 16); pass the model's diffusers \
         config.json (`--dit-config config.json`, or `ModelFiles::with_dit_config`)"
    );
}

/// Counts the quantised float parameters of a module.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
struct Quantised(usize);

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl<B: Backend> burn::module::ModuleVisitor<B> for Quantised {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        if let DType::QFloat(_) = param.val().dtype() {
            self.0 += 1;
        }
    }
}

/// A GGUF Q8_0 denoiser with its linear weights kept quantised (`with_q8_0_kept`, CubeCL
/// backends only) against the same file dequantised at load: the same weight values, multiplied
/// by the backend's quantised GEMM. Batches of 2 (CFG) and 1 (the one-row products of the
/// timestep MLP and adaLN). Returns the largest difference and how many weights stayed quantised.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn kept_q8_0<B: Backend>(device: &B::Device) -> (f32, usize) {
    use burn::module::Module;
    let path = fixture(
        "../../../pipeline/tests/fixtures/lowp/models/diffusion_models/tiny_lumina_q8_0.gguf",
    );
    let dense =
        NextDit::<B>::from_weights(&WeightFile::open_any(&path).unwrap(), None, device).unwrap();
    let file = WeightFile::open_any(&path).unwrap().with_q8_0_kept(true);
    let kept = NextDit::<B>::from_weights(&file, None, device).unwrap();
    let mut count = Quantised(0);
    kept.visit(&mut count);
    let c = dense.config().clone();
    let random = |shape: [usize; 3], seed: usize| {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + seed) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        Tensor::<B, 3>::from_data(TensorData::new(values, shape), device)
    };
    let x = random([2, c.in_channels, 64], 1).reshape([2, c.in_channels, 8, 8]);
    let cap = random([2, 7, c.cap_feat_dim], 2);
    let mut worst = 0.0f32;
    for batch in [2, 1] {
        let (x, cap) = (
            x.clone().narrow(0, 0, batch),
            cap.clone().narrow(0, 0, batch),
        );
        let lens = &[7, 4][..batch];
        let t = &[0.3, 0.7][..batch];
        let run = |m: &NextDit<B>| m.forward(x.clone(), t, cap.clone(), lens).unwrap();
        worst = worst.max(max_diff(run(&kept), run(&dense)));
    }
    (worst, count.0)
}

#[cfg(feature = "wgpu")]
#[test]
fn q8_0_weights_kept_quantised_match_dequantised_ones_on_wgpu() {
    let (diff, kept) = kept_q8_0::<burn::backend::Wgpu>(&Default::default());
    println!("wgpu: {kept} weights kept quantised, max |Δ| {diff:.2e}");
    assert!(kept > 0);
    assert!(diff < 1e-4, "{diff}");
}

#[cfg(feature = "cuda")]
#[test]
fn q8_0_weights_kept_quantised_match_dequantised_ones_on_cuda() {
    let (diff, kept) = kept_q8_0::<burn::backend::Cuda>(&Default::default());
    println!("cuda: {kept} weights kept quantised, max |Δ| {diff:.2e}");
    assert!(kept > 0);
    assert!(diff < 1e-4, "{diff}");
}
