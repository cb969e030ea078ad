//! Token-embedding tables kept on the host in their stored precision.

use crate::{StoredDtype, WeightError, Weights, decode_f32};

/// An embedding table on the host, in its stored precision (Gemma-2 2B's is 1.2 GB in fp16
/// instead of 2.4 GB in f32; less for fp8 or GGUF blocks): only the rows of a prompt's tokens are
/// converted. Lookups are a handful of rows per call, so the device never holds the table.
/// Before loading, rows are seeded random values made on demand (no table is held).
#[derive(Debug)]
pub enum HostEmbedding {
    /// Rows read from a checkpoint.
    Stored {
        /// The table as stored.
        bytes: Vec<u8>,
        /// Its stored type.
        dtype: StoredDtype,
        /// Bytes per row (a whole number of blocks: checked at load).
        row_bytes: usize,
        /// The fp8 layer scale, if any.
        scale: Option<f32>,
    },
    /// Random rows of width `dim`, made from the token id.
    Random {
        /// Row width.
        dim: usize,
    },
}

impl HostEmbedding {
    /// Reads the table `name` (within `w`), checking that it is `[vocab, dim]` of a float type.
    pub fn load(
        w: &Weights<'_>,
        name: &str,
        vocab: usize,
        dim: usize,
    ) -> Result<Self, WeightError> {
        let file = w.file();
        let key = w.key(name);
        let Some(found) = file.shape(&key) else {
            return Err(WeightError::Missing {
                path: file.path().to_path_buf(),
                key,
            });
        };
        if found != [vocab, dim] {
            return Err(WeightError::Shape {
                path: file.path().to_path_buf(),
                key,
                expected: vec![vocab, dim],
                found: found.to_vec(),
            });
        }
        let dtype = file
            .dtype(&key)
            .unwrap_or(StoredDtype::Safetensors(safetensors::Dtype::F32));
        let Some(row_bytes) = dtype.size_of(dim).filter(|_| dtype.is_float()) else {
            return Err(WeightError::Dtype {
                path: file.path().to_path_buf(),
                key,
                dtype,
            });
        };
        let scale = if dtype.is_fp8() {
            file.fp8_scale(&key)?
        } else {
            None
        };
        Ok(Self::Stored {
            bytes: file.read_bytes(&key)?,
            dtype,
            row_bytes,
            scale,
        })
    }

    /// Appends row `id` in f32 to `out`. `id` must be below the vocabulary size the table was
    /// loaded with (callers check token ids first).
    pub fn row(&self, id: usize, out: &mut Vec<f32>) {
        match self {
            Self::Stored {
                bytes,
                dtype,
                row_bytes,
                scale,
            } => {
                let row = &bytes[id * row_bytes..(id + 1) * row_bytes];
                let start = out.len();
                // The dtype was checked when the table was loaded, so decoding cannot fail here.
                let _ = decode_f32(row, *dtype, out);
                if let Some(scale) = scale {
                    out[start..].iter_mut().for_each(|v| *v *= scale);
                }
            }
            Self::Random { dim } => {
                let mut state = (id as u32).wrapping_mul(2_654_435_761) | 1;
                out.extend((0..*dim).map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    ((state >> 9) as f32 / (1 << 23) as f32 - 0.5) * 0.04
                }));
            }
        }
    }
}
