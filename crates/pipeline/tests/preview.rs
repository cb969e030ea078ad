//! `latent_preview` against ComfyUI's `Latent2RGBPreviewer` for FLUX latents
//! (`tools/reference/preview.py`): a random batch-2 latent, wide enough that some values clamp.

use std::path::Path;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use safetensors::SafeTensors;

#[test]
fn preview_matches_comfyui() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preview.safetensors");
    let bytes = std::fs::read(&path).expect("fixture (tools/reference/preview.py)");
    let file = SafeTensors::deserialize(&bytes).expect("safetensors");
    let latent = file.tensor("latent").expect("latent");
    let values: Vec<f32> = latent
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let latent = Tensor::<Flex, 4>::from_data(
        TensorData::new(values, latent.shape().to_vec()),
        &Default::default(),
    );
    let expected = file.tensor("image").expect("image");
    let [h, w, _] = <[usize; 3]>::try_from(expected.shape()).expect("[h, w, 3]");

    let image = sakiko_pipeline::latent_preview(&latent).expect("16 channels");
    assert_eq!(image.dimensions(), (w as u32, h as u32));
    // The same f32 sums in another order: a value on a rounding boundary may land one apart.
    let ours = image.as_raw();
    let theirs = expected.data();
    let off: Vec<_> = ours.iter().zip(theirs).filter(|(a, b)| a != b).collect();
    assert!(
        off.iter().all(|(a, b)| a.abs_diff(**b) <= 1),
        "more than 1 apart: {off:?}"
    );
    assert!(
        off.len() <= 2,
        "{} of {} values differ",
        off.len(),
        theirs.len()
    );
    assert!(
        theirs.iter().any(|&v| v == 0 || v == 255),
        "the fixture exercises clamping"
    );
}
