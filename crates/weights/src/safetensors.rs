//! safetensors headers: parsed and checked against the file size before any tensor is read.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use safetensors::tensor::Metadata;

use crate::file::Stored;
use crate::{StoredDtype, WeightError};

/// Headers larger than this are refused (real ones are well under 1 MiB).
const MAX_HEADER: u64 = 100 << 20;

/// The header of a safetensors file: its tensor table and its `__metadata__` strings.
pub(crate) type Header = (Vec<(String, Stored)>, Vec<(String, String)>);

/// Opens `path` and reads its tensor table, each tensor's byte range checked against its shape
/// and the file's length, and its `__metadata__` (trainers record adapter settings there).
pub(crate) fn open(path: &Path) -> Result<(File, Header), WeightError> {
    let io = |source| WeightError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |reason: String| WeightError::Corrupt {
        path: path.to_path_buf(),
        format: "safetensors",
        reason,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|_| corrupt(format!("{file_len} bytes is too short for a header")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(corrupt(format!(
            "header length {header_len} does not fit a {file_len}-byte file"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let metadata: Metadata =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("unreadable header: {e}")))?;
    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let mut tensors = Vec::new();
    for (name, info) in metadata.tensors() {
        let (start, end) = info.data_offsets;
        let dtype = StoredDtype::Safetensors(info.dtype);
        let numel = crate::file::numel(&info.shape);
        let expected = numel.and_then(|n| dtype.size_of(n));
        if end < start || Some(end - start) != expected {
            return Err(corrupt(format!(
                "tensor `{name}` spans {} bytes, its shape {:?} of {:?} needs {}",
                end.saturating_sub(start),
                info.shape,
                info.dtype,
                expected.map_or("more than can be addressed".into(), |n| n.to_string())
            )));
        }
        if end as u64 > data_len {
            return Err(corrupt(format!(
                "truncated: tensor `{name}` ends at byte {end} of the data, the file holds {data_len}"
            )));
        }
        tensors.push((
            name,
            Stored {
                dtype,
                shape: info.shape.clone(),
                offset: data_start + start as u64,
                len: end - start,
            },
        ));
    }
    let strings = metadata
        .metadata()
        .as_ref()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Ok((file, (tensors, strings)))
}
