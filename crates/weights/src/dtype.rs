//! How tensors are stored, and their conversion to f32.

use std::fmt;

use safetensors::Dtype;

use crate::quants::{self, GgmlType};

/// The stored element type of a tensor: a safetensors dtype or a GGML type (plain or blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredDtype {
    /// A safetensors dtype (`F32`, `BF16`, `F8_E4M3`, `U8`, …).
    Safetensors(Dtype),
    /// A GGML type from a GGUF file (`F16`, `Q8_0`, `Q4_K`, …).
    Gguf(GgmlType),
}

impl StoredDtype {
    /// Bytes taken by `numel` elements; `None` when `numel` is not a whole number of blocks or
    /// the size overflows.
    pub fn size_of(self, numel: usize) -> Option<usize> {
        match self {
            Self::Safetensors(d) => numel.checked_mul(d.bitsize()).map(|bits| bits.div_ceil(8)),
            Self::Gguf(t) => {
                let n = t.block_len();
                numel
                    .is_multiple_of(n)
                    .then(|| (numel / n).checked_mul(t.block_bytes()))
                    .flatten()
            }
        }
    }

    /// Whether [`decode_f32`] reads this type.
    pub fn is_float(self) -> bool {
        match self {
            Self::Safetensors(d) => matches!(
                d,
                Dtype::F32
                    | Dtype::F16
                    | Dtype::BF16
                    | Dtype::F64
                    | Dtype::F8_E4M3
                    | Dtype::F8_E5M2
            ),
            Self::Gguf(t) => t.is_supported(),
        }
    }

    /// Whether this is an 8-bit float (whose layers may carry a scale).
    pub fn is_fp8(self) -> bool {
        matches!(self, Self::Safetensors(Dtype::F8_E4M3 | Dtype::F8_E5M2))
    }

    /// Stored bits per element (averaged over a block for quantised types).
    pub fn bits_per_element(self) -> f64 {
        match self {
            Self::Safetensors(d) => d.bitsize() as f64,
            Self::Gguf(t) => (t.block_bytes() * 8) as f64 / t.block_len() as f64,
        }
    }
}

impl fmt::Display for StoredDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Safetensors(d) => write!(f, "{d:?}"),
            Self::Gguf(t) => write!(f, "{t}"),
        }
    }
}

impl From<Dtype> for StoredDtype {
    fn from(d: Dtype) -> Self {
        Self::Safetensors(d)
    }
}

/// The supported types, for messages.
pub(crate) fn supported_names() -> String {
    format!(
        "F32, F16, BF16, F64, F8_E4M3, F8_E5M2 (safetensors); {} (GGUF)",
        GgmlType::supported_names()
    )
}

/// Appends little-endian `bytes` of `dtype` to `out` as f32 (scales of fp8 layers are applied by
/// [`crate::WeightFile::read_f32`], not here); any type that is not a float is the error.
pub fn decode_f32(bytes: &[u8], dtype: StoredDtype, out: &mut Vec<f32>) -> Result<(), StoredDtype> {
    let mut plain = |t| quants::dequantize(bytes, t, out).map_err(|_| dtype);
    match dtype {
        StoredDtype::Gguf(t) => plain(t),
        StoredDtype::Safetensors(d) => match d {
            Dtype::F32 => plain(GgmlType::F32),
            Dtype::F16 => plain(GgmlType::F16),
            Dtype::BF16 => plain(GgmlType::BF16),
            Dtype::F64 => plain(GgmlType::F64),
            Dtype::F8_E4M3 => {
                out.extend(bytes.iter().map(|&b| f8_e4m3fn(b)));
                Ok(())
            }
            Dtype::F8_E5M2 => {
                out.extend(bytes.iter().map(|&b| f8_e5m2(b)));
                Ok(())
            }
            _ => Err(dtype),
        },
    }
}

/// PyTorch's `float8_e4m3fn` (OCP E4M3, bias 7, no infinities, `S.1111.111` is NaN). Written out
/// because it is eight lines; every one of the 256 codes is tested against PyTorch.
fn f8_e4m3fn(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((b >> 3) & 0xF, (b & 7) as f32);
    sign * match (e, b & 7) {
        (15, 7) => f32::NAN,
        (0, _) => m / 8.0 * 2f32.powi(-6),
        _ => (1.0 + m / 8.0) * 2f32.powi(e as i32 - 7),
    }
}

/// PyTorch's `float8_e5m2` (IEEE-style, bias 15, with infinities and NaNs): the top byte of an
/// f16, so exact through `half`.
fn f8_e5m2(b: u8) -> f32 {
    half::f16::from_bits((b as u16) << 8).to_f32()
}
