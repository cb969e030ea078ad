//! Synthetic checkpoints: random half-precision values with real names and shapes, written to a
//! file or made on each read, for measuring loading and speed without the real weights.

use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::Dtype;

use crate::file::{Format, ShardBytes, Stored};
use crate::{StoredDtype, WeightError, WeightFile};

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
            dtype: StoredDtype::Safetensors(dtype),
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
        let bytes = synthetic_bytes(offset, shape.iter().product(), dtype, AMPLITUDE);
        out.write_all(&bytes).map_err(io)?;
        offset += bytes.len();
    }
    out.flush().map_err(io)
}

/// The default largest magnitude of synthetic values.
pub(crate) const AMPLITUDE: f32 = 0.02;

/// The little-endian bytes of `n` random values (|v| ≤ `amplitude`) in `dtype` (F16 or BF16)
/// for the tensor at data offset `offset` of a synthetic checkpoint; the same for the same
/// arguments, so [`write_synthetic`] files and [`WeightFile::synthetic`] hold the same values.
pub(crate) fn synthetic_bytes(offset: usize, n: usize, dtype: Dtype, amplitude: f32) -> Vec<u8> {
    let mut state = (offset as u32).wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut bytes = Vec::with_capacity(n * dtype.bitsize() / 8);
    for _ in 0..n {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        let v = ((state >> 9) as f32 / (1 << 23) as f32 - 0.5) * 2.0 * amplitude;
        match dtype {
            Dtype::F16 => bytes.extend(half::f16::from_f32(v).to_le_bytes()),
            _ => bytes.extend(half::bf16::from_f32(v).to_le_bytes()),
        }
    }
    bytes
}

impl WeightFile {
    /// A checkpoint of random values (|v| ≤ 0.02, stored as `dtype`: F16 or BF16) with the
    /// given names and shapes, made on each read and never held whole: models of real sizes for
    /// benchmarks (`sakiko bench`) without files or downloads. `name` stands in for the path in
    /// messages.
    pub fn synthetic(
        name: impl Into<PathBuf>,
        tensors: &[(String, Vec<usize>)],
        dtype: Dtype,
    ) -> Result<Self, WeightError> {
        Self::synthetic_with(name, tensors, dtype, AMPLITUDE)
    }

    /// [`WeightFile::synthetic`] with values up to `amplitude` in magnitude: weights large enough
    /// that small models compute activations of order one (`sakiko doctor`'s models), so that no
    /// near-zero layer can hide a wrong kernel.
    pub fn synthetic_with(
        name: impl Into<PathBuf>,
        tensors: &[(String, Vec<usize>)],
        dtype: Dtype,
        amplitude: f32,
    ) -> Result<Self, WeightError> {
        let path = name.into();
        if !matches!(dtype, Dtype::F16 | Dtype::BF16) {
            return Err(WeightError::Dtype {
                path,
                key: String::new(),
                dtype: dtype.into(),
            });
        }
        let mut offset = 0;
        let tensors = tensors
            .iter()
            .map(|(key, shape)| {
                let len = shape.iter().product::<usize>() * 2;
                let stored = Stored {
                    dtype: dtype.into(),
                    shape: shape.clone(),
                    offset,
                    len,
                };
                offset += len as u64;
                (key.clone(), stored)
            })
            .collect();
        let mut file = Self::one_shard(&path, Format::Synthetic, ShardBytes::Synthetic, tensors);
        file.amplitude = amplitude;
        Ok(file)
    }
}
