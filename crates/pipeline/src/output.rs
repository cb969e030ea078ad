//! Writing results: PNG files with the generation parameters as text chunks, and latents as
//! safetensors.

use std::path::Path;

use burn::tensor::{Tensor, backend::Backend};
use image::DynamicImage;

use crate::PipelineError;

/// The generation parameters stored in a PNG, as `(keyword, text)` pairs in a fixed order.
pub type Parameters = Vec<(String, String)>;

/// Writes `image` (8- or 16-bit RGB) as a PNG with `parameters` as text chunks (see
/// [`encode_png`]). Nothing is left behind when encoding fails.
pub fn write_png(
    path: &Path,
    image: &DynamicImage,
    parameters: &Parameters,
) -> Result<(), PipelineError> {
    let fail = |reason: String| PipelineError::Output {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = encode_png(image, parameters).map_err(|e| match e {
        PipelineError::Output { reason, .. } => fail(reason),
        other => other,
    })?;
    std::fs::write(path, bytes).map_err(|e| fail(e.to_string()))
}

/// `image` (8- or 16-bit RGB) as PNG bytes with `parameters` as text chunks: `tEXt` for
/// Latin-1-safe ASCII values, `iTXt` (UTF-8) otherwise, so prompts in any script survive.
pub fn encode_png(image: &DynamicImage, parameters: &Parameters) -> Result<Vec<u8>, PipelineError> {
    let fail = |reason: String| PipelineError::Output {
        path: "(PNG in memory)".into(),
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
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, image.width(), image.height());
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
        .map_err(|e| fail(e.to_string()))?;
    Ok(bytes)
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

/// The parameters written into image `index` of a batch: one plain-valued text chunk per setting
/// (`prompt`, `negative_prompt`, `seed`, `batch_index`, `steps`, `cfg`, `guidance` and its own
/// settings, `sampler`, `scheduler`, `shift`, `width`, `height`, `denoise`, `adapters`
/// (`name:dit:te:hash`, comma-separated; the hash is A1111's short SHA-256), `dit`,
/// `text_encoder`, `vae`, `software`) and an AUTOMATIC1111 `parameters` chunk that A1111's PNG
/// Info, image browsers and model sites read (see [`a1111_parameters`]).
pub fn png_parameters(
    request: &crate::GenerationRequest,
    files: &crate::ModelFiles,
    index: usize,
) -> Parameters {
    use sakiko_sampling::Guidance;
    let g = &request.guidance;
    let mut out: Parameters = vec![
        ("prompt".into(), request.prompt.clone()),
        ("negative_prompt".into(), request.negative.clone()),
        ("seed".into(), request.seed.to_string()),
        ("batch_index".into(), index.to_string()),
        ("steps".into(), request.steps.to_string()),
        ("cfg".into(), g.scale().to_string()),
        ("guidance".into(), g.name().into()),
    ];
    match *g {
        Guidance::RenormCfg { trunc, renorm, .. } => out.extend([
            ("cfg_trunc".into(), trunc.to_string()),
            ("renorm".into(), renorm.to_string()),
        ]),
        Guidance::Diffusers {
            normalization,
            trunc_ratio,
            ..
        } => out.extend([
            ("cfg_trunc".into(), trunc_ratio.to_string()),
            ("cfg_normalization".into(), normalization.to_string()),
        ]),
        Guidance::Cfg { .. } | Guidance::ZeroStar { .. } => {}
    }
    out.extend([
        ("sampler".into(), request.sampler.to_string()),
        ("scheduler".into(), request.scheduler.to_string()),
        ("shift".into(), request.shift.to_string()),
        ("width".into(), request.width.to_string()),
        ("height".into(), request.height.to_string()),
    ]);
    if request.init_image.is_some() {
        out.push(("denoise".into(), request.denoise.to_string()));
    }
    if !request.adapters.is_empty() {
        let list: Vec<String> = request
            .adapters
            .iter()
            .map(|a| {
                let s = a.strength;
                format!(
                    "{}:{}:{}:{}",
                    a.name(),
                    s.dit,
                    s.text_encoder,
                    short_hash(a)
                )
            })
            .collect();
        out.push(("adapters".into(), list.join(", ")));
    }
    out.extend([
        ("dit".into(), file_name(&files.dit)),
        ("text_encoder".into(), file_name(&files.text_encoder)),
        ("vae".into(), file_name(&files.vae)),
        ("software".into(), SOFTWARE.into()),
    ]);
    out.push(("parameters".into(), a1111_parameters(request, files)));
    out
}

const SOFTWARE: &str = concat!("sakiko-lumina ", env!("CARGO_PKG_VERSION"));

/// A path's last component (the whole path when it has none), as metadata and the APIs name
/// model files.
pub fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The generation as AUTOMATIC1111 writes it (`create_infotext` in its `processing.py`): the
/// user's prompt (without the fixed system prefix) with its adapters as `<lora:NAME:S>` tags,
/// `Negative prompt: …` when there is one, then one line of `Key: value` pairs in A1111's order (`Steps`, `Sampler`, `Schedule type`,
/// `CFG scale`, `Seed`, `Size`, `Model`, `VAE`, `Denoising strength`), followed by ours (`Shift`,
/// `Guidance`, `System prompt`, `Text encoder`, `Version`). Values holding a comma, colon or
/// newline are JSON-quoted, as A1111's `quote()` does, so its parser reads them back.
pub fn a1111_parameters(request: &crate::GenerationRequest, files: &crate::ModelFiles) -> String {
    let prompt = request
        .prompt
        .strip_prefix(sakiko_prompt::PREFIX)
        .map_or(request.prompt.as_str(), str::trim_start);
    let mut fields: Vec<(&str, String)> = vec![
        ("Steps", request.steps.to_string()),
        ("Sampler", request.sampler.to_string()),
        ("Schedule type", request.scheduler.to_string()),
        ("CFG scale", request.guidance.scale().to_string()),
        ("Seed", request.seed.to_string()),
        ("Size", format!("{}x{}", request.width, request.height)),
        ("Model", file_name(&files.dit)),
        ("VAE", file_name(&files.vae)),
    ];
    if request.init_image.is_some() {
        fields.push(("Denoising strength", request.denoise.to_string()));
    }
    if !request.adapters.is_empty() {
        let hashes: Vec<String> = request
            .adapters
            .iter()
            .map(|a| format!("{}: {}", a.name(), short_hash(a)))
            .collect();
        fields.push(("Lora hashes", hashes.join(", ")));
    }
    fields.extend([
        ("Shift", request.shift.to_string()),
        ("Guidance", request.guidance.name().to_owned()),
        ("System prompt", sakiko_prompt::PREFIX.to_owned()),
        ("Text encoder", file_name(&files.text_encoder)),
        ("Version", SOFTWARE.to_owned()),
    ]);
    let line = fields
        .iter()
        .map(|(k, v)| format!("{k}: {}", a1111_quote(v)))
        .collect::<Vec<_>>()
        .join(", ");
    let negative = if request.negative.is_empty() {
        String::new()
    } else {
        format!("\nNegative prompt: {}", request.negative)
    };
    // A1111 keeps adapters as tags in the prompt (text encoder strength first).
    let tags: String = request
        .adapters
        .iter()
        .map(|a| {
            let s = a.strength;
            if s.dit == s.text_encoder {
                format!(" <lora:{}:{}>", a.name(), s.dit)
            } else {
                format!(" <lora:{}:{}:{}>", a.name(), s.text_encoder, s.dit)
            }
        })
        .collect();
    format!("{prompt}{tags}{negative}\n{line}")
        .trim()
        .to_owned()
}

/// An adapter's A1111 short hash, `unknown` when its file cannot be read any more. Each file is
/// hashed once per process (keyed by its size and modification time, as A1111 caches hashes):
/// every image of a batch writes it twice.
fn short_hash(adapter: &crate::AdapterSpec) -> String {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Key = (std::path::PathBuf, u64, Option<std::time::SystemTime>);
    static CACHE: OnceLock<Mutex<HashMap<Key, String>>> = OnceLock::new();
    let Ok(meta) = std::fs::metadata(&adapter.path) else {
        return "unknown".into();
    };
    let key = (adapter.path.clone(), meta.len(), meta.modified().ok());
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hash) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return hash;
    }
    let hash = sakiko_adapters::short_hash(&adapter.path).unwrap_or_else(|_| "unknown".into());
    if let Ok(mut c) = cache.lock() {
        c.insert(key, hash.clone());
    }
    hash
}

/// A1111's `quote()`: JSON string syntax for values with a comma, colon or newline.
fn a1111_quote(v: &str) -> String {
    if v.contains([',', ':', '\n']) {
        serde_json::to_string(v).expect("a string serialises")
    } else {
        v.to_owned()
    }
}
