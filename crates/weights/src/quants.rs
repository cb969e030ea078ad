//! GGML tensor types and the dequantisation of the block formats that Lumina 2 GGUF files use.
//!
//! Hand-written rather than taken from a crate: the one maintained implementation
//! (`candle-core::quantized`) brings candle's whole CPU backend, and the formulas are short. Each
//! function follows `gguf.quants` (llama.cpp's Python package) operation for operation, in f32, so
//! the results are bit-identical to `gguf.quants.dequantize` (tested against fixtures it wrote).

use std::fmt;

use half::f16;

/// A GGML tensor type, as stored in GGUF tensor infos (`ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(non_camel_case_types, missing_docs)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
}

/// Every type: (id, type, elements per block, bytes per block), from ggml's type traits.
const TYPES: [(u32, GgmlType, usize, usize); 34] = {
    use GgmlType::*;
    [
        (0, F32, 1, 4),
        (1, F16, 1, 2),
        (2, Q4_0, 32, 18),
        (3, Q4_1, 32, 20),
        (6, Q5_0, 32, 22),
        (7, Q5_1, 32, 24),
        (8, Q8_0, 32, 34),
        (9, Q8_1, 32, 40),
        (10, Q2_K, 256, 84),
        (11, Q3_K, 256, 110),
        (12, Q4_K, 256, 144),
        (13, Q5_K, 256, 176),
        (14, Q6_K, 256, 210),
        (15, Q8_K, 256, 292),
        (16, IQ2_XXS, 256, 66),
        (17, IQ2_XS, 256, 74),
        (18, IQ3_XXS, 256, 98),
        (19, IQ1_S, 256, 50),
        (20, IQ4_NL, 32, 18),
        (21, IQ3_S, 256, 110),
        (22, IQ2_S, 256, 82),
        (23, IQ4_XS, 256, 136),
        (24, I8, 1, 1),
        (25, I16, 1, 2),
        (26, I32, 1, 4),
        (27, I64, 1, 8),
        (28, F64, 1, 8),
        (29, IQ1_M, 256, 56),
        (30, BF16, 1, 2),
        (34, TQ1_0, 256, 54),
        (35, TQ2_0, 256, 66),
        (39, MXFP4, 32, 17),
        (40, NVFP4, 64, 36),
        (41, Q1_0, 128, 18),
    ]
};

