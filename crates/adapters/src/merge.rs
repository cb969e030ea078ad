//! Planning which layers a set of adapters patches (checked against the models' shapes before
//! any model loads), merging the updates into a Burn module's weights, and restoring the
//! original weights without reading the base checkpoint again.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, FloatDType, Tensor, TensorPrimitive, backend::Backend};
use sakiko_weights::{LinearKeys, dequantize_kept};

use crate::AdapterError;
use crate::file::{Adapter, Format};
use crate::names::{Component, Names};
use crate::update::{apply, delta, vector};

/// How strongly an adapter applies, per model (ComfyUI's `strength_model` / `strength_clip`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Strength {
    /// On the denoiser.
    pub dit: f32,
    /// On the text encoder.
    pub text_encoder: f32,
}

impl Strength {
    /// The same strength on both models.
    pub fn both(strength: f32) -> Self {
        Self {
            dit: strength,
            text_encoder: strength,
        }
    }
}

impl Default for Strength {
    fn default() -> Self {
        Self::both(1.0)
    }
}

/// What an adapter does to the models, for logs, PNG metadata and `sakiko inspect`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterReport {
    /// The file.
    pub path: PathBuf,
    /// The update formats it uses.
    pub formats: Vec<Format>,
    /// Whether it is weight-decomposed (DoRA).
    pub dora: bool,
    /// Its largest rank.
    pub rank: Option<usize>,
    /// Its alpha, when all modules share one.
    pub alpha: Option<f32>,
    /// The strengths it is applied with.
    pub strength: Strength,
    /// Modules that matched a layer.
    pub applied: usize,
    /// Denoiser layers it patches.
    pub dit_layers: usize,
    /// Text-encoder layers it patches.
    pub text_encoder_layers: usize,
    /// Module names that match no layer, and keys that belong to no module: not applied.
    pub unmatched: Vec<String>,
}

/// Which models an adapter's modules name, by name alone (no shapes checked): for describing a
/// file without loading a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Targets {
    /// Denoiser layers named.
    pub dit: usize,
    /// Text-encoder layers named.
    pub text_encoder: usize,
    /// Module names that name no layer.
    pub unmatched: Vec<String>,
}

impl Adapter {
    /// The layers of a denoiser with `dit` and a text encoder with `text_encoder` layers that its
    /// modules name.
    pub fn targets(&self, dit: &[LinearKeys], text_encoder: &[LinearKeys]) -> Targets {
        self.targets_in(&Names::new(dit, text_encoder))
    }

    fn targets_in(&self, names: &Names) -> Targets {
        let mut layers = (Vec::new(), Vec::new());
        let mut unmatched = Vec::new();
        for module in self.modules() {
            match names.find(&module.name) {
                Some(t) if t.component == Component::Dit => layers.0.push(t.layer),
                Some(t) => layers.1.push(t.layer),
                None => unmatched.push(module.name.clone()),
            }
        }
        for l in [&mut layers.0, &mut layers.1] {
            l.sort_unstable();
            l.dedup();
        }
        Targets {
            dit: layers.0.len(),
            text_encoder: layers.1.len(),
            unmatched,
        }
    }
}

/// One module's update of one layer.
#[derive(Debug, Clone)]
struct Patch {
    adapter: Arc<Adapter>,
    module: usize,
    rows: Option<Range<usize>>,
    strength: f32,
}

/// The updates of one model, by layer module path, in the order the adapters were given.
#[derive(Debug, Clone, Default)]
pub struct Patches {
    layers: BTreeMap<String, Vec<Patch>>,
}

