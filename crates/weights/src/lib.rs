//! # sakiko-weights
//!
//! The one place where sakiko-lumina reads weight files: safetensors headers are parsed up front,
//! tensors are read one at a time with positioned reads (a 5 GB checkpoint is never held whole in
//! memory), F32/F16/BF16/F64 are converted to f32, key prefixes (`vae.`, `model.diffusion_model.`,
//! …) are detected, and every failure names the file, the key and both shapes.
//!
//! ```no_run
//! use burn::backend::Flex;
//! use sakiko_weights::WeightFile;
//!
//! let file = WeightFile::open("ae.safetensors")?;
//! let prefix = file.detect_prefix("decoder.conv_in.weight", &["", "vae.", "first_stage_model."])?;
//! let weights = file.scope(prefix);
//! let w = weights.tensor::<Flex, 4>("decoder.conv_in.weight", [512, 16, 3, 3], &Default::default())?;
//! # Ok::<(), sakiko_weights::WeightError>(())
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};
use safetensors::Dtype;
use safetensors::tensor::{Metadata, TensorInfo};

/// What can go wrong reading weights.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file, or is truncated.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("{path}: missing tensor `{key}`")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The full key looked up.
        key: String,
    },
    /// A tensor has another shape than the model expects.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// The full key.
        key: String,
        /// The shape the model needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor has another number of dimensions than the caller expects.
    #[error("{path}: tensor `{key}` has shape {found:?}, expected {expected} dimensions")]
    Rank {
        /// The file.
        path: PathBuf,
        /// The full key.
        key: String,
        /// The rank expected.
        expected: usize,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a type that cannot be converted to float.
    #[error("{path}: tensor `{key}` is {dtype:?}; supported: F32, F16, BF16, F64")]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The full key.
        key: String,
        /// Its stored type.
        dtype: Dtype,
    },
    /// A `config.json` could not be read or parsed.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// None of the candidate prefixes leads to a tensor the model needs.
    #[error(
        "{path}: no tensor `{probe}` under any of the prefixes {prefixes:?}; is this the right file?"
    )]
    NoPrefix {
        /// The file.
        path: PathBuf,
        /// The key looked for.
        probe: String,
        /// The prefixes tried.
        prefixes: Vec<String>,
    },
}

/// Reads a JSON configuration file (diffusers' `config.json`) into `T`.
pub fn read_config<T: serde::de::DeserializeOwned>(
    path: impl AsRef<Path>,
) -> Result<T, WeightError> {
    let path = path.as_ref();
    let error = |reason: String| WeightError::Config {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| error(e.to_string()))
}

/// The files of one model component in a diffusers folder: `config.json` and
/// `diffusion_pytorch_model.safetensors` (or the index of its shards,
/// `diffusion_pytorch_model.safetensors.index.json`), in `dir` itself or in its `subfolder` (as in
/// a pipeline folder: `vae/`, `transformer/`). `None` when `dir` is not a directory. Open the
/// weights with [`WeightFile::open_any`].
pub fn diffusers_component(dir: &Path, subfolder: &str) -> Option<(PathBuf, PathBuf)> {
    if !dir.is_dir() {
        return None;
    }
    let nested = dir.join(subfolder);
    let root = if nested.join("config.json").exists() {
        nested
    } else {
        dir.to_path_buf()
    };
    let single = root.join("diffusion_pytorch_model.safetensors");
    let index = root.join("diffusion_pytorch_model.safetensors.index.json");
    let weights = if !single.exists() && index.exists() {
        index
    } else {
        single
    };
    Some((root.join("config.json"), weights))
}

/// One safetensors file of a (possibly sharded) checkpoint, or generated weights.
#[derive(Debug)]
struct Shard {
    path: PathBuf,
    source: Source,
}

/// Where a shard's tensor bytes come from.
#[derive(Debug)]
enum Source {
    /// A safetensors file whose tensor data starts at `data_start`.
    File { file: Mutex<File>, data_start: u64 },
    /// Random values made on every read (see [`WeightFile::synthetic`]): real shapes without
    /// holding or writing a checkpoint.
    Synthetic,
}

