//! GGUF files (llama.cpp's format, used for quantised Lumina 2 DiTs): header, metadata, tensor
//! infos and alignment, per ggml's `docs/gguf.md`. Every count and length is checked against the
//! bytes left in the file before anything is allocated, so a hostile header cannot ask for
//! gigabytes; offsets are checked for alignment, overlap and the end of the file.
//!
//! Written here rather than taken from a crate: the maintained readers either come with a whole
//! inference engine (candle) or stop at the header; the format is a few fixed fields.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::file::Stored;
use crate::quants::GgmlType;
use crate::{StoredDtype, WeightError};

/// `"GGUF"` read as a little-endian u32.
const MAGIC: u32 = 0x4655_4747;
/// Data alignment when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Arrays nested deeper than this are refused (real files nest at most once).
const MAX_DEPTH: usize = 3;

/// A metadata value (integers widened; arrays keep their elements).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// `u8`, `u16`, `u32` or `u64`.
    Uint(u64),
    /// `i8`, `i16`, `i32` or `i64`.
    Int(i64),
    /// `f32` or `f64`.
    Float(f64),
    /// `bool`.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array.
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// A non-negative integer value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Uint(v) => Some(v),
            Self::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// Bounded little-endian reads: `pos` and `len` say how many bytes are left.
struct Reader<'p> {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
    path: &'p Path,
}

