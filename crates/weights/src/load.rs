//! Filling a Burn module built by its `Config::init` from a checkpoint: every parameter is looked
//! up by its module path (`layers.0.attention.qkv.weight`), which the model translates into how
//! the file stores it, read once, converted to its load dtype and put on the parameter's device.
//! Parameters stay lazy until then, so `init` never allocates random weights that loading
//! replaces.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::quantization::{QuantLevel, QuantParam, QuantScheme, QuantStore, QuantValue};
use burn::tensor::{FloatDType, Tensor, TensorData, backend::Backend};

use crate::quants::{self, GgmlType};
use crate::{StoredDtype, WeightError, Weights};

/// Where a parameter's values are in a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSource {
    /// The stored tensors (keys within the scope), concatenated along the first stored
    /// dimension when there are several (diffusers' separate `to_q`, `to_k`, `to_v`).
    pub keys: Vec<String>,
    /// Stored `[out, in]` (PyTorch's linear layout) for a `[in, out]` parameter (Burn's).
    pub transpose: bool,
    /// The stored shape when it differs from the parameter's in layout only (a `[C, C, 1, 1]`
    /// convolution kernel used as a `[C, C]` matrix); `None`: the parameter's (transposed) shape.
    pub stored_shape: Option<Vec<usize>>,
    /// The dtype the parameter is kept in (norm gains stay f32 in half-precision models).
    pub dtype: FloatDType,
}

impl ParamSource {
    /// One tensor stored as the parameter is.
    pub fn tensor(key: impl Into<String>, dtype: FloatDType) -> Self {
        Self {
            keys: vec![key.into()],
            transpose: false,
            stored_shape: None,
            dtype,
        }
    }

    /// A linear weight stored `[out, in]`.
    pub fn linear_weight(key: impl Into<String>, dtype: FloatDType) -> Self {
        Self {
            transpose: true,
            ..Self::tensor(key, dtype)
        }
    }
}

/// A parameter's values as read.
enum Read {
    /// Values to convert to the parameter's load dtype.
    Float(TensorData, FloatDType),
    /// Q8_0 blocks as a Burn quantised tensor stored `[out, in]`; the parameter is its
    /// transposed view ([`crate::WeightFile::with_q8_0_kept`]).
    Q8_0(TensorData),
}

/// GGUF Q8_0 in Burn's terms: int8 values (Q8F: a block may hold −128), one f32 scale per 32
/// values along the last (`in`) dimension, packed four to a `u32` (little-endian, so the bytes
/// are the int8 values in order), as CubeCL stores quantised tensors.
fn q8_0_scheme() -> QuantScheme {
    QuantScheme::default()
        .with_value(QuantValue::Q8F)
        .with_store(QuantStore::PackedU32(0))
        .with_param(QuantParam::F32)
        .with_level(QuantLevel::block([1, 32]))
}

/// The module mapper: tracks the path, reads each parameter, keeps the first error.
struct Loader<'a, 'w, F> {
    weights: &'a Weights<'w>,
    resolve: F,
    path: Vec<String>,
    error: Option<WeightError>,
}

impl<F: FnMut(&str, &[usize]) -> Result<ParamSource, WeightError>> Loader<'_, '_, F> {
    fn read(&mut self, shape: &[usize]) -> Result<Read, WeightError> {
        let path = self.path.join(".");
        let source = (self.resolve)(&path, shape)?;
        let file = self.weights.file();
        let mut stored: Vec<usize> = match (&source.stored_shape, source.transpose) {
            (Some(s), _) => s.clone(),
            (None, true) => shape.iter().rev().copied().collect(),
            (None, false) => shape.to_vec(),
        };
        if let Some(data) = self.q8_0(&source, &stored)? {
            return Ok(Read::Q8_0(data));
        }
        let rows: Vec<usize> = source
            .keys
            .iter()
            .map(|k| {
                self.weights
                    .shape(k)
                    .and_then(|s| s.first().copied())
                    .unwrap_or(0)
            })
            .collect();
        let mut values = Vec::with_capacity(shape.iter().product());
        for (key, &n) in source.keys.iter().zip(&rows) {
            // Each part has the parameter's stored shape with its own share of the rows.
            if source.keys.len() > 1 {
                stored[0] = n;
            }
            let full = self.weights.key(key);
            let (part, found) = file.read_f32(&full)?;
            if found != stored {
                return Err(WeightError::Shape {
                    path: file.path().to_path_buf(),
                    key: full,
                    expected: stored,
                    found,
                });
            }
            values.extend(part);
        }
        if source.keys.len() > 1 {
            stored[0] = rows.iter().sum();
        }
        if values.len() != shape.iter().product::<usize>() {
            return Err(WeightError::Shape {
                path: file.path().to_path_buf(),
                key: self.weights.key(&source.keys.join(" + ")),
                expected: shape.to_vec(),
                found: stored,
            });
        }
        if file.checks_values() {
            check_values(&values, source.dtype, || {
                (
                    file.path().to_path_buf(),
                    self.weights.key(&source.keys.join(" + ")),
                )
            })?;
        }
        if source.transpose {
            // [out, in] → [in, out], row-major: Burn multiplies contiguous weights correctly
            // on every backend (a transposed view trips its fusion; see sakiko-ops).
            let (out, inp) = (stored[0], values.len() / stored[0].max(1));
            let mut t = vec![0.0f32; values.len()];
            for o in 0..out {
                for i in 0..inp {
                    t[i * out + o] = values[o * inp + i];
                }
            }
            values = t;
        }
        Ok(Read::Float(
            TensorData::new(values, shape.to_vec()),
            source.dtype,
        ))
    }

