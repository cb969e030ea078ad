//! [`WeightFile`]: one open checkpoint (a safetensors file, the shards of an index, a GGUF file,
//! tensors in memory, or synthetic values) behind one interface; tensors are read one at a time
//! and converted from their stored type.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::{Tensor, TensorData, backend::Backend};

use crate::gguf::{self, MetaValue};
use crate::synthetic::synthetic_bytes;
use crate::{StoredDtype, WeightError, Weights, decode_f32, read_config};

/// Where one tensor's bytes are.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub dtype: StoredDtype,
    pub shape: Vec<usize>,
    /// Absolute byte offset in its file (the seed of synthetic values).
    pub offset: u64,
    /// Bytes.
    pub len: usize,
}

/// The element count of `shape`; `None` when it cannot be addressed, also for shapes with a
/// zero dimension whose other dimensions overflow (any product over them, in any order, must fit).
pub(crate) fn numel<T: Copy + TryInto<usize>>(shape: &[T]) -> Option<usize> {
    let mut all = 1usize;
    let mut nonzero = 1usize;
    for &d in shape {
        let d: usize = d.try_into().ok()?;
        all = all.checked_mul(d)?;
        nonzero = nonzero.checked_mul(d.max(1))?;
    }
    Some(all)
}

/// One file of a (possibly sharded) checkpoint, tensors in memory, or generated weights.
#[derive(Debug)]
pub(crate) struct Shard {
    pub path: PathBuf,
    pub bytes: ShardBytes,
}

/// Where a shard's tensor bytes are read from.
#[derive(Debug)]
pub(crate) enum ShardBytes {
    /// An open file, read at each tensor's offset.
    File(Mutex<File>),
    /// Every tensor's bytes, each at its offset ([`WeightFile::from_tensors`]).
    Memory(Vec<u8>),
    /// Random values made on every read ([`WeightFile::synthetic`]).
    Synthetic,
}

/// The container format of a [`WeightFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// safetensors (one file or the shards of an index).
    Safetensors,
    /// GGUF.
    Gguf,
    /// Tensors handed over in memory ([`WeightFile::from_tensors`]).
    Memory,
    /// Generated values ([`WeightFile::synthetic`]).
    Synthetic,
}

/// An open checkpoint: one safetensors file, the shards of a `*.safetensors.index.json`, a
/// GGUF file, or tensors in memory; the headers are parsed, tensors are read on demand.
///
/// Tensors come out as f32 whatever their stored type: F32/F16/BF16/F64, F8_E4M3/F8_E5M2 (times
/// the layer's `scale_weight` / `weight_scale` in ComfyUI's scaled-fp8 files) and the GGUF block
/// types of [`crate::GgmlType::is_supported`].
#[derive(Debug)]
pub struct WeightFile {
    path: PathBuf,
    format: Format,
    shards: Vec<Shard>,
    tensors: HashMap<String, (usize, Stored)>,
    metadata: BTreeMap<String, MetaValue>,
    check_values: bool,
    keep_q8_0: bool,
    /// The largest magnitude of a synthetic checkpoint's values.
    pub(crate) amplitude: f32,
}

impl WeightFile {
    fn single(path: &Path, format: Format, file: File, tensors: Vec<(String, Stored)>) -> Self {
        Self::one_shard(path, format, ShardBytes::File(Mutex::new(file)), tensors)
    }

    /// A checkpoint of one shard whose tensors are `tensors`.
    pub(crate) fn one_shard(
        path: &Path,
        format: Format,
        bytes: ShardBytes,
        tensors: Vec<(String, Stored)>,
    ) -> Self {
        Self {
            path: path.to_path_buf(),
            format,
            shards: vec![Shard {
                path: path.to_path_buf(),
                bytes,
            }],
            tensors: tensors.into_iter().map(|(k, v)| (k, (0, v))).collect(),
            metadata: BTreeMap::new(),
            check_values: true,
            keep_q8_0: false,
            amplitude: crate::synthetic::AMPLITUDE,
        }
    }

    /// Sets whether loading a model from this file checks every value (on by default): NaN or
    /// infinite weights are a [`WeightError::NonFinite`] naming the tensor, and weights beyond
    /// f16's range loaded in f16 a [`WeightError::OutOfRange`], instead of a model that silently
    /// computes garbage. The check is one pass over values already in memory; turning it off
    /// saves that pass for trusted files.
    pub fn with_value_check(mut self, on: bool) -> Self {
        self.check_values = on;
        self
    }

    /// Whether loading checks values (see [`WeightFile::with_value_check`]).
    pub fn checks_values(&self) -> bool {
        self.check_values
    }

    /// Sets whether [`crate::load_module`] keeps linear weights stored as GGUF Q8_0 quantised
    /// (off by default): each becomes a Burn quantised tensor (int8 values, one f32 scale per
    /// block of 32 inputs, 1.125 bytes per weight instead of 2 in bf16), whose matrix products
    /// CubeCL (CUDA, wgpu) computes by dequantising blocks as the GEMM reads them; `value ·
    /// scale` is the dequantised weight exactly. Layers run it through `sakiko_ops::linear`. Only
    /// for CubeCL backends: Flex multiplies such a weight by dequantising it whole at every call.
    pub fn with_q8_0_kept(mut self, on: bool) -> Self {
        self.keep_q8_0 = on;
        self
    }