/// Adapters matched against the denoiser's and the text encoder's layers: every module's target
/// and shape are checked here, before either model is loaded.
///
/// ```no_run
/// use std::sync::Arc;
/// use burn::backend::Flex;
/// use sakiko_adapters::{Adapter, Plan, Strength};
/// use sakiko_nextdit::NextDitConfig;
///
/// let device = Default::default();
/// let dit = sakiko_nextdit::NextDit::<Flex>::load("lumina2.safetensors", &device)?;
/// let adapter = Arc::new(Adapter::open("style.safetensors")?);
/// let plan = Plan::new(vec![(adapter, Strength::both(0.8))], &dit.linear_keys(), &[])?;
/// let merged = plan.dit().merge(dit);
/// // … generate with merged.model; later, the base weights back without reading the file:
/// let dit = merged.backup.restore(merged.model);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Plan {
    dit: Patches,
    text_encoder: Patches,
    reports: Vec<AdapterReport>,
}

impl Plan {
    /// Matches every module of `adapters` (applied in this order) to a layer of `dit` or
    /// `text_encoder` (the models' `linear_keys()`; pass `&[]` for a model that is not used).
    /// An adapter none of whose modules matches is an error, as is an update whose shape differs
    /// from its layer's; modules that match nothing are listed in the reports.
    pub fn new(
        adapters: Vec<(Arc<Adapter>, Strength)>,
        dit: &[LinearKeys],
        text_encoder: &[LinearKeys],
    ) -> Result<Self, AdapterError> {
        let names = Names::new(dit, text_encoder);
        let mut plan = Self {
            dit: Patches::default(),
            text_encoder: Patches::default(),
            reports: Vec::new(),
        };
        for (adapter, strength) in adapters {
            if let Some(value) = [strength.dit, strength.text_encoder]
                .into_iter()
                .find(|s| !s.is_finite())
            {
                return Err(AdapterError::Strength {
                    path: adapter.path().to_path_buf(),
                    value,
                });
            }
            let targets = adapter.targets_in(&names);
            let mut report = AdapterReport {
                path: adapter.path().to_path_buf(),
                formats: adapter.formats(),
                dora: adapter.has_dora(),
                rank: adapter.rank(),
                alpha: adapter.alpha(),
                strength,
                applied: adapter.modules().len() - targets.unmatched.len(),
                dit_layers: targets.dit,
                text_encoder_layers: targets.text_encoder,
                unmatched: targets.unmatched,
            };
            for (index, module) in adapter.modules().iter().enumerate() {
                let Some(target) = names.find(&module.name) else {
                    continue;
                };
                let (keys, patches, strength) = match target.component {
                    Component::Dit => (dit, &mut plan.dit, strength.dit),
                    Component::TextEncoder => {
                        (text_encoder, &mut plan.text_encoder, strength.text_encoder)
                    }
                };
                let layer = &keys[target.layer];
                let rows = target.rows.clone().unwrap_or(0..layer.shape[0]);
                let shape_error = |expected: Vec<usize>, found: Vec<usize>| AdapterError::Shape {
                    path: adapter.path().to_path_buf(),
                    module: module.name.clone(),
                    target: layer.module.clone(),
                    expected,
                    found,
                };
                let expected = [rows.len(), layer.shape[1]];
                if let Some(found) = module.shape
                    && found != expected
                {
                    return Err(shape_error(expected.to_vec(), found.to_vec()));
                }
                if let Some(bias) = &module.diff_b {
                    if !layer.bias {
                        return Err(shape_error(vec![0], bias.shape.clone()));
                    }
                    if bias.shape != [rows.len()] {
                        return Err(shape_error(vec![rows.len()], bias.shape.clone()));
                    }
                }
                if strength != 0.0 {
                    patches
                        .layers
                        .entry(layer.module.clone())
                        .or_default()
                        .push(Patch {
                            adapter: adapter.clone(),
                            module: index,
                            rows: target.rows.clone(),
                            strength,
                        });
                }
            }
            if report.applied == 0 {
                let first = adapter.modules()[0].name.clone();
                return Err(AdapterError::NoMatch {
                    path: adapter.path().to_path_buf(),
                    count: adapter.modules().len(),
                    suggestion: names
                        .closest(&first)
                        .map(|c| format!("; closest layer name: `{c}`"))
                        .unwrap_or_default(),
                    first,
                });
            }
            report
                .unmatched
                .extend(adapter.ignored_keys().iter().cloned());
            plan.reports.push(report);
        }
        Ok(plan)
    }