impl GgmlType {
    /// The type with GGUF id `id`, if ggml defines one.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPES.iter().find(|t| t.0 == id).map(|t| t.1)
    }

    fn traits(self) -> (usize, usize) {
        TYPES
            .iter()
            .find(|t| t.1 == self)
            .map_or((1, 1), |t| (t.2, t.3))
    }

    /// Elements per block (1 for plain types).
    pub fn block_len(self) -> usize {
        self.traits().0
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.traits().1
    }

    /// Whether [`dequantize`] reads this type.
    pub fn is_supported(self) -> bool {
        use GgmlType::*;
        matches!(
            self,
            F32 | F16
                | BF16
                | F64
                | Q8_0
                | Q4_0
                | Q4_1
                | Q5_0
                | Q5_1
                | Q2_K
                | Q3_K
                | Q4_K
                | Q5_K
                | Q6_K
        )
    }

    /// Whether values are stored in blocks with scales (not plain floats or integers).
    pub fn is_quantized(self) -> bool {
        self.block_len() > 1
    }

    /// The types [`dequantize`] reads, for messages.
    pub fn supported_names() -> String {
        TYPES
            .iter()
            .filter(|t| t.1.is_supported())
            .map(|t| t.1.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

fn half(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Appends the values of whole blocks of `ty` in `bytes` to `out`; `Err(ty)` for a type this
/// crate cannot read. `bytes.len()` must be a multiple of the block size (the caller checks
/// shapes against sizes when it opens a file).
pub fn dequantize(bytes: &[u8], ty: GgmlType, out: &mut Vec<f32>) -> Result<(), GgmlType> {
    use GgmlType::*;
    let block = ty.block_bytes();
    out.reserve(bytes.len() / block * ty.block_len());
    let blocks = bytes.chunks_exact(block);
    match ty {
        F32 => out.extend(blocks.map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        F16 => out.extend(blocks.map(|b| half(b, 0))),
        BF16 => out.extend(blocks.map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        F64 => {
            out.extend(blocks.map(|b| {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }))
        }
        Q8_0 => blocks.for_each(|b| {
            let d = half(b, 0);
            out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
        }),
        Q4_0 => blocks.for_each(|b| {
            let d = half(b, 0);
            out.extend(
                (0..32).map(|e| d * (((b[2 + e % 16] >> (4 * (e / 16))) & 0xF) as i8 - 8) as f32),
            );
        }),
        Q4_1 => blocks.for_each(|b| {
            let (d, m) = (half(b, 0), half(b, 2));
            out.extend((0..32).map(|e| d * ((b[4 + e % 16] >> (4 * (e / 16))) & 0xF) as f32 + m));
        }),
        Q5_0 => blocks.for_each(|b| {
            let d = half(b, 0);
            let h = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            out.extend((0..32).map(|e| d * (five_bits(&b[6..22], h, e) as i8 - 16) as f32));
        }),
        Q5_1 => blocks.for_each(|b| {
            let (d, m) = (half(b, 0), half(b, 2));
            let h = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            out.extend((0..32).map(|e| d * five_bits(&b[8..24], h, e) as f32 + m));
        }),
        Q2_K => blocks.for_each(|b| q2_k(b, out)),
        Q3_K => blocks.for_each(|b| q3_k(b, out)),
        Q4_K => blocks.for_each(|b| q45_k(b, false, out)),
        Q5_K => blocks.for_each(|b| q45_k(b, true, out)),
        Q6_K => blocks.for_each(|b| q6_k(b, out)),
        other => return Err(other),
    }
    Ok(())
}

/// Q8_0 blocks as they are: each block's 32 int8 values and its scale `d` (f16, widened to
/// f32), for keeping the weights quantised ([`crate::WeightFile::with_q8_0_kept`]).
/// `bytes.len()` must be a multiple of 34 bytes; `value · scale` is [`dequantize`]'s result
/// exactly.
pub fn q8_0_blocks(bytes: &[u8]) -> (Vec<i8>, Vec<f32>) {
    let blocks = bytes.chunks_exact(GgmlType::Q8_0.block_bytes());
    let scales = blocks.clone().map(|b| half(b, 0)).collect();
    let values = blocks
        .flat_map(|b| b[2..34].iter().map(|&q| q as i8))
        .collect();
    (values, scales)
}

/// Element `e` of a Q5 block: a low nibble from `qs` and the fifth bit from `h`.
fn five_bits(qs: &[u8], h: u32, e: usize) -> u8 {
    ((qs[e % 16] >> (4 * (e / 16))) & 0xF) | ((((h >> e) & 1) as u8) << 4)
}

/// `{u8 scales[16]; u8 qs[64]; f16 d; f16 dmin}`: 16 groups of 16 with 4-bit scale and min.
fn q2_k(b: &[u8], out: &mut Vec<f32>) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (half(b, 80), half(b, 82));
    out.extend((0..256).map(|e| {
        let sc = scales[e / 16];
        let (dl, ml) = (d * (sc & 0xF) as f32, dmin * (sc >> 4) as f32);
        let q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        dl * q as f32 - ml
    }));
}

/// `{u8 hmask[32]; u8 qs[64]; u8 scales[12]; f16 d}`: 16 groups of 16 with signed 6-bit scales.
fn q3_k(b: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs, scales) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = half(b, 108);
    let scale = |i: usize| {
        let low = (scales[i % 8] >> (4 * (i / 8))) & 0xF;
        let high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
        ((low | (high << 4)) as i8 - 32) as f32
    };
    out.extend((0..256).map(|e| {
        let dl = d * scale(e / 16);
        let low = ((qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i8;
        // The high bit set means no offset; clear means −4.
        let high = ((hmask[e % 32] >> (e / 32)) & 1) ^ 1;
        dl * (low - ((high << 2) as i8)) as f32
    }));
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K block (`get_scale_min_k4`).
fn scale_min_k4(s: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 2) & 0x30),
            (s[j + 4] >> 4) | ((s[j] >> 2) & 0x30),
        )
    }
}

/// Q4_K `{f16 d; f16 dmin; u8 scales[12]; u8 qs[128]}` and Q5_K (with `u8 qh[32]` before `qs`):
/// 8 sub-blocks of 32 with 6-bit scale and min.
fn q45_k(b: &[u8], five: bool, out: &mut Vec<f32>) {
    let (d, dmin, scales) = (half(b, 0), half(b, 2), &b[4..16]);
    let (qh, qs) = if five {
        (&b[16..48], &b[48..176])
    } else {
        (&b[0..0], &b[16..144])
    };
    for j in 0..8 {
        let (sc, m) = scale_min_k4(scales, j);
        let (dl, ml) = (d * sc as f32, dmin * m as f32);
        out.extend((0..32).map(|l| {
            let mut q = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0xF;
            if five {
                q |= ((qh[l] >> j) & 1) << 4;
            }
            dl * q as f32 - ml
        }));
    }
}

/// `{u8 ql[128]; u8 qh[64]; i8 scales[16]; f16 d}`: 16 groups of 16 with signed 8-bit scales.
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = half(b, 208);
    out.extend((0..256).map(|e| {
        let (h, r) = (e / 128, e % 128);
        let low = (ql[64 * h + r % 64] >> (4 * (r / 64))) & 0xF;
        let high = (qh[32 * h + r % 32] >> (2 * (r / 32))) & 3;
        let q = (low | (high << 4)) as i8 - 32;
        (d * scales[e / 16] as i8 as f32) * q as f32
    }));
}