impl Shard {
    /// Opens `path` and validates its header against the file size.
    fn open(path: &Path) -> Result<(Self, HashMap<String, TensorInfo>), WeightError> {
        let path = path.to_path_buf();
        let io = |source| WeightError::Io {
            path: path.clone(),
            source,
        };
        let corrupt = |reason: String| WeightError::Corrupt {
            path: path.clone(),
            reason,
        };
        let mut file = File::open(&path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut len_bytes = [0u8; 8];
        file.read_exact(&mut len_bytes)
            .map_err(|_| corrupt(format!("{file_len} bytes is too short for a header")))?;
        let header_len = u64::from_le_bytes(len_bytes);
        if header_len > 100 << 20 || 8 + header_len > file_len {
            return Err(corrupt(format!(
                "header length {header_len} does not fit a {file_len}-byte file"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let metadata: Metadata = serde_json::from_slice(&header)
            .map_err(|e| corrupt(format!("unreadable header: {e}")))?;
        let data_start = 8 + header_len;
        let data_len = file_len - data_start;
        let mut tensors = HashMap::new();
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            let numel: usize = info.shape.iter().product();
            let expected = numel * info.dtype.bitsize() / 8;
            if end < start || end - start != expected {
                return Err(corrupt(format!(
                    "tensor `{name}` spans {} bytes, its shape {:?} of {:?} needs {expected}",
                    end.saturating_sub(start),
                    info.shape,
                    info.dtype
                )));
            }
            if end as u64 > data_len {
                return Err(corrupt(format!(
                    "truncated: tensor `{name}` ends at byte {end} of the data, the file holds {data_len}"
                )));
            }
            tensors.insert(name, info.clone());
        }
        Ok((
            Self {
                path,
                source: Source::File {
                    file: Mutex::new(file),
                    data_start,
                },
            },
            tensors,
        ))
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`; `None` elsewhere), for the
/// loading and decoding memory figures the examples report.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Writes a safetensors file of random half-precision values (`F16` or `BF16`) with the given
/// names and shapes, streaming tensor by tensor: synthetic checkpoints with real shapes, for
/// measuring loading time and memory without the real weights. Values are small (|v| ≤ 0.02).
pub fn write_synthetic(
    path: impl AsRef<Path>,
    tensors: &[(String, Vec<usize>)],
    dtype: Dtype,
) -> Result<(), WeightError> {
    use std::io::{BufWriter, Write};
    let path = path.as_ref();
    let io = |source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    };
    if !matches!(dtype, Dtype::F16 | Dtype::BF16) {
        return Err(WeightError::Dtype {
            path: path.to_path_buf(),
            key: String::new(),
            dtype,
        });
    }
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in tensors {
        let bytes = shape.iter().product::<usize>() * 2;
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": format!("{dtype:?}"), "shape": shape, "data_offsets": [offset, offset + bytes] }),
        );
        offset += bytes;
    }
    let mut json = serde_json::Value::Object(header).to_string().into_bytes();
    // Pad the header so the data is 8-byte aligned, as safetensors writers do.
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    out.write_all(&(json.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(&json).map_err(io)?;
    let mut offset = 0;
    for (_, shape) in tensors {
        let bytes = synthetic_bytes(offset, shape.iter().product(), dtype);
        out.write_all(&bytes).map_err(io)?;
        offset += bytes.len();
    }
    out.flush().map_err(io)
}

/// The little-endian bytes of `n` random values (|v| ≤ 0.02) in `dtype` (F16 or BF16) for the
/// tensor at data offset `offset` of a synthetic checkpoint; the same for the same arguments, so
/// [`write_synthetic`] files and [`WeightFile::synthetic`] hold the same values.
fn synthetic_bytes(offset: usize, n: usize, dtype: Dtype) -> Vec<u8> {
    let mut state = (offset as u32).wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut bytes = Vec::with_capacity(n * dtype.bitsize() / 8);
    for _ in 0..n {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let v = ((state >> 9) as f32 / (1 << 23) as f32 - 0.5) * 0.04;
        match dtype {
            Dtype::F16 => bytes.extend(half::f16::from_f32(v).to_le_bytes()),
            _ => bytes.extend(half::bf16::from_f32(v).to_le_bytes()),
        }
    }
    bytes
}

/// An open checkpoint: one safetensors file, or the shards of a `*.safetensors.index.json`; the
/// headers are parsed, tensors are read on demand.
#[derive(Debug)]
pub struct WeightFile {
    path: PathBuf,
    shards: Vec<Shard>,
    tensors: HashMap<String, (usize, TensorInfo)>,
}

impl WeightFile {
    /// Opens one safetensors file and validates its header against the file size.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let (shard, tensors) = Shard::open(path.as_ref())?;
        Ok(Self {
            path: path.as_ref().to_path_buf(),
            shards: vec![shard],
            tensors: tensors.into_iter().map(|(k, v)| (k, (0, v))).collect(),
        })
    }

    /// A checkpoint of random values (|v| ≤ 0.02, stored as `dtype`: F16 or BF16) with the
    /// given names and shapes, made on each read and never held whole: models of real sizes for
    /// benchmarks (`sakiko bench`) without files or downloads. `name` stands in for the path in
    /// messages.
    pub fn synthetic(
        name: impl Into<PathBuf>,
        tensors: &[(String, Vec<usize>)],
        dtype: Dtype,
    ) -> Result<Self, WeightError> {
        let path = name.into();
        if !matches!(dtype, Dtype::F16 | Dtype::BF16) {
            return Err(WeightError::Dtype {
                path,
                key: String::new(),
                dtype,
            });
        }
        let mut offset = 0;
        let tensors = tensors
            .iter()
            .map(|(key, shape)| {
                let bytes = shape.iter().product::<usize>() * dtype.bitsize() / 8;
                let info = TensorInfo {
                    dtype,
                    shape: shape.clone(),
                    data_offsets: (offset, offset + bytes),
                };
                offset += bytes;
                (key.clone(), (0, info))
            })
            .collect();
        Ok(Self {
            path: path.clone(),
            shards: vec![Shard {
                path,
                source: Source::Synthetic,
            }],
            tensors,
        })
    }

    /// Opens a safetensors file, or a sharded checkpoint when `path` is its `….index.json`.
    pub fn open_any(path: impl AsRef<Path>) -> Result<Self, WeightError> {
        let path = path.as_ref();
        if path.to_string_lossy().ends_with(".index.json") {
            Self::open_index(path)
        } else {
            Self::open(path)
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
            let (shard, found) = Shard::open(&dir.join(name))?;
            tensors.extend(found.into_iter().map(|(k, v)| (k, (shards.len(), v))));
            shards.push(shard);
        }
        if let Some(key) = map.weight_map.keys().find(|k| !tensors.contains_key(*k)) {
            return Err(WeightError::Corrupt {
                path: index.to_path_buf(),
                reason: format!("the index lists `{key}`, which its shard does not contain"),
            });
        }
        Ok(Self {
            path: index.to_path_buf(),
            shards,
            tensors,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All tensor names.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether the file has `key`.
    pub fn contains(&self, key: &str) -> bool {
        self.tensors.contains_key(key)
    }

    /// The stored shape of `key`.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|(_, i)| i.shape.as_slice())
    }

    /// The stored element type of `key`.
    pub fn dtype(&self, key: &str) -> Option<Dtype> {
        self.tensors.get(key).map(|(_, i)| i.dtype)
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
        Weights {
            file: self,
            prefix: prefix.into(),
        }
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
            .filter_map(|(k, (_, info))| {
                Some((k.strip_prefix(prefix)?.to_owned(), info.shape.clone()))
            })
            .collect();
        v.sort();
        v
    }

    /// The raw bytes of `key`, as stored.
    pub fn read_bytes(&self, key: &str) -> Result<Vec<u8>, WeightError> {
        let (shard, info) = self.tensors.get(key).ok_or_else(|| self.missing(key))?;
        let shard = &self.shards[*shard];
        let (start, end) = info.data_offsets;
        let (file, data_start) = match &shard.source {
            Source::File { file, data_start } => (file, data_start),
            Source::Synthetic => {
                let numel = info.shape.iter().product();
                // Offsets are cumulative, so the start identifies the tensor (its seed).
                return Ok(synthetic_bytes(start, numel, info.dtype));
            }
        };
        let mut bytes = vec![0u8; end - start];
        let io = |source| WeightError::Io {
            path: shard.path.clone(),
            source,
        };
        // A poisoned lock only means another reader panicked; the file handle is still fine.
        let mut file = file.lock().unwrap_or_else(|e| e.into_inner());
        file.seek(SeekFrom::Start(data_start + start as u64))
            .map_err(io)?;
        file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// The values of `key` converted to f32, with its shape.
    pub fn read_f32(&self, key: &str) -> Result<(Vec<f32>, Vec<usize>), WeightError> {
        let (_, info) = self.tensors.get(key).ok_or_else(|| self.missing(key))?;
        let mut values = Vec::with_capacity(info.shape.iter().product());
        decode_f32(&self.read_bytes(key)?, info.dtype, &mut values).map_err(|dtype| {
            WeightError::Dtype {
                path: self.path.clone(),
                key: key.to_owned(),
                dtype,
            }
        })?;
        Ok((values, info.shape.clone()))
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

/// What a model checkpoint holds, read from its header alone (no tensor is loaded): the key prefix
/// it was found under, its key naming and its configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected<L, C> {
    /// The key prefix (one of the model's known prefixes).
    pub prefix: &'static str,
    /// The key naming.
    pub layout: L,
    /// The configuration, detected from the tensor shapes.
    pub config: C,
}

/// Appends little-endian `bytes` of `dtype` (F32, F16, BF16 or F64) to `out` as f32; any other
/// type is returned as the error.
pub fn decode_f32(bytes: &[u8], dtype: Dtype, out: &mut Vec<f32>) -> Result<(), Dtype> {
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        Dtype::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        Dtype::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
        ),
        Dtype::F64 => out.extend(
            bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])) as f32),
        ),
        other => return Err(other),
    }
    Ok(())
}

/// The tensors of a [`WeightFile`] under a key prefix; nested scopes append to it.
#[derive(Debug, Clone)]
pub struct Weights<'a> {
    file: &'a WeightFile,
    prefix: String,
}

impl<'a> Weights<'a> {
    /// The file.
    pub fn file(&self) -> &'a WeightFile {
        self.file
    }

    /// The full key of `name` in this scope.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A nested scope: `scope("decoder")` then `scope("conv_in")` reads `decoder.conv_in.*`.
    pub fn scope(&self, name: &str) -> Weights<'a> {
        Weights {
            file: self.file,
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// Whether `name` exists in this scope.
    pub fn contains(&self, name: &str) -> bool {
        self.file.contains(&self.key(name))
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Option<&'a [usize]> {
        self.file.shape(&self.key(name))
    }

    /// Loads `name` as an f32 tensor of exactly `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        self.tensor_reshaped(name, shape, &shape, device)
    }

    /// Loads `name`, stored with shape `stored` (checked), as a tensor of `shape` with the same
    /// number of elements (a `[C, C, 1, 1]` convolution kernel used as a `[C, C]` matrix).
    pub fn tensor_reshaped<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        stored: &[usize],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        self.tensor_reshaped_as(name, shape, stored, DType::F32, device)
    }

    /// [`Weights::tensor`] in `dtype` (e.g. `DType::BF16` to keep bf16 weights at half the
    /// memory of f32; only one tensor is ever held in f32 while converting).
    pub fn tensor_as<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        self.tensor_reshaped_as(name, shape, &shape, dtype, device)
    }

    /// [`Weights::tensor_reshaped`] in `dtype`.
    pub fn tensor_reshaped_as<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        stored: &[usize],
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        let key = self.key(name);
        let (values, found) = self.file.read_f32(&key)?;
        if found != stored {
            return Err(WeightError::Shape {
                path: self.file.path.clone(),
                key,
                expected: stored.to_vec(),
                found,
            });
        }
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            (device, dtype),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use safetensors::tensor::TensorView;

    fn write(dir: &Path, name: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(k, d, s, b)| ((*k).to_owned(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let path = dir.join(name);
        safetensors::serialize_to_file(views, None, &path).unwrap();
        path
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("sakiko-weights-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reads_every_float_dtype() {
        let d = dir();
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        let bf16s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        let f64s: Vec<u8> = [1.5f64, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let path = write(
            &d,
            "dtypes.safetensors",
            &[
                ("vae.a", Dtype::F32, vec![2], f32s),
                ("vae.b", Dtype::F16, vec![1, 2], f16s),
                ("vae.c", Dtype::BF16, vec![2, 1], bf16s),
                ("vae.d", Dtype::F64, vec![2], f64s),
                ("vae.e", Dtype::U8, vec![2], vec![1, 2]),
            ],
        );
        let file = WeightFile::open(&path).unwrap();
        assert_eq!(file.detect_prefix("a", &["", "vae."]).unwrap(), "vae.");
        let w = file.scope("vae.");
        for (name, shape) in [
            ("a", vec![2]),
            ("b", vec![1, 2]),
            ("c", vec![2, 1]),
            ("d", vec![2]),
        ] {
            assert_eq!(
                file.read_f32(&w.key(name)).unwrap(),
                (vec![1.5, -2.0], shape)
            );
        }
        let t: Tensor<Flex, 2> = w.tensor("b", [1, 2], &Default::default()).unwrap();
        let stored: Tensor<Flex, 2> = file.tensor("vae.c", &Default::default()).unwrap();
        assert_eq!(stored.dims(), [2, 1]);
        assert!(matches!(
            file.tensor::<Flex, 3>("vae.c", &Default::default()),
            Err(WeightError::Rank { expected: 3, .. })
        ));
        assert_eq!(t.into_data().to_vec::<f32>().unwrap(), [1.5, -2.0]);
        assert!(matches!(
            file.read_f32("vae.e"),
            Err(WeightError::Dtype {
                dtype: Dtype::U8,
                ..
            })
        ));
        assert_eq!(file.read_bytes("vae.e").unwrap(), [1, 2]);
    }

    #[test]
    fn errors_name_file_key_and_shapes() {
        let d = dir();
        let bytes: Vec<u8> = (0..6).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let path = write(
            &d,
            "shapes.safetensors",
            &[("w", Dtype::F32, vec![2, 3], bytes)],
        );
        let file = WeightFile::open(&path).unwrap();
        let w = file.scope("");
        let err = w
            .tensor::<Flex, 2>("w", [3, 2], &Default::default())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: tensor `w` has shape [2, 3], expected [3, 2]",
                path.display()
            )
        );
        let err = w
            .tensor::<Flex, 1>("x", [1], &Default::default())
            .unwrap_err();
        assert!(matches!(err, WeightError::Missing { ref key, .. } if key == "x"));
        assert!(matches!(
            file.detect_prefix("q", &["", "vae."]),
            Err(WeightError::NoPrefix { .. })
        ));
    }

    #[test]
    fn synthetic_files_are_valid() {
        let path = dir().join("synthetic.safetensors");
        let tensors = vec![("a".to_owned(), vec![3, 5]), ("b.c".to_owned(), vec![7])];
        write_synthetic(&path, &tensors, Dtype::BF16).unwrap();
        let file = WeightFile::open(&path).unwrap();
        assert_eq!(file.dtype("a"), Some(Dtype::BF16));
        let (values, shape) = file.read_f32("b.c").unwrap();
        assert_eq!(shape, [7]);
        assert!(values.iter().all(|v| v.abs() <= 0.02) && values.iter().any(|&v| v != 0.0));
        assert!(matches!(
            write_synthetic(&path, &tensors, Dtype::F32),
            Err(WeightError::Dtype { .. })
        ));
    }

    #[test]
    fn synthetic_checkpoints_equal_written_ones_without_a_file() {
        let path = dir().join("synthetic_same.safetensors");
        let tensors = vec![("a".to_owned(), vec![3, 5]), ("b".to_owned(), vec![9])];
        write_synthetic(&path, &tensors, Dtype::F16).unwrap();
        let written = WeightFile::open(&path).unwrap();
        let memory = WeightFile::synthetic("<bench>", &tensors, Dtype::F16).unwrap();
        for key in ["a", "b"] {
            assert_eq!(memory.shape(key), written.shape(key));
            assert_eq!(
                memory.read_bytes(key).unwrap(),
                written.read_bytes(key).unwrap()
            );
        }
        assert_ne!(
            memory.read_f32("a").unwrap().0[..9],
            memory.read_f32("b").unwrap().0[..]
        );
        assert!(matches!(
            memory.read_bytes("c"),
            Err(WeightError::Missing { .. })
        ));
        assert!(matches!(
            WeightFile::synthetic("<bench>", &tensors, Dtype::F32),
            Err(WeightError::Dtype { .. })
        ));
    }

    #[test]
    fn sharded_checkpoints_read_through_their_index() {
        let d = dir().join("sharded");
        std::fs::create_dir_all(&d).unwrap();
        let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [3.0f32].iter().flat_map(|v| v.to_le_bytes()).collect();
        write(
            &d,
            "model-00001-of-00002.safetensors",
            &[("x.a", Dtype::F32, vec![2], a)],
        );
        write(
            &d,
            "model-00002-of-00002.safetensors",
            &[("x.b", Dtype::F32, vec![1], b)],
        );
        let index = d.join("model.safetensors.index.json");
        std::fs::write(
            &index,
            r#"{"metadata": {}, "weight_map": {"x.a": "model-00001-of-00002.safetensors", "x.b": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        let file = WeightFile::open_index(&index).unwrap();
        assert_eq!(file.read_f32("x.a").unwrap().0, [1.0, 2.0]);
        assert_eq!(file.read_f32("x.b").unwrap().0, [3.0]);
        std::fs::write(
            &index,
            r#"{"weight_map": {"x.c": "model-00002-of-00002.safetensors"}}"#,
        )
        .unwrap();
        assert!(matches!(
            WeightFile::open_index(&index),
            Err(WeightError::Corrupt { .. })
        ));
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        let d = dir();
        let bytes: Vec<u8> = (0..64).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let path = write(
            &d,
            "full.safetensors",
            &[("w", Dtype::F32, vec![64], bytes)],
        );
        let full = std::fs::read(&path).unwrap();
        let cut = d.join("cut.safetensors");
        std::fs::write(&cut, &full[..full.len() - 10]).unwrap();
        let err = WeightFile::open(&cut).unwrap_err();
        assert!(matches!(err, WeightError::Corrupt { .. }));
        assert!(err.to_string().contains("truncated"), "{err}");
        for garbage in [&b"abc"[..], &[255u8; 64][..], b"\x08\0\0\0\0\0\0\0not json"] {
            let g = d.join("garbage.safetensors");
            std::fs::write(&g, garbage).unwrap();
            assert!(
                matches!(WeightFile::open(&g), Err(WeightError::Corrupt { .. })),
                "{garbage:?}"
            );
        }
        assert!(matches!(
            WeightFile::open(d.join("absent.safetensors")),
            Err(WeightError::Io { .. })
        ));
    }
}