impl Reader<'_> {
    fn corrupt(&self, reason: impl Into<String>) -> WeightError {
        WeightError::Corrupt {
            path: self.path.to_path_buf(),
            format: "GGUF",
            reason: reason.into(),
        }
    }

    fn left(&self) -> u64 {
        self.len - self.pos
    }

    /// Fills `buf`, which must fit in what is left.
    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<(), WeightError> {
        if self.left() < buf.len() as u64 {
            return Err(self.corrupt(format!("truncated at byte {} reading {what}", self.pos)));
        }
        self.inner
            .read_exact(buf)
            .map_err(|source| WeightError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], WeightError> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, WeightError> {
        self.bytes(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, WeightError> {
        self.bytes(what).map(u64::from_le_bytes)
    }

    /// A count of items of at least `min_size` bytes each, refused if they cannot fit.
    fn count(&mut self, what: &str, min_size: u64) -> Result<usize, WeightError> {
        let n = self.u64(what)?;
        if n.saturating_mul(min_size) > self.left() {
            return Err(self.corrupt(format!(
                "{what} {n} cannot fit in the {} bytes left",
                self.left()
            )));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &str) -> Result<String, WeightError> {
        let n = self.count(&format!("length of {what}"), 1)?;
        let mut b = vec![0u8; n];
        self.fill(&mut b, what)?;
        String::from_utf8(b).map_err(|_| self.corrupt(format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<MetaValue, WeightError> {
        let what = &format!("metadata `{key}`");
        Ok(match ty {
            0 => MetaValue::Uint(self.bytes::<1>(what)?[0] as u64),
            1 => MetaValue::Int(self.bytes::<1>(what)?[0] as i8 as i64),
            2 => MetaValue::Uint(u16::from_le_bytes(self.bytes(what)?) as u64),
            3 => MetaValue::Int(i16::from_le_bytes(self.bytes(what)?) as i64),
            4 => MetaValue::Uint(self.u32(what)? as u64),
            5 => MetaValue::Int(i32::from_le_bytes(self.bytes(what)?) as i64),
            6 => MetaValue::Float(f32::from_le_bytes(self.bytes(what)?) as f64),
            7 => MetaValue::Bool(self.bytes::<1>(what)?[0] != 0),
            8 => MetaValue::String(self.string(what)?),
            9 if depth < MAX_DEPTH => {
                let elem = self.u32(what)?;
                let size = match elem {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    other => return Err(self.corrupt(format!("{what}: unknown type {other}"))),
                };
                let n = self.count(&format!("length of {what}"), size)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(elem, key, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            9 => return Err(self.corrupt(format!("{what}: arrays nested too deeply"))),
            10 => MetaValue::Uint(self.u64(what)?),
            11 => MetaValue::Int(i64::from_le_bytes(self.bytes(what)?)),
            12 => MetaValue::Float(f64::from_le_bytes(self.bytes(what)?)),
            other => return Err(self.corrupt(format!("{what}: unknown type {other}"))),
        })
    }
}

/// A parsed GGUF header: metadata and the tensor table (PyTorch-order shapes).
pub(crate) struct Header {
    pub file: File,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<(String, Stored)>,
}

/// Opens `path` and reads its header; tensors get PyTorch-order shapes (GGUF lists the innermost
/// dimension first), or the `comfy.gguf.orig_shape.<name>` that ComfyUI-GGUF records.
pub(crate) fn open(path: &Path) -> Result<Header, WeightError> {
    let io = |source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    let mut r = Reader {
        inner: BufReader::new(file),
        pos: 0,
        len,
        path,
    };
    let magic = r.u32("the magic number")?;
    if magic != MAGIC {
        return Err(r.corrupt(format!("wrong magic number {magic:#010x}")));
    }
    let version = r.u32("the version")?;
    if version.swap_bytes() <= 3 && version > 3 {
        return Err(r.corrupt("big-endian GGUF files are not supported"));
    }
    if !(2..=3).contains(&version) {
        return Err(r.corrupt(format!("version {version} is not supported (2 or 3)")));
    }
    // Each tensor info is at least 8 (name length) + 4 (dims) + 4 (type) + 8 (offset) bytes; each
    // metadata entry at least 8 + 4 + 1.
    let tensor_count = r.count("tensor count", 24)?;
    let kv_count = r.count("metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..kv_count {
        let key = r.string("a metadata key")?;
        let ty = r.u32("a metadata type")?;
        let value = r.value(ty, &key, 0)?;
        metadata.insert(key, value);
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() => a,
            _ => return Err(r.corrupt(format!("general.alignment {v:?} is not a power of two"))),
        },
    };
    let mut infos = Vec::with_capacity(tensor_count);
    let mut names = std::collections::HashSet::new();
    for _ in 0..tensor_count {
        let name = r.string("a tensor name")?;
        if !names.insert(name.clone()) {
            return Err(r.corrupt(format!("tensor `{name}` is listed twice")));
        }
        let n_dims = r.u32("a tensor's rank")?;
        if n_dims > MAX_DIMS {
            return Err(r.corrupt(format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(r.u64("a tensor dimension")?);
        }
        let id = r.u32("a tensor type")?;
        let offset = r.u64("a tensor offset")?;
        let ty = GgmlType::from_id(id)
            .ok_or_else(|| r.corrupt(format!("tensor `{name}` has unknown GGML type id {id}")))?;
        infos.push((name, dims, ty, offset));
    }
    let data_start = r.pos.next_multiple_of(alignment);
    let data_len = len.saturating_sub(data_start);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, dims, ty, offset) in infos {
        let numel = crate::file::numel(&dims);
        let Some(numel) = numel else {
            return Err(r.corrupt(format!(
                "tensor `{name}` has dimensions {dims:?}: more elements than can be addressed"
            )));
        };
        let Some(size) = StoredDtype::Gguf(ty).size_of(numel) else {
            return Err(r.corrupt(format!(
                "tensor `{name}` of {numel} {ty} elements is not a whole number of blocks"
            )));
        };
        if dims
            .first()
            .is_some_and(|&ne0| ne0 % ty.block_len() as u64 != 0)
        {
            return Err(r.corrupt(format!(
                "tensor `{name}`: rows of {} elements are not whole {ty} blocks",
                dims[0]
            )));
        }
        if offset % alignment != 0 {
            return Err(r.corrupt(format!(
                "tensor `{name}` starts at offset {offset}, not a multiple of the alignment {alignment}"
            )));
        }
        if offset
            .checked_add(size as u64)
            .is_none_or(|end| end > data_len)
        {
            return Err(r.corrupt(format!(
                "truncated: tensor `{name}` ({size} bytes at offset {offset}) ends past the {data_len} bytes of data"
            )));
        }
        let orig = metadata
            .get(&format!("comfy.gguf.orig_shape.{name}"))
            .and_then(|v| match v {
                MetaValue::Array(a) => a
                    .iter()
                    .map(|d| d.as_u64().map(|d| d as usize))
                    .collect::<Option<Vec<usize>>>(),
                _ => None,
            })
            .filter(|s| crate::file::numel(s) == Some(numel));
        let shape = orig.unwrap_or_else(|| dims.iter().rev().map(|&d| d as usize).collect());
        tensors.push((
            name,
            Stored {
                dtype: StoredDtype::Gguf(ty),
                shape,
                offset: data_start + offset,
                len: size,
            },
        ));
    }
    let mut spans: Vec<(&str, u64, u64)> = tensors
        .iter()
        .map(|(n, s)| (n.as_str(), s.offset, s.offset + s.len as u64))
        .collect();
    spans.sort_by_key(|s| (s.1, s.2));
    if let Some(w) = spans.windows(2).find(|w| w[1].1 < w[0].2) {
        return Err(r.corrupt(format!("tensors `{}` and `{}` overlap", w[0].0, w[1].0)));
    }
    Ok(Header {
        file: r.inner.into_inner(),
        metadata,
        tensors,
    })
}
