//! Merged weights against the trainers' own libraries (`tools/reference/adapters.py`): LyCORIS
//! LoCon / LoKr / LoHa / DoRA / full diffs and PEFT LoRA / DoRA, under kohya, LyCORIS, diffusers
//! and ComfyUI names, on the tiny GQA NextDiT and the tiny Gemma-2; every other parameter must stay
//! bit-identical, and restoring the backup must give the base weights back exactly.

use std::collections::HashMap;
use std::sync::Arc;

use burn::backend::Flex;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{FloatDType, Tensor, backend::Backend};
use sakiko_adapters::{Adapter, Plan, Strength};
use sakiko_gemma::{Gemma2, Gemma2Config};
use sakiko_nextdit::{NextDit, NextDitConfig};
#[cfg(feature = "wgpu")]
use sakiko_weights::dequantize_kept;
use sakiko_weights::{LinearKeys, WeightFile};

/// Max |Δ| against the reference, relative to the reference tensor's largest magnitude (f32
/// updates summed in another order than PyTorch's).
const TOL: f32 = 1e-6;

fn path(relative: &str) -> String {
    // At run time when set (a prebuilt test binary run elsewhere, e.g. tools/gpu-check).
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap_or(env!("CARGO_MANIFEST_DIR").into());
    format!("{root}/{relative}")
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    file: String,
    hash: String,
    strength: f32,
    te_strength: f32,
    layers: usize,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(path("tests/fixtures/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every float parameter of a module by path, as host values.
#[derive(Default)]
struct Params {
    path: Vec<String>,
    values: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl<B: Backend> ModuleVisitor<B> for Params {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let t = param.val().cast(FloatDType::F32);
        let shape = t.dims().to_vec();
        let values = t.into_data().convert::<f32>().to_vec().unwrap();
        self.values.insert(self.path.join("."), (shape, values));
    }
}

fn params<B: Backend, M: Module<B>>(model: &M) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let mut p = Params::default();
    model.visit(&mut p);
    p.values
}

fn models<B: Backend>(dtype: FloatDType, device: &B::Device) -> (NextDit<B>, Gemma2<B>) {
    let config = NextDitConfig::from_file(path(
        "../nextdit/tests/fixtures/gqa16_diffusers/config.json",
    ))
    .unwrap();
    let file = WeightFile::open(path(
        "../nextdit/tests/fixtures/gqa16_original_bf16.safetensors",
    ))
    .unwrap();
    let dit = NextDit::from_weights_as(&file, Some(config), dtype, device).unwrap();
    let config = Gemma2Config::from_file(path("../gemma/tests/fixtures/config.json")).unwrap();
    let te = Gemma2::load_as(
        path("../gemma/tests/fixtures/model.safetensors"),
        Some(config),
        dtype,
        device,
    )
    .unwrap();
    (dit, te)
}

/// The reference weight of `layer` (original / HF name) as Burn stores it (`[in, out]`).
fn reference(expected: &WeightFile, key: &str) -> Option<Vec<f32>> {
    let (values, shape) = expected.read_f32(key).ok()?;
    if shape.len() == 1 {
        return Some(values);
    }
    let (out, inp) = (shape[0], shape[1]);
    Some(
        (0..inp * out)
            .map(|j| values[(j % out) * inp + j / out])
            .collect(),
    )
}

/// Compares a merged model with the reference, returns the worst |Δ| and the patched count.
fn compare(
    case: &str,
    component: &str,
    keys: &[LinearKeys],
    base: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    merged: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    expected: &WeightFile,
) -> (f32, usize) {
    let by_module: HashMap<&str, &str> = keys
        .iter()
        .map(|k| (k.module.as_str(), k.names[0].name.as_str()))
        .collect();
    let (mut worst, mut patched) = (0.0f32, 0);
    for (param, (_, values)) in merged {
        let (module, leaf) = param.rsplit_once('.').unwrap();
        let reference = by_module.get(module).and_then(|name| {
            let suffix = if leaf == "bias" { ".bias" } else { "" };
            reference(expected, &format!("{case}/{component}/{name}{suffix}"))
        });
        match reference {
            Some(r) => {
                if leaf == "weight" {
                    patched += 1;
                }
                assert_eq!(r.len(), values.len(), "{case}: {param}");
                let scale = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = r
                    .iter()
                    .zip(values)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
                    / scale;
                assert!(d <= TOL, "{case}: {param} differs by {d} (relative)");
                worst = worst.max(d);
            }
            // Not patched: bit-identical to the base.
            None => assert!(base[param].1 == *values, "{case}: {param} changed"),
        }
    }
    (worst, patched)
}

fn parity<B: Backend>(device: &B::Device) {
    let expected = WeightFile::open(path("tests/fixtures/expected.safetensors")).unwrap();
    let (mut dit, mut te) = models::<B>(FloatDType::F32, device);
    let (dit_keys, te_keys) = (dit.linear_keys(), te.linear_keys());
    let (dit_base, te_base) = (params(&dit), params(&te));
    for case in cases() {
        let file = path(&format!("tests/fixtures/{}", case.file));
        // A1111's short hash, as its `addnet_hash_safetensors` computes it.
        assert_eq!(sakiko_adapters::short_hash(&file).unwrap(), case.hash);
        let adapter = Arc::new(Adapter::open(&file).unwrap());
        let strength = Strength {
            dit: case.strength,
            text_encoder: case.te_strength,
        };
        let plan = Plan::new(vec![(adapter, strength)], &dit_keys, &te_keys).unwrap();
        let report = &plan.reports()[0];
        assert!(
            report.unmatched.is_empty(),
            "{}: {:?}",
            case.name,
            report.unmatched
        );
        assert_eq!(
            report.dit_layers + report.text_encoder_layers,
            case.layers,
            "{}",
            case.name
        );
        let merged = plan.dit().merge(dit);
        let (d1, n1) = compare(
            &case.name,
            "dit",
            &dit_keys,
            &dit_base,
            &params(&merged.model),
            &expected,
        );
        dit = merged.backup.restore(merged.model);
        let merged = plan.text_encoder().merge(te);
        let (d2, n2) = compare(
            &case.name,
            "te",
            &te_keys,
            &te_base,
            &params(&merged.model),
            &expected,
        );
        te = merged.backup.restore(merged.model);
        assert_eq!(n1 + n2, case.layers, "{}: layers compared", case.name);
        println!(
            "{}: {} layers, max relative |Δ| {:.1e} ({:?}, rank {:?}, alpha {:?})",
            case.name,
            case.layers,
            d1.max(d2),
            report.formats,
            report.rank,
            report.alpha
        );
        // Restored exactly: the next case starts from the base weights.
        assert!(params(&dit) == dit_base, "{}: DiT not restored", case.name);
        assert!(
            params(&te) == te_base,
            "{}: text encoder not restored",
            case.name
        );
    }
}

#[test]
fn merges_match_the_trainers_libraries() {
    parity::<Flex>(&Default::default());
}

#[cfg(feature = "wgpu")]
#[test]
fn merges_match_the_trainers_libraries_on_wgpu() {
    parity::<burn::backend::Wgpu>(&Default::default());
}

/// Stacked adapters apply in order, each at its own strength: two LoRAs on the same layers equal
/// the base plus both updates (each case's reference minus the base, summed).
#[test]
fn stacked_adapters_add_their_updates() {
    let device = Default::default();
    let expected = WeightFile::open(path("tests/fixtures/expected.safetensors")).unwrap();
    let (dit, _) = models::<Flex>(FloatDType::F32, &device);
    let keys = dit.linear_keys();
    let base = params(&dit);
    let open = |name: &str| {
        Arc::new(Adapter::open(path(&format!("tests/fixtures/{name}.safetensors"))).unwrap())
    };
    let cases = cases();
    let strength = |name: &str| cases.iter().find(|c| c.name == name).unwrap().strength;
    let plan = Plan::new(
        vec![
            (open("kohya_lokr"), Strength::both(strength("kohya_lokr"))),
            (
                open("comfyui_peft"),
                Strength::both(strength("comfyui_peft")),
            ),
        ],
        &keys,
        &[],
    )
    .unwrap();
    let merged = params(&plan.dit().merge(dit).model);
    let mut checked = 0;
    for k in &keys {
        let name = &k.names[0].name;
        let (Some(a), Some(b)) = (
            reference(&expected, &format!("kohya_lokr/dit/{name}")),
            reference(&expected, &format!("comfyui_peft/dit/{name}")),
        ) else {
            continue;
        };
        let w = &base[&format!("{}.weight", k.module)].1;
        let got = &merged[&format!("{}.weight", k.module)].1;
        for i in 0..w.len() {
            let want = a[i] + b[i] - w[i];
            assert!(
                (got[i] - want).abs() <= 1e-5,
                "{name}[{i}]: {} vs {want}",
                got[i]
            );
        }
        checked += 1;
    }
    assert!(checked > 10, "{checked} layers in both adapters");
}

/// In bf16 the merge is computed in f32 and rounded once: within one bf16 step of the f32 result.
#[test]
fn half_precision_weights_merge_in_f32_and_round_once() {
    let device = Default::default();
    let expected = WeightFile::open(path("tests/fixtures/expected.safetensors")).unwrap();
    let (dit, _) = models::<Flex>(FloatDType::BF16, &device);
    let keys = dit.linear_keys();
    let adapter = Arc::new(Adapter::open(path("tests/fixtures/kohya_loha.safetensors")).unwrap());
    let strength = cases()
        .into_iter()
        .find(|c| c.name == "kohya_loha")
        .unwrap()
        .strength;
    let plan = Plan::new(vec![(adapter, Strength::both(strength))], &keys, &[]).unwrap();
    let merged = plan.dit().merge(dit);
    let values = params(&merged.model);
    let mut checked = 0;
    for k in &keys {
        let Some(r) = reference(&expected, &format!("kohya_loha/dit/{}", k.names[0].name)) else {
            continue;
        };
        let got = &values[&format!("{}.weight", k.module)].1;
        for (g, r) in got.iter().zip(&r) {
            assert!(
                (g - r).abs() <= r.abs() / 128.0 + 1e-6,
                "{}: {g} vs {r}",
                k.module
            );
        }
        checked += 1;
    }
    assert!(checked > 10);
}

/// Strength 0 on both models leaves every weight bit-identical to the model without adapters.
#[test]
fn zero_strength_is_bit_identical_to_no_adapter() {
    let device = Default::default();
    let (dit, te) = models::<Flex>(FloatDType::F32, &device);
    let (dit_base, te_base) = (params(&dit), params(&te));
    let adapter = Arc::new(Adapter::open(path("tests/fixtures/kohya_lora.safetensors")).unwrap());
    let plan = Plan::new(
        vec![(adapter, Strength::both(0.0))],
        &dit.linear_keys(),
        &te.linear_keys(),
    )
    .unwrap();
    assert!(params(&plan.dit().merge(dit).model) == dit_base);
    assert!(params(&plan.text_encoder().merge(te).model) == te_base);
}

/// Counts the quantised parameters of a module.
#[cfg(feature = "wgpu")]
struct Quantised(usize);

#[cfg(feature = "wgpu")]
impl<B: Backend> ModuleVisitor<B> for Quantised {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let burn::tensor::DType::QFloat(_) = param.val().dtype() {
            self.0 += 1;
        }
    }
}

/// Finds `layers.0.attention.qkv.weight`, as stored.
#[cfg(feature = "wgpu")]
struct Find<B: Backend>(Vec<String>, Option<burn::tensor::TensorPrimitive<B>>);

#[cfg(feature = "wgpu")]
impl<B: Backend> ModuleVisitor<B> for Find<B> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.to_owned());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.0.join(".") == "layers.0.attention.qkv.weight" {
            self.1 = Some(param.val().into_primitive());
        }
    }
}

