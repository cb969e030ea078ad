//! NextDiT against diffusers' `Lumina2Transformer2DModel` (`tools/reference/nextdit.py`): two tiny
//! configurations, both key layouts, equal and ragged captions, a non-square latent, t ∈ {0, ½, 1},
//! and per-block intermediates.

use burn::backend::Flex;
use burn::tensor::{ElementConversion, Tensor, backend::Backend};
use sakiko_nextdit::{NextDit, NextDitConfig, Trace};
use sakiko_weights::WeightFile;

const TOL: f32 = 5e-5;
const CONFIGS: [&str; 2] = ["test", "gqa16"];
const CASES: [&str; 4] = ["equal", "ragged", "nonsquare", "times"];

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
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

#[test]
fn both_layouts_give_identical_outputs() {
    let device = Default::default();
    let io = WeightFile::open(fixture("gqa16_io.safetensors")).unwrap();
    let outs: Vec<Tensor<Flex, 4>> = models::<Flex>("gqa16", &device)
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
