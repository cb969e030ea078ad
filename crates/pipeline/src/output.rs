//! Writing results: PNG files with the generation parameters as text chunks, and latents as
//! safetensors.

use std::io::BufWriter;
use std::path::Path;

use burn::tensor::{Tensor, backend::Backend};
use image::DynamicImage;

use crate::PipelineError;

/// The generation parameters stored in a PNG, as `(keyword, text)` pairs in a fixed order.
pub type Parameters = Vec<(String, String)>;

/// Writes `image` (8- or 16-bit RGB) as a PNG with `parameters` as text chunks: `tEXt` for
/// Latin-1-safe ASCII values, `iTXt` (UTF-8) otherwise, so prompts in any script survive.
pub fn write_png(
    path: &Path,
    image: &DynamicImage,
    parameters: &Parameters,
) -> Result<(), PipelineError> {
    let fail = |reason: String| PipelineError::Output {
        path: path.to_path_buf(),
        reason,
    };
    let (depth, data) = match image {
        DynamicImage::ImageRgb8(img) => (png::BitDepth::Eight, img.as_raw().clone()),
        DynamicImage::ImageRgb16(img) => (
            png::BitDepth::Sixteen,
            img.as_raw().iter().flat_map(|v| v.to_be_bytes()).collect(),
        ),
        other => {
            return Err(fail(format!(
                "unsupported pixel format {:?}",
                other.color()
            )));
        }
    };
    let file = std::fs::File::create(path).map_err(|e| fail(e.to_string()))?;
    let mut encoder = png::Encoder::new(BufWriter::new(file), image.width(), image.height());
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(depth);
    for (key, value) in parameters {
        let added = if value.is_ascii() {
            encoder.add_text_chunk(key.clone(), value.clone())
        } else {
            encoder.add_itxt_chunk(key.clone(), value.clone())
        };
        added.map_err(|e| fail(format!("text chunk `{key}`: {e}")))?;
    }
    let mut writer = encoder.write_header().map_err(|e| fail(e.to_string()))?;
    writer
        .write_image_data(&data)
        .and_then(|()| writer.finish())
        .map_err(|e| fail(e.to_string()))
}

/// Reads the text chunks of a PNG (`tEXt`, `zTXt` and `iTXt`), in file order per kind.
pub fn read_png_text(path: &Path) -> Result<Parameters, PipelineError> {
    let fail = |reason: String| PipelineError::Output {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .map_err(|e| fail(e.to_string()))?;
    let info = reader.info();
    let mut out: Parameters = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &info.compressed_latin1_text {
        out.push((
            c.keyword.clone(),
            c.get_text().map_err(|e| fail(e.to_string()))?,
        ));
    }
    for c in &info.utf8_text {
        out.push((
            c.keyword.clone(),
            c.get_text().map_err(|e| fail(e.to_string()))?,
        ));
    }
    Ok(out)
}

/// Writes `latent` as an f32 safetensors file with the single tensor `latent`.
pub fn save_latent<B: Backend>(path: &Path, latent: &Tensor<B, 4>) -> Result<(), PipelineError> {
    save_tensor(path, "latent", latent)
}

/// Writes `tensor` as an f32 safetensors file with the single tensor `name` (e.g. a
/// conditioning `cond`).
pub fn save_tensor<B: Backend, const D: usize>(
    path: &Path,
    name: &str,
    tensor: &Tensor<B, D>,
) -> Result<(), PipelineError> {
    let fail = |reason: String| PipelineError::Output {
        path: path.to_path_buf(),
        reason,
    };
    let values: Vec<f32> = tensor
        .clone()
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| fail(format!("{e:?}")))?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        tensor.dims().to_vec(),
        &bytes,
    )
    .map_err(|e| fail(e.to_string()))?;
    safetensors::serialize_to_file([(name, view)], None, path).map_err(|e| fail(e.to_string()))
}

/// The parameters written into image `index` of a batch: one text chunk per setting (`prompt`,
/// `negative_prompt`, `seed`, `batch_index`, `steps`, `cfg`, `guidance`, `sampler`, `scheduler`,
/// `shift`, `width`, `height`, `denoise`, `dit`, `text_encoder`, `vae`, `software`) and an
/// A1111-style `parameters` summary that image browsers and model sites read.
pub fn png_parameters(
    request: &crate::GenerationRequest,
    files: &crate::ModelFiles,
    index: usize,
) -> Parameters {
    let name = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let g = &request.guidance;
    let mut out: Parameters = vec![
        ("prompt".into(), request.prompt.clone()),
        ("negative_prompt".into(), request.negative.clone()),
        ("seed".into(), request.seed.to_string()),
        ("batch_index".into(), index.to_string()),
        ("steps".into(), request.steps.to_string()),
        ("cfg".into(), g.scale().to_string()),
        ("guidance".into(), format!("{g:?}")),
        ("sampler".into(), request.sampler.to_string()),
        ("scheduler".into(), request.scheduler.to_string()),
        ("shift".into(), request.shift.to_string()),
        ("width".into(), request.width.to_string()),
        ("height".into(), request.height.to_string()),
    ];
    if request.init_image.is_some() {
        out.push(("denoise".into(), request.denoise.to_string()));
    }
    out.extend([
        ("dit".into(), name(&files.dit)),
        ("text_encoder".into(), name(&files.text_encoder)),
        ("vae".into(), name(&files.vae)),
        (
            "software".into(),
            concat!("sakiko-lumina ", env!("CARGO_PKG_VERSION")).into(),
        ),
    ]);
    let summary = format!(
        "{}\nNegative prompt: {}\nSteps: {}, Sampler: {}, Schedule type: {}, CFG scale: {}, \
         Seed: {}, Size: {}x{}, Shift: {}, Model: {}",
        request.model_text(),
        request.negative,
        request.steps,
        request.sampler,
        request.scheduler,
        g.scale(),
        request.seed,
        request.width,
        request.height,
        request.shift,
        name(&files.dit),
    );
    out.push(("parameters".into(), summary));
    out
}
