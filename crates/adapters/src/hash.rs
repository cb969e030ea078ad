//! The short hash AUTOMATIC1111 and Civitai give adapter files ("AutoV3", A1111's `Lora hashes`):
//! SHA-256 of a safetensors file's data, after its header, so that editing the metadata keeps it.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::AdapterError;

/// The first 12 hex digits of the SHA-256 of `path`'s tensor data (everything after the 8-byte
/// length and the JSON header), as A1111 writes into `Lora hashes`.
pub fn short_hash(path: impl AsRef<Path>) -> Result<String, AdapterError> {
    let path = path.as_ref();
    let io = |source| sakiko_weights::WeightError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(io)?;
    let start = u64::from_le_bytes(len)
        .checked_add(8)
        .ok_or_else(|| io(std::io::Error::other("the header length overflows")))?;
    file.seek(SeekFrom::Start(start)).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let digest = hasher.finalize();
    Ok(digest.iter().take(6).map(|b| format!("{b:02x}")).collect())
}