    /// The denoiser's patches.
    pub fn dit(&self) -> &Patches {
        &self.dit
    }

    /// The text encoder's patches.
    pub fn text_encoder(&self) -> &Patches {
        &self.text_encoder
    }

    /// One report per adapter, in order.
    pub fn reports(&self) -> &[AdapterReport] {
        &self.reports
    }
}

/// A model with adapters merged, and what it takes to undo them.
#[derive(Debug)]
pub struct Merged<B: Backend, M> {
    /// The model with the updates in its weights.
    pub model: M,
    /// The original values of every parameter the merge changed.
    pub backup: Backup<B>,
}

/// The original values of merged parameters (they stay on the device: restoring reads no file,
/// and costs the memory of the patched layers until dropped).
#[derive(Debug)]
pub struct Backup<B: Backend> {
    saved: HashMap<String, TensorPrimitive<B>>,
}

impl<B: Backend> Backup<B> {
    /// How many parameters it holds.
    pub fn len(&self) -> usize {
        self.saved.len()
    }

    /// Whether the merge changed nothing.
    pub fn is_empty(&self) -> bool {
        self.saved.is_empty()
    }

    /// Puts the original values back into `model` (the model the merge returned).
    pub fn restore<M: Module<B>>(self, model: M) -> M {
        let mut restorer = Restorer {
            saved: self.saved,
            path: Vec::new(),
        };
        model.map(&mut restorer)
    }
}

impl Patches {
    /// Whether no layer is patched.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// How many layers are patched.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Merges the updates into `model`'s weights: for each patched layer, its weight in f32 plus
    /// every update in order (in f32, on the model's device), cast back to the weight's dtype,
    /// as ComfyUI's `calculate_weight` does. A weight kept quantised (GGUF Q8_0 on CubeCL) is
    /// dequantised first and stays a float weight, in the dtype of the model's biases. The
    /// originals, quantised or not, go into the returned [`Backup`].
    /// Shapes were checked by [`Plan::new`] and the adapters' tensors are in memory, so merging
    /// cannot fail half-way.
    pub fn merge<B: Backend, M: Module<B>>(&self, model: M) -> Merged<B, M> {
        let (model, saved) = self.map(model, true);
        Merged {
            model,
            backup: Backup { saved },
        }
    }

    /// [`Patches::merge`] keeping no backup: each original weight is freed as soon as its
    /// patched copy exists, so merging never holds two copies of the model (for models that are
    /// read from the file again rather than restored).
    pub fn apply<B: Backend, M: Module<B>>(&self, model: M) -> M {
        self.map(model, false).0
    }

    fn map<B: Backend, M: Module<B>>(
        &self,
        model: M,
        backup: bool,
    ) -> (M, HashMap<String, TensorPrimitive<B>>) {
        let mut float = FloatDtype(None, String::new());
        model.visit(&mut float);
        let mut merger = Merger {
            patches: self,
            path: Vec::new(),
            saved: HashMap::new(),
            backup,
            float: float.0.unwrap_or(FloatDType::F32),
        };
        let model = model.map(&mut merger);
        (model, merger.saved)
    }
}

struct Merger<'a, B: Backend> {
    patches: &'a Patches,
    path: Vec<String>,
    saved: HashMap<String, TensorPrimitive<B>>,
    backup: bool,
    /// The dtype a patched quantised weight is held in: the model's biases'.
    float: FloatDType,
}

/// The dtype of a model's first float (not quantised) bias: its compute dtype (norm gains may be
/// kept in f32, biases never are).
struct FloatDtype(Option<FloatDType>, String);