/// A denoiser whose GGUF Q8_0 weights are kept quantised (CubeCL) merges as the same file
/// dequantised at load does: each patched weight is dequantised, patched in f32 and held as a
/// float weight; the backup gives the quantised originals back.
#[cfg(feature = "wgpu")]
#[test]
fn kept_quantised_weights_merge_as_dequantised_ones_on_wgpu() {
    use burn::tensor::TensorData;
    type B = burn::backend::Wgpu;
    let device = Default::default();
    let gguf =
        path("../pipeline/tests/fixtures/lowp/models/diffusion_models/tiny_lumina_q8_0.gguf");
    let open = || WeightFile::open_any(&gguf).unwrap();
    let kept = NextDit::<B>::from_weights(&open().with_q8_0_kept(true), None, &device).unwrap();
    let float = NextDit::<B>::from_weights(&open(), None, &device).unwrap();
    let quantised = |model: &NextDit<B>| {
        let mut count = Quantised(0);
        model.visit(&mut count);
        count.0
    };
    let before = quantised(&kept);
    assert!(before > 0, "the fixture keeps Q8_0 weights");
    // Burn's own `dequantize` misreads the kept `[in, out]` views; `dequantize_kept` does not.
    let qkv = |model: &NextDit<B>| {
        let mut find = Find::<B>(Vec::new(), None);
        model.visit(&mut find);
        Tensor::<B, 2>::from_primitive(find.1.expect("layers.0.attention.qkv.weight"))
    };
    let (qkv, reference) = (qkv(&kept), qkv(&float));
    let error = |t: Tensor<B, 2>| (t - reference.clone()).abs().max().into_scalar();
    assert!(error(qkv.clone().dequantize()) > 0.1);
    assert_eq!(error(dequantize_kept(qkv)), 0.0);
    // A rank-2 kohya LoRA on every linear layer, made in memory.
    let keys = float.linear_keys();
    let values = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|j| ((j * 7 + seed * 3) % 17) as f32 / 17.0 - 0.5)
            .collect()
    };
    let mut tensors = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let name = format!("lora_unet_{}", k.names[0].name.replace('.', "_"));
        let [out, inp] = k.shape;
        tensors.push((
            format!("{name}.lora_down.weight"),
            TensorData::new(values(2 * inp, i), [2, inp]),
        ));
        tensors.push((
            format!("{name}.lora_up.weight"),
            TensorData::new(values(out * 2, i + 100), [out, 2]),
        ));
    }
    let file = WeightFile::from_tensors("lora.safetensors", tensors).unwrap();
    let adapter = Arc::new(Adapter::from_file(file).unwrap());
    let plan = Plan::new(vec![(adapter, Strength::both(0.7))], &keys, &[]).unwrap();
    assert_eq!(plan.reports()[0].dit_layers, keys.len());

    let merged = plan.dit().merge(kept);
    assert_eq!(quantised(&merged.model), 0, "every kept weight was patched");
    let (got, want) = (
        params(&merged.model),
        params(&plan.dit().merge(float).model),
    );
    assert_eq!(got.len(), want.len());
    for (name, (shape, values)) in &want {
        let (got_shape, got_values) = &got[name];
        assert_eq!(got_shape, shape, "{name}");
        let diff = values
            .iter()
            .zip(got_values)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff <= 1e-5, "{name}: max |Δ| {diff:e}");
    }
    let restored = merged.backup.restore(merged.model);
    assert_eq!(quantised(&restored), before);
}