    /// A linear weight stored as one Q8_0 tensor, kept quantised when the file asks for it.
    fn q8_0(
        &self,
        source: &ParamSource,
        stored: &[usize],
    ) -> Result<Option<TensorData>, WeightError> {
        let file = self.weights.file();
        let [key] = &source.keys[..] else {
            return Ok(None);
        };
        let full = self.weights.key(key);
        if !file.keeps_q8_0()
            || !source.transpose
            || source.stored_shape.is_some()
            || stored.len() != 2
            || file.dtype(&full) != Some(StoredDtype::Gguf(GgmlType::Q8_0))
        {
            return Ok(None);
        }
        let found = file.shape(&full).unwrap_or_default();
        if found != stored {
            return Err(WeightError::Shape {
                path: file.path().to_path_buf(),
                key: full,
                expected: stored.to_vec(),
                found: found.to_vec(),
            });
        }
        let (values, scales) = quants::q8_0_blocks(&file.read_bytes(&full)?);
        if file.checks_values() {
            check_values(&scales, FloatDType::F32, || {
                (file.path().to_path_buf(), full.clone())
            })?;
        }
        Ok(Some(TensorData::quantized(
            values,
            stored.to_vec(),
            q8_0_scheme(),
            &scales,
        )))
    }
}

/// The load-time value check: no NaN or infinity, and nothing an f16 parameter cannot hold.
fn check_values(
    values: &[f32],
    dtype: FloatDType,
    name: impl Fn() -> (std::path::PathBuf, String),
) -> Result<(), WeightError> {
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        let (path, key) = name();
        return Err(WeightError::NonFinite {
            path,
            key,
            count: values[index..].iter().filter(|v| !v.is_finite()).count(),
            index,
            value: values[index],
        });
    }
    if dtype == FloatDType::F16 {
        let max = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if max > f32::from(half::f16::MAX) {
            let (path, key) = name();
            return Err(WeightError::OutOfRange {
                path,
                key,
                value: max,
            });
        }
    }
    Ok(())
}

impl<B: Backend, F: FnMut(&str, &[usize]) -> Result<ParamSource, WeightError>> ModuleMapper<B>
    for Loader<'_, '_, F>
{
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.error.is_some() {
            return param;
        }
        let shape = param.lazy_shape().to_vec();
        match self.read(&shape) {
            Ok(Read::Float(data, dtype)) => {
                let tensor = Tensor::from_data(data, (&param.lazy_device(), dtype.into()));
                Param::initialized(param.id, tensor)
            }
            Ok(Read::Q8_0(data)) => {
                // Blocks run along `in`, the GEMM's K for the `[in, out]` view.
                let tensor = Tensor::<B, D>::from_data(data, &param.lazy_device()).transpose();
                Param::initialized(param.id, tensor)
            }
            Err(e) => {
                self.error = Some(e);
                param
            }
        }
    }
}

/// The float values of a linear weight that [`load_module`] kept quantised (GGUF Q8_0 on CubeCL):
/// the stored `[out, in]` blocks dequantised, then viewed `[in, out]` as the parameter is.
/// (Burn 0.21's `dequantize` on the transposed view itself reads the blocks as if stored in
/// the view's order: 0.4 off on ±1 weights; sakiko-adapters' tests show both.)
///
/// # Shapes
/// `weight`: `[in, out]`, returns `[in, out]` in the backend's default float dtype.
pub fn dequantize_kept<B: Backend>(weight: Tensor<B, 2>) -> Tensor<B, 2> {
    weight.transpose().dequantize().transpose()
}

/// Fills every float parameter of `module` from `weights`: `resolve` maps each module path
/// (`layers.0.feed_forward.w1.weight`) and parameter shape to where the checkpoint stores it. Shapes are checked
/// (the error names file, key and both shapes); the first failure is returned.
pub fn load_module<B, M, F>(module: M, weights: &Weights<'_>, resolve: F) -> Result<M, WeightError>
where
    B: Backend,
    M: Module<B>,
    F: FnMut(&str, &[usize]) -> Result<ParamSource, WeightError>,
{
    let mut loader = Loader {
        weights,
        resolve,
        path: Vec::new(),
        error: None,
    };
    let module = module.map(&mut loader);
    match loader.error {
        Some(e) => Err(e),
        None => Ok(module),
    }
}
