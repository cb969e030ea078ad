//! No silent garbage: NaN, infinity and f16 overflow in any component stop the generation with
//! an error naming the tensor or the stage and step; configurations that cannot be detected say
//! what to pass.

use super::*;

const DIT: &str = "diffusion_models/tiny_lumina_bf16.safetensors";
const TEXT_ENCODER: &str = "text_encoders/tiny_gemma2_fp16.safetensors";
const VAE: &str = "vae/tiny_ae.safetensors";

/// The fixture models, with `component`'s tensor `key` edited in a copy under `dir`.
fn edited(dir: &Path, component: &str, key: &str, edit: impl FnOnce(&mut [f32])) -> ModelFiles {
    let model = |c: &str| fixture("models").join(c);
    let copy = dir.join(Path::new(component).file_name().expect("file name"));
    sakiko_weights::write_edited(model(component), &copy, key, edit).expect("edited copy");
    let pick = |c: &str| {
        if c == component {
            copy.clone()
        } else {
            model(c)
        }
    };
    ModelFiles::new(pick(DIT), pick(TEXT_ENCODER), pick(VAE))
        .with_text_encoder_config(fixture("text_encoder_config.json"))
        .with_vae_config(fixture("vae_config.json"))
}

fn generate(
    files: ModelFiles,
    options: PipelineOptions,
    request: &GenerationRequest,
) -> Result<sakiko_pipeline::Generation<Flex>, PipelineError> {
    Pipeline::<Flex>::builder(files)
        .options(options)
        .build()?
        .generate(request, |_| ControlFlow::Continue(()))
}

fn unchecked() -> PipelineOptions {
    PipelineOptions {
        check_weights: false,
        ..PipelineOptions::default()
    }
}

fn fill(value: f32) -> impl FnOnce(&mut [f32]) {
    move |v: &mut [f32]| v.fill(value)
}

#[test]
fn infinite_weights_are_named_at_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (component, key) in [
        (DIT, "model.diffusion_model.layers.0.attention.out.weight"),
        (TEXT_ENCODER, "model.layers.0.mlp.down_proj.weight"),
        (VAE, "decoder.conv_out.weight"),
    ] {
        let files = edited(dir.path(), component, key, fill(f32::INFINITY));
        let err = generate(files, PipelineOptions::default(), &case("euler")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains(&format!("tensor `{key}` holds "))
                && message.contains(
                    "non-finite values (the first, at index 0, is inf); the file is corrupt"
                ),
            "{component}: {message}"
        );
    }
}

#[test]
fn without_the_weight_check_each_stage_stops_at_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = case("euler");
    for (component, key, stage, step) in [
        (
            DIT,
            "model.diffusion_model.layers.0.attention.out.weight",
            "denoiser",
            Some((0, 6)),
        ),
        (
            TEXT_ENCODER,
            "model.layers.0.mlp.down_proj.weight",
            "text encoder",
            None,
        ),
        (VAE, "decoder.conv_out.weight", "VAE decoder", None),
    ] {
        let files = edited(dir.path(), component, key, fill(f32::INFINITY));
        let err = generate(files, unchecked(), &request).unwrap_err();
        assert!(
            matches!(err, PipelineError::NonFinite { stage: s, step: t, .. } if s == stage && t == step),
            "{component}: {err}"
        );
    }
    // NaN as well, and in the init image's encoding.
    let files = edited(dir.path(), VAE, "encoder.conv_in.weight", fill(f32::NAN));
    let err = generate(files, unchecked(), &case("img2img")).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::NonFinite {
                stage: "VAE encoder",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_stage_error_says_where_and_what_to_try() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = edited(
        dir.path(),
        DIT,
        "model.diffusion_model.layers.0.attention.out.weight",
        fill(f32::INFINITY),
    );
    let err = generate(files, unchecked(), &case("euler")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the denoiser produced non-finite values (NaN or infinity) at step 1 of 6, computing in \
         f32: the weights may be corrupt (keep the weight check on), or this backend computes \
         wrongly here (run `sakiko doctor`); try --dtype f32 or another backend"
    );
}

/// Weights within f16's range whose products are not: the patch embedding has no overflow guard
/// (ComfyUI clamps only attention and feed-forward outputs), so in f16 its output overflows on
/// the first step. The same file in f32 (the negative control) computes finite values.
#[test]
fn an_f16_overflow_stops_at_its_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "model.diffusion_model.x_embedder.weight";
    let alternate = |v: &mut [f32]| {
        for (i, x) in v.iter_mut().enumerate() {
            *x = if i % 2 == 0 { 60000.0 } else { 50000.0 };
        }
    };
    let files = edited(dir.path(), DIT, key, alternate);
    let f16 = PipelineOptions {
        dit_dtype: Some(FloatDType::F16),
        ..PipelineOptions::default()
    };
    let err = generate(files.clone(), f16, &case("euler")).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::NonFinite {
                stage: "denoiser",
                step: Some((0, 6)),
                dtype: FloatDType::F16
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .ends_with("f16 overflowed; try --dtype bf16 or f32")
    );
    let f32_result = generate(files, PipelineOptions::default(), &case("euler"));
    assert!(f32_result.is_ok(), "{:?}", f32_result.err());
}

#[test]
fn weights_beyond_f16_are_refused_in_f16_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = "model.diffusion_model.x_embedder.weight";
    let files = edited(dir.path(), DIT, key, |v| v[3] = 1e5);
    let f16 = PipelineOptions {
        dit_dtype: Some(FloatDType::F16),
        ..PipelineOptions::default()
    };
    let err = generate(files.clone(), f16, &case("euler")).unwrap_err();
    assert!(
        err.to_string().ends_with(&format!(
            "tensor `{key}` holds 99840, beyond f16's range (±65504): load this model in bf16 \
             or f32 (`--dtype`)"
        )),
        "{err}"
    );
    let bf16 = PipelineOptions {
        dit_dtype: Some(FloatDType::BF16),
        ..PipelineOptions::default()
    };
    let loaded = generate(files, bf16, &case("euler").steps(1));
    assert!(
        !matches!(loaded, Err(PipelineError::Weights(_))),
        "{:?}",
        loaded.err()
    );
}

/// The README's library snippet, pointed at the tiny models without their configs.
#[test]
fn undetectable_configurations_say_what_to_pass() {
    let dir = fixture("models");
    let err = ModelFiles::models_dir(&dir)
        .and_then(|files| Pipeline::<Flex>::builder(files).build())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "text encoder: cannot tell the configuration of the Gemma-2 text encoder in {}: \
             hidden size 32, which matches no known Gemma-2 (2B: hidden size 2304); pass the \
             model's Hugging Face config.json (`--text-encoder-config config.json`, or \
             `ModelFiles::with_text_encoder_config`)",
            dir.join(TEXT_ENCODER).display()
        )
    );
    let err = ModelFiles::models_dir(&dir)
        .map(|files| files.with_text_encoder_config(fixture("text_encoder_config.json")))
        .and_then(|files| Pipeline::<Flex>::builder(files).build())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "VAE: cannot tell the configuration of the VAE in {}: levels of [8, 16, 16, 16] \
             channels, which FLUX's 32 normalisation groups do not divide (8); pass the model's \
             diffusers config.json (`--vae-config config.json`, or `ModelFiles::with_vae_config`)",
            dir.join(VAE).display()
        )
    );
}
