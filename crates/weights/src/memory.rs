//! Checkpoints made of tensors already in memory: weights built or converted in code, received
//! over a network, or taken from another library, loaded like a file's.

use std::collections::HashSet;
use std::path::PathBuf;

use burn::tensor::{DType, TensorData};
use safetensors::Dtype;

use crate::file::{Format, ShardBytes, Stored, WeightFile, numel};
use crate::{StoredDtype, WeightError};

impl WeightFile {
    /// A checkpoint of `tensors` (names as a file would store them, shapes in PyTorch's order),
    /// read like any file: each keeps its element type until a model loads it and converts it
    /// once to the load dtype (F32, F64, F16 and BF16 load; integer tensors are kept and refused
    /// at load, as a file's would be). `name` stands in for the path in messages.
    ///
    /// # Errors
    /// [`WeightError::Corrupt`] for a name given twice, bytes that do not match the shape, or a
    /// tensor of another element type (bool, Burn's quantised tensors).
    ///
    /// # Example
    /// ```
    /// use burn::tensor::TensorData;
    /// use sakiko_weights::{Format, WeightFile};
    ///
    /// let norm = TensorData::new(vec![half::bf16::from_f32(1.5); 4], [4]);
    /// let file = WeightFile::from_tensors("in memory", [("norm.weight".to_owned(), norm)])?;
    /// assert_eq!(file.format(), Format::Memory);
    /// assert_eq!(file.read_f32("norm.weight")?, (vec![1.5; 4], vec![4]));
    /// # Ok::<(), sakiko_weights::WeightError>(())
    /// ```
    pub fn from_tensors(
        name: impl Into<PathBuf>,
        tensors: impl IntoIterator<Item = (String, TensorData)>,
    ) -> Result<Self, WeightError> {
        let path = name.into();
        let corrupt = |reason: String| WeightError::Corrupt {
            path: path.clone(),
            format: "in-memory tensors",
            reason,
        };
        let mut bytes = Vec::new();
        let mut stored: Vec<(String, Stored)> = Vec::new();
        let mut seen = HashSet::new();
        for (key, data) in tensors {
            let dtype = match data.dtype {
                DType::F64 => Dtype::F64,
                DType::F32 => Dtype::F32,
                DType::F16 => Dtype::F16,
                DType::BF16 => Dtype::BF16,
                DType::I64 => Dtype::I64,
                DType::I32 => Dtype::I32,
                DType::I16 => Dtype::I16,
                DType::I8 => Dtype::I8,
                DType::U64 => Dtype::U64,
                DType::U32 => Dtype::U32,
                DType::U16 => Dtype::U16,
                DType::U8 => Dtype::U8,
                other => {
                    return Err(corrupt(format!(
                        "`{key}` is a {other:?} tensor, which no checkpoint format holds"
                    )));
                }
            };
            if !seen.insert(key.clone()) {
                return Err(corrupt(format!("`{key}` is given twice")));
            }
            let raw = data.as_bytes();
            let expected = numel(&data.shape).and_then(|n| n.checked_mul(dtype.bitsize() / 8));
            if expected != Some(raw.len()) {
                return Err(corrupt(format!(
                    "`{key}` has {} bytes for shape {:?} of {dtype:?}",
                    raw.len(),
                    data.shape.to_vec()
                )));
            }
            stored.push((
                key,
                Stored {
                    dtype: StoredDtype::Safetensors(dtype),
                    shape: data.shape.to_vec(),
                    offset: bytes.len() as u64,
                    len: raw.len(),
                },
            ));
            bytes.extend_from_slice(raw);
        }
        Ok(Self::one_shard(
            &path,
            Format::Memory,
            ShardBytes::Memory(bytes),
            stored,
        ))
    }
}
