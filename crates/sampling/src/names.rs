//! Parsing ComfyUI's names with a helpful error.

use crate::SamplingError;

/// Finds `name` among `all` (by `name_of`), or fails with the closest known name.
pub(crate) fn parse<T: Copy>(
    kind: &'static str,
    name: &str,
    all: &[T],
    name_of: impl Fn(T) -> &'static str,
) -> Result<T, SamplingError> {
    let wanted = name.trim().to_lowercase().replace('-', "_");
    if let Some(&found) = all.iter().find(|&&x| name_of(x) == wanted) {
        return Ok(found);
    }
    let suggestion = all
        .iter()
        .map(|&x| name_of(x))
        .map(|known| (strsim::damerau_levenshtein(&wanted, known), known))
        .filter(|&(d, known)| d <= 3.max(known.len() / 4))
        .min()
        .map(|(_, known)| known);
    Err(SamplingError::UnknownName {
        kind,
        name: name.to_owned(),
        suggestion,
        known: all
            .iter()
            .map(|&x| name_of(x))
            .collect::<Vec<_>>()
            .join(", "),
    })
}
