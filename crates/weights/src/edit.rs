//! A copy of a safetensors checkpoint with one tensor's values changed: how tests (and curious
//! users) see what a model does with damaged weights (NaN, infinity, values beyond f16's range).

use std::path::Path;

use safetensors::Dtype;
use safetensors::tensor::TensorView;

use crate::{StoredDtype, WeightError, WeightFile};

/// Writes `dst`, a copy of the safetensors file `src` in which `edit` has changed the values of
/// tensor `key` (given as f32, written back in the tensor's stored F32, F16 or BF16). Every other
/// tensor is copied byte for byte.
pub fn write_edited(
    src: impl AsRef<Path>,
    dst: impl AsRef<Path>,
    key: &str,
    edit: impl FnOnce(&mut [f32]),
) -> Result<(), WeightError> {
    let file = WeightFile::open(src)?;
    let dst = dst.as_ref();
    let missing = || WeightError::Missing {
        path: file.path().to_path_buf(),
        key: key.to_owned(),
    };
    let dtype = |k: &str| match file.dtype(k) {
        Some(StoredDtype::Safetensors(d)) => Ok(d),
        _ => Err(missing()),
    };
    let edited_dtype = dtype(key)?;
    let (mut values, _) = file.read_f32(key)?;
    edit(&mut values);
    let edited: Vec<u8> = match edited_dtype {
        Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        other => {
            return Err(WeightError::Dtype {
                path: file.path().to_path_buf(),
                key: key.to_owned(),
                dtype: StoredDtype::Safetensors(other),
            });
        }
    };
    let mut tensors = Vec::new();
    for k in file.keys() {
        let bytes = if k == key {
            edited.clone()
        } else {
            file.read_bytes(k)?
        };
        tensors.push((
            k.to_owned(),
            dtype(k)?,
            file.shape(k).unwrap_or(&[]).to_vec(),
            bytes,
        ));
    }
    let views = tensors
        .iter()
        .map(|(k, d, shape, bytes)| {
            TensorView::new(*d, shape.clone(), bytes)
                .map(|view| (k.as_str(), view))
                .map_err(|e| corrupt(dst, e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize_to_file(views, None, dst).map_err(|e| corrupt(dst, e))
}

fn corrupt(path: &Path, e: impl std::fmt::Display) -> WeightError {
    WeightError::Corrupt {
        path: path.to_path_buf(),
        format: "safetensors",
        reason: e.to_string(),
    }
}