    /// Whether loading keeps Q8_0 linear weights quantised (see [`WeightFile::with_q8_0_kept`]).
    pub fn keeps_q8_0(&self) -> bool {
        self.keep_q8_0
    }

    /// Opens one safetensors file and validates its header against the file size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        let (file, (tensors, strings)) = crate::safetensors::open(path)?;
        let mut opened = Self::single(path, Format::Safetensors, file, tensors);
        opened.metadata = strings
            .into_iter()
            .map(|(k, v)| (k, MetaValue::String(v)))
            .collect();
        Ok(opened)
    }

    /// Opens a GGUF file: header, metadata and tensor table validated against the file size.
    pub fn open_gguf(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        let header = gguf::open(path)?;
        let mut file = Self::single(path, Format::Gguf, header.file, header.tensors);
        file.metadata = header.metadata;
        Ok(file)
    }

    /// Opens any checkpoint: a sharded one when `path` is its `….index.json`, GGUF when the file
    /// starts with the GGUF magic, safetensors otherwise.
    pub fn open_any(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        if path.to_string_lossy().ends_with(".index.json") {
            return Self::open_index(path);
        }
        let mut magic = [0u8; 4];
        let is_gguf = File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == b"GGUF";
        if is_gguf || path.extension().is_some_and(|e| e == "gguf") {
            Self::open_gguf(path)
        } else {
            Self::open(path)
        }
    }

    /// Opens the weights of a Hugging Face transformers folder: the shards of
    /// `model.safetensors.index.json`, else `model.safetensors`.
    pub fn open_transformers_folder(dir: impl AsRef<Path>) -> Result<Self, WeightError> {
        let dir = dir.as_ref();
        let index = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        if index.exists() {
            Self::open_index(index)
        } else if single.exists() {
            Self::open(single)
        } else {
            Err(WeightError::Io {
                path: single,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the folder has no model.safetensors or model.safetensors.index.json",
                ),
            })
        }
    }

    /// Opens a sharded checkpoint from its index (`model.safetensors.index.json`, whose
    /// `weight_map` names the shard of every tensor; shards are found next to the index).
    pub fn open_index(index: impl AsRef<Path>) -> Result<Self, WeightError> {
        let index = index.as_ref();
        #[derive(serde::Deserialize)]
        struct Index {
            weight_map: HashMap<String, String>,
        }
        let map: Index = read_config(index)?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut names: Vec<&String> = map.weight_map.values().collect();
        names.sort();
        names.dedup();
        let mut shards = Vec::new();
        let mut tensors = HashMap::new();
        for name in names {
            let path = dir.join(name);
            let (file, (found, _)) = crate::safetensors::open(&path)?;
            tensors.extend(found.into_iter().map(|(k, v)| (k, (shards.len(), v))));
            shards.push(Shard {
                path,
                bytes: ShardBytes::File(Mutex::new(file)),
            });
        }
        if let Some(key) = map.weight_map.keys().find(|k| !tensors.contains_key(*k)) {
            return Err(WeightError::Corrupt {
                path: index.to_path_buf(),
                format: "checkpoint index",
                reason: format!("the index lists `{key}`, which its shard does not contain"),
            });
        }
        Ok(Self {
            path: index.to_path_buf(),
            format: Format::Safetensors,
            shards,
            tensors,
            metadata: BTreeMap::new(),
            check_values: true,
            keep_q8_0: false,
            amplitude: crate::synthetic::AMPLITUDE,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The container format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// A metadata value: GGUF's (`general.architecture`, …) or, as strings, a single safetensors
    /// file's `__metadata__` (`ss_network_module`, `lora_adapter_metadata`, …).
    pub fn metadata(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    /// All tensor names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether the file has `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The shape of `key` (PyTorch order, also for GGUF files).
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|(_, s)| s.shape.as_slice())
    }

    /// The stored element type of `key`.
    pub fn dtype(&self, key: &str) -> Option<StoredDtype> {
        self.tensors.get(key).map(|(_, s)| s.dtype)
    }

    /// The stored size of `key` in bytes.
    pub fn stored_bytes(&self, key: &str) -> Option<usize> {
        self.tensors.get(key).map(|(_, s)| s.len)
    }

    /// The first of `prefixes` under which `probe` exists (`""` for none).
    pub fn detect_prefix<'p>(
        &self,
        probe: &str,
        prefixes: &[&'p str],
    ) -> Result<&'p str, WeightError> {
        prefixes
            .iter()
            .copied()
            .find(|p| self.contains(&format!("{p}{probe}")))
            .ok_or_else(|| WeightError::NoPrefix {
                path: self.path.clone(),
                probe: probe.to_owned(),
                prefixes: prefixes.iter().map(|p| (*p).to_owned()).collect(),
            })
    }

    /// A view of the tensors under `prefix`.
    pub fn scope(&self, prefix: impl Into<String>) -> Weights<'_> {
        Weights::new(self, prefix.into())
    }

    fn missing(&self, key: &str) -> WeightError {
        WeightError::Missing {
            path: self.path.clone(),
            key: key.to_owned(),
        }
    }

    /// Every tensor under `prefix` (prefix removed) with its shape, sorted by name; compare with
    /// a model's `tensor_shapes()`.
    pub fn shapes_under(&self, prefix: &str) -> Vec<(String, Vec<usize>)> {
        let mut v: Vec<(String, Vec<usize>)> = self
            .tensors
            .iter()
            .filter_map(|(k, (_, s))| Some((k.strip_prefix(prefix)?.to_owned(), s.shape.clone())))
            .collect();
        v.sort();
        v
    }

    /// The raw bytes of `key`, as stored.
    pub fn read_bytes(&self, key: &str) -> Result<Vec<u8>, WeightError> {
        let (shard, stored) = self.tensors.get(key).ok_or_else(|| self.missing(key))?;
        let shard = &self.shards[*shard];
        let file = match &shard.bytes {
            ShardBytes::File(file) => file,
            ShardBytes::Memory(all) => {
                let start = stored.offset as usize;
                return Ok(all[start..start + stored.len].to_vec());
            }
            ShardBytes::Synthetic => {
                let StoredDtype::Safetensors(dtype) = stored.dtype else {
                    return Err(WeightError::Dtype {
                        path: self.path.clone(),
                        key: key.to_owned(),
                        dtype: stored.dtype,
                    });
                };
                // Offsets are cumulative, so the start identifies the tensor (its seed).
                return Ok(synthetic_bytes(
                    stored.offset as usize,
                    stored.len / 2,
                    dtype,
                    self.amplitude,
                ));
            }
        };
        let mut bytes = vec![0u8; stored.len];
        let io = |source| WeightError::Io {
            path: shard.path.clone(),
            source,
        };
        // A poisoned lock only means another reader panicked; the file handle is still fine.
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        file.seek(SeekFrom::Start(stored.offset)).map_err(io)?;
        file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// The values of `key` converted to f32, with its shape. An fp8 weight is multiplied by its
    /// layer's scale (ComfyUI's `scale_weight`, or `weight_scale` in its newer naming).
    pub fn read_f32(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>), WeightError> {
        let (_, stored) = self.tensors.get(key).ok_or_else(|| self.missing(key))?;
        let scale = if stored.dtype.is_fp8() {
            self.fp8_scale(key)?
        } else {
            None
        };
        let mut values = Vec::with_capacity(stored.shape.iter().product());
        decode_f32(&self.read_bytes(key)?, stored.dtype, &mut values).map_err(|dtype| {
            WeightError::Dtype {
                path: self.path.clone(),
                key: key.to_owned(),
                dtype,
            }
        })?;
        if let Some(scale) = scale {
            values.iter_mut().for_each(|v| *v *= scale);
        }
        Ok((values, stored.shape.clone()))
    }

    /// The scale of the fp8 weight `key`, which [`WeightFile::read_f32`] applies (for callers
    /// that decode stored bytes themselves): `<layer>.scale_weight` or `<layer>.weight_scale` (a
    /// scalar). A checkpoint that marks itself as scaled (a `scaled_fp8` tensor, or a
    /// `<layer>.comfy_quant` entry) must have one for each fp8 weight; plain fp8 casts have none.
    pub fn fp8_scale(&self, key: &str) -> Result<Option<f32>, WeightError> {
        let error = |reason: String| WeightError::Scale {
            path: self.path.clone(),
            key: key.to_owned(),
            reason,
        };
        let layer = key.strip_suffix("weight").unwrap_or(key);
        let found = ["scale_weight", "weight_scale"]
            .iter()
            .map(|s| format!("{layer}{s}"))
            .find(|k| self.contains(k));
        let Some(scale_key) = found else {
            let scaled = self
                .keys()
                .any(|k| k == "scaled_fp8" || k.ends_with(".scaled_fp8"))
                || self.contains(&format!("{layer}comfy_quant"));
            return if scaled {
                Err(error(format!(
                    "this is a scaled-fp8 checkpoint, but `{layer}scale_weight` is missing"
                )))
            } else {
                Ok(None)
            };
        };
        let (values, shape) = self.read_f32(&scale_key)?;
        match values[..] {
            [s] if s.is_finite() => Ok(Some(s)),
            _ => Err(error(format!(
                "its scale `{scale_key}` has shape {shape:?}; only one scale per tensor is supported"
            ))),
        }
    }

    /// Loads `key` as an f32 tensor of its stored shape, which must have rank `D`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        key: &str,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        let (values, shape) = self.read_f32(key)?;
        let dims: [usize; D] = shape.clone().try_into().map_err(|_| WeightError::Rank {
            path: self.path.clone(),
            key: key.to_owned(),
            expected: D,
            found: shape,
        })?;
        Ok(Tensor::from_data(TensorData::new(values, dims), device))
    }
}
