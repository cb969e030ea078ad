//! Low-precision files end to end (`tools/reference/lowp.py`): a Q8_0 GGUF denoiser in
//! ComfyUI-GGUF's layout, and a scaled-fp8 denoiser with an fp8 text encoder and VAE, each against
//! the reference pipeline run on the dequantised weights.

use super::*;

fn lowp(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/lowp")
        .join(name)
}

fn lowp_expected(key: &str) -> (Vec<f32>, Vec<usize>) {
    WeightFile::open(lowp("expected.safetensors"))
        .and_then(|f| f.read_f32(key))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn check_lowp(name: &str, files: ModelFiles) {
    let result = run::<Flex>(files, &case("euler"));
    let (latent, shape) = lowp_expected(&format!("{name}/latent"));
    assert_eq!(result.latent.dims().to_vec(), shape);
    let ours: Vec<f32> = result.latent.into_data().to_vec().expect("f32");
    let err = max_abs(&ours, &latent);
    println!("{name}: latent max |Δ| {err:.2e}");
    assert!(err <= 1e-4, "{name}: latent differs by {err}");
    let image = WeightFile::open(lowp("expected.safetensors"))
        .and_then(|f| f.read_bytes(&format!("{name}/image")))
        .expect("image");
    assert!(max_level_diff(&result.images, &image) <= 1);
}

#[test]
fn a_q8_0_gguf_denoiser_matches_the_reference_on_its_dequantised_weights() {
    let gguf = lowp("models/diffusion_models/tiny_lumina_q8_0.gguf");
    let inspected = sakiko_pipeline::inspect(&gguf).expect("inspect");
    assert_eq!(
        inspected
            .components
            .iter()
            .map(|d| d.component())
            .collect::<Vec<_>>(),
        [Component::Dit]
    );
    assert_eq!(
        inspected
            .dtypes
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["BF16", "F32", "Q8_0"]
    );
    let models = fixture("models");
    // The configuration is detected from the GGUF shapes.
    let files = ModelFiles::new(
        gguf,
        models.join("text_encoders/tiny_gemma2_fp16.safetensors"),
        models.join("vae/tiny_ae.safetensors"),
    )
    .with_text_encoder_config(fixture("text_encoder_config.json"))
    .with_vae_config(fixture("vae_config.json"));
    check_lowp("gguf", files);
}

#[test]
fn fp8_denoiser_text_encoder_and_vae_match_the_reference_on_their_dequantised_weights() {
    // In a ComfyUI models folder GGUF files are candidates too: two denoisers are ambiguous.
    let err = ModelFiles::models_dir(lowp("models")).expect_err("two denoisers");
    assert!(
        matches!(&err, PipelineError::Ambiguous { candidates, .. } if candidates.len() == 2),
        "{err}"
    );
    let models = lowp("models");
    let files = ModelFiles::new(
        models.join("diffusion_models/tiny_lumina_scaled_fp8.safetensors"),
        models.join("text_encoders/tiny_gemma2_fp8.safetensors"),
        models.join("vae/tiny_ae_fp8.safetensors"),
    )
    .with_text_encoder_config(fixture("text_encoder_config.json"))
    .with_vae_config(fixture("vae_config.json"));
    check_lowp("fp8", files);
}