impl<B: Backend> ModuleVisitor<B> for FloatDtype {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        name.clone_into(&mut self.1);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.0.is_none()
            && self.1 == "bias"
            && let dtype @ (DType::F64 | DType::F32 | DType::Flex32 | DType::F16 | DType::BF16) =
                param.val().dtype()
        {
            self.0 = Some(FloatDType::from(dtype));
        }
    }
}

impl<B: Backend> Merger<'_, B> {
    /// The patched weight `[in, out]` (Burn's layout) in f32.
    fn weight(patches: &[Patch], weight: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = weight.device();
        let [_, out] = weight.dims();
        let mut w = weight.cast(FloatDType::F32);
        for patch in patches {
            let module = &patch.adapter.modules()[patch.module];
            let Some(delta) = delta::<B>(module, &device) else {
                continue;
            };
            let dora = module.dora_scale.as_ref().map(|p| vector::<B>(p, &device));
            let rows = patch.rows.clone().unwrap_or(0..out);
            let [inp, _] = w.dims();
            let columns = w.clone().slice([0..inp, rows.clone()]);
            let patched = apply(columns, delta.transpose(), module, dora, patch.strength);
            w = w.slice_assign([0..inp, rows], patched);
        }
        w
    }

    /// The patched bias in f32.
    fn bias(patches: &[Patch], bias: Tensor<B, 1>) -> Tensor<B, 1> {
        let device = bias.device();
        let [out] = bias.dims();
        let mut b = bias.cast(FloatDType::F32);
        for patch in patches {
            let module = &patch.adapter.modules()[patch.module];
            let Some(part) = &module.diff_b else {
                continue;
            };
            let rows = patch.rows.clone().unwrap_or(0..out);
            let diff = vector::<B>(part, &device).mul_scalar(patch.strength);
            let patched = b.clone().slice([rows.clone()]) + diff;
            b = b.slice_assign([rows], patched);
        }
        b
    }
}

impl<B: Backend> ModuleMapper<B> for Merger<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some((leaf, parent)) = self.path.split_last() else {
            return param;
        };
        let Some(patches) = self.patches.layers.get(&parent.join(".")) else {
            return param;
        };
        // Only what some patch changes: a weight unless every update is bias-only, a bias only
        // with a `diff_b`.
        let changes = |weight: bool| {
            patches.iter().any(|p| {
                let m = &p.adapter.modules()[p.module];
                if weight {
                    m.shape.is_some()
                } else {
                    m.diff_b.is_some()
                }
            })
        };
        let changed = match (leaf.as_str(), D) {
            ("weight", 2) => changes(true),
            ("bias", 1) => changes(false),
            _ => false,
        };
        if !changed {
            return param;
        }
        let path = self.path.join(".");
        let (id, tensor) = (param.id, param.val());
        // A quantised weight (kept Q8_0: only 2-D linear weights are kept) is dequantised,
        // patched in f32 and then held as a float weight in the model's dtype: the update would
        // not survive requantisation.
        let (base, dtype) = match tensor.dtype() {
            DType::QFloat(_) if D == 2 => {
                let weight = Tensor::<B, 2>::from_primitive(tensor.clone().into_primitive());
                let values = dequantize_kept(weight).into_primitive();
                (Tensor::from_primitive(values), self.float)
            }
            DType::QFloat(_) => (tensor.clone().dequantize(), self.float),
            dtype => (tensor.clone(), FloatDType::from(dtype)),
        };
        let shape = base.shape();
        let patched: Tensor<B, D> = if D == 2 {
            Self::weight(patches, base.reshape(shape.clone())).reshape(shape)
        } else {
            Self::bias(patches, base.reshape(shape.clone())).reshape(shape)
        };
        if self.backup {
            self.saved.insert(path, tensor.into_primitive());
        }
        Param::initialized(id, patched.cast(dtype))
    }
}

struct Restorer<B: Backend> {
    saved: HashMap<String, TensorPrimitive<B>>,
    path: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Restorer<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.saved.remove(&self.path.join(".")) {
            Some(original) => Param::initialized(param.id, Tensor::from_primitive(original)),
            None => param,
        }
    }
}
