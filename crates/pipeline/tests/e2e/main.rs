//! The pipeline against `tools/reference/pipeline.py` (ComfyUI semantics on tiny models), and the
//! same result from every way of giving the files.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{FloatDType, backend::Backend};
use image::DynamicImage;
use sakiko_pipeline::{
    Component, Event, GenerationRequest, ModelFiles, Pipeline, PipelineError, PipelineOptions,
};
use sakiko_sampling::{Guidance, Sampler};
use sakiko_weights::WeightFile;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/e2e")
        .join(name)
}

fn expected(key: &str) -> (Vec<f32>, Vec<usize>) {
    WeightFile::open(fixture("expected.safetensors"))
        .and_then(|f| f.read_f32(key))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn expected_bytes(key: &str) -> Vec<u8> {
    WeightFile::open(fixture("expected.safetensors"))
        .and_then(|f| f.read_bytes(key))
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Token ids, stored as i64.
fn expected_ids(key: &str) -> Vec<u32> {
    expected_bytes(key)
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")) as u32)
        .collect()
}

fn files() -> ModelFiles {
    ModelFiles::models_dir(fixture("models"))
        .expect("the fixture folder has one file per component")
        .with_text_encoder_config(fixture("text_encoder_config.json"))
        .with_vae_config(fixture("vae_config.json"))
}

/// The reference cases of `tools/reference/pipeline.py`.
fn case(name: &str) -> GenerationRequest {
    match name {
        "euler" => GenerationRequest::new(
            "<tags>\n<special>1girl</special>\n<general>blue hair, smile</general>\n</tags>",
        )
        .size(64, 48)
        .steps(6)
        .guidance(Guidance::Cfg { scale: 4.5 })
        .sampler(Sampler::Euler)
        .seed(42),
        "ancestral" => GenerationRequest::new("a girl with blue hair under cherry blossoms")
            .negative("lowres, bad anatomy")
            .size(48, 64)
            .steps(5)
            .guidance(Guidance::Cfg { scale: 4.0 })
            .sampler(Sampler::EulerAncestral)
            .seed(7)
            .batch(2),
        "img2img" => GenerationRequest::new("1girl, smile")
            .size(64, 48)
            .steps(5)
            .guidance(Guidance::Cfg { scale: 3.0 })
            .sampler(Sampler::Euler)
            .seed(3)
            .init_image(
                image::open(fixture("init.png"))
                    .expect("init.png")
                    .to_rgb8(),
                0.6,
            ),
        other => panic!("no case {other}"),
    }
}

fn run<B: Backend>(
    files: ModelFiles,
    request: &GenerationRequest,
) -> sakiko_pipeline::Generation<B> {
    Pipeline::<B>::builder(files)
        .build()
        .expect("pipeline")
        .generate(request, |_| ControlFlow::Continue(()))
        .expect("generation")
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest per-channel difference between our images and the reference's 8-bit pixels.
fn max_level_diff(images: &[DynamicImage], reference: &[u8]) -> u8 {
    let ours: Vec<u8> = images.iter().flat_map(|i| i.to_rgb8().into_raw()).collect();
    assert_eq!(ours.len(), reference.len());
    ours.iter()
        .zip(reference)
        .map(|(&a, &b)| a.abs_diff(b))
        .max()
        .unwrap_or(0)
}

fn check_case(name: &str) {
    let result = run::<Flex>(files(), &case(name));
    let (latent, shape) = expected(&format!("{name}/latent"));
    assert_eq!(result.latent.dims().to_vec(), shape);
    let ours: Vec<f32> = result.latent.into_data().to_vec().expect("f32");
    let err = max_abs(&ours, &latent);
    println!("{name}: latent max |Δ| {err:.2e}");
    assert!(err < 1e-4, "{name}: latent differs by {err}");
    let image = expected_bytes(&format!("{name}/image"));
    assert!(max_level_diff(&result.images, &image) <= 1);
    assert_eq!(
        result.positive_tokens,
        expected_ids(&format!("{name}/ids_positive")).len()
    );
    assert_eq!(
        result.negative_tokens,
        expected_ids(&format!("{name}/ids_negative")).len()
    );
}

#[test]
fn euler_matches_the_reference() {
    check_case("euler");
}

#[test]
fn euler_ancestral_batch_of_two_matches_the_reference() {
    check_case("ancestral");
}

#[test]
fn img2img_matches_the_reference() {
    check_case("img2img");
}

#[test]
fn half_precision_denoiser_stays_close_to_the_reference() {
    let (reference, _) = expected("euler/latent");
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for dtype in [FloatDType::BF16, FloatDType::F16] {
        let mut pipeline = Pipeline::<Flex>::builder(files())
            .dit_dtype(Some(dtype))
            .build()
            .expect("pipeline");
        assert_eq!(pipeline.dit_dtype(), dtype);
        let latent: Vec<f32> = pipeline
            .generate(&case("euler"), |_| ControlFlow::Continue(()))
            .expect("generation")
            .latent
            .into_data()
            .to_vec()
            .expect("f32");
        assert!(latent.iter().all(|v| v.is_finite()));
        let err = max_abs(&latent, &reference);
        println!("{dtype:?}: latent max |Δ| {err:.3e} (latent max |x| {scale:.2})");
        assert!(err < 0.05 * scale, "{dtype:?}: {err}");
    }
    // Flex computes f32 by default.
    let pipeline = Pipeline::<Flex>::builder(files())
        .build()
        .expect("pipeline");
    assert_eq!(pipeline.dit_dtype(), FloatDType::F32);
}

#[test]
fn half_precision_vae_stays_close_to_the_reference() {
    let reference = expected_bytes("euler/image");
    for dtype in [FloatDType::BF16, FloatDType::F16] {
        let mut pipeline = Pipeline::<Flex>::builder(files())
            .vae_dtype(Some(dtype))
            .build()
            .expect("pipeline");
        assert_eq!(pipeline.vae_dtype(), dtype);
        let result = pipeline
            .generate(&case("euler"), |_| ControlFlow::Continue(()))
            .expect("generation");
        // The latent does not depend on the VAE; the 8-bit image moves by a few levels.
        let worst = max_level_diff(&result.images, &reference);
        println!("VAE {dtype:?}: image max level difference {worst}");
        assert!(worst <= 8, "{dtype:?}: {worst} levels");
    }
}

#[test]
fn half_precision_text_encoder_stays_close_to_the_reference() {
    let (reference, _) = expected("euler/latent");
    let scale = reference.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for dtype in [FloatDType::BF16, FloatDType::F16] {
        let mut pipeline = Pipeline::<Flex>::builder(files())
            .text_encoder_dtype(Some(dtype))
            .build()
            .expect("pipeline");
        assert_eq!(pipeline.text_encoder().dtype(), dtype);
        let latent: Vec<f32> = pipeline
            .generate(&case("euler"), |_| ControlFlow::Continue(()))
            .expect("generation")
            .latent
            .into_data()
            .to_vec()
            .expect("f32");
        let err = max_abs(&latent, &reference);
        println!("text encoder {dtype:?}: latent max |Δ| {err:.3e} (latent max |x| {scale:.2})");
        assert!(latent.iter().all(|v| v.is_finite()));
        assert!(err < 0.05 * scale, "{dtype:?}: {err}");
    }
}

#[test]
fn the_text_encoder_matches_transformers() {
    let mut te =
        sakiko_pipeline::TextEncoder::<Flex>::new(&files(), Default::default(), Default::default())
            .expect("text encoder");
    let request = case("euler");
    let ids = te.tokenize(&request.model_text()).expect("ids");
    assert_eq!(ids, expected_ids("euler/ids_positive"));
    assert_eq!(te.tokenize("").expect("ids"), vec![2]);
    let cond: Vec<f32> = te
        .encode(&ids)
        .expect("cond")
        .into_data()
        .to_vec()
        .expect("f32");
    let (want, _) = expected("euler/cond");
    assert!(max_abs(&cond, &want) < 5e-5);
}

/// Writes the three fixture files into one all-in-one checkpoint with ComfyUI's prefixes.
fn all_in_one(dir: &Path) -> PathBuf {
    let models = fixture("models");
    let sources = [
        (
            "diffusion_models/tiny_lumina_bf16.safetensors",
            "model.diffusion_model.",
            "",
        ),
        (
            "text_encoders/tiny_gemma2_fp16.safetensors",
            "text_encoders.gemma2_2b.transformer.",
            "text_encoders.gemma2_2b.",
        ),
        ("vae/tiny_ae.safetensors", "vae.", ""),
    ];
    let mut tensors = Vec::new();
    for (file, prefix, spiece_prefix) in sources {
        let f = WeightFile::open(models.join(file)).expect("fixture");
        for key in f.keys().map(str::to_owned).collect::<Vec<_>>() {
            let bytes = f.read_bytes(&key).expect("tensor");
            let name = match key.strip_prefix("model.diffusion_model.") {
                Some(k) => format!("model.diffusion_model.{k}"),
                None if key == "spiece_model" => format!("{spiece_prefix}spiece_model"),
                None => format!("{prefix}{key}"),
            };
            let sakiko_weights::StoredDtype::Safetensors(dtype) = f.dtype(&key).expect("dtype")
            else {
                panic!("{key}: the fixtures are safetensors");
            };
            tensors.push((name, dtype, f.shape(&key).expect("shape").to_vec(), bytes));
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let path = dir.join("aio.safetensors");
    safetensors::serialize_to_file(views, None, &path).expect("write");
    path
}

fn latent_of(files: ModelFiles) -> Vec<f32> {
    run::<Flex>(files, &case("euler"))
        .latent
        .into_data()
        .to_vec()
        .expect("f32")
}

#[test]
fn all_in_one_checkpoint_and_diffusers_folder_give_identical_results() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reference = latent_of(files());

    let aio = ModelFiles::checkpoint(all_in_one(dir.path()))
        .with_text_encoder_config(fixture("text_encoder_config.json"))
        .with_vae_config(fixture("vae_config.json"));
    let inspected = sakiko_pipeline::inspect(&aio.dit).expect("inspect");
    let found: Vec<Component> = inspected.components.iter().map(|d| d.component()).collect();
    assert_eq!(
        found,
        [Component::Dit, Component::TextEncoder, Component::Vae]
    );
    assert_eq!(latent_of(aio), reference);

    // A diffusers pipeline folder: config.json per component, tokenizer/tokenizer.model.
    let root = dir.path().join("diffusers");
    let models = fixture("models");
    for (sub, config, weights, name) in [
        (
            "transformer",
            "dit_config.json",
            "diffusion_models/tiny_lumina_bf16.safetensors",
            "diffusion_pytorch_model.safetensors",
        ),
        (
            "text_encoder",
            "text_encoder_config.json",
            "text_encoders/tiny_gemma2_fp16.safetensors",
            "model.safetensors",
        ),
        (
            "vae",
            "vae_config.json",
            "vae/tiny_ae.safetensors",
            "diffusion_pytorch_model.safetensors",
        ),
    ] {
        std::fs::create_dir_all(root.join(sub)).expect("mkdir");
        std::fs::copy(fixture(config), root.join(sub).join("config.json")).expect("copy");
        std::fs::copy(models.join(weights), root.join(sub).join(name)).expect("copy");
    }
    let spiece = WeightFile::open(models.join("text_encoders/tiny_gemma2_fp16.safetensors"))
        .and_then(|f| f.read_bytes("spiece_model"))
        .expect("spiece_model");
    std::fs::create_dir_all(root.join("tokenizer")).expect("mkdir");
    std::fs::write(root.join("tokenizer/tokenizer.model"), spiece).expect("write");
    let diffusers = ModelFiles::diffusers(&root).expect("diffusers folder");
    assert!(diffusers.tokenizer.is_some());
    assert_eq!(latent_of(diffusers), reference);

    // Explicit files with the denoiser's config given rather than detected.
    let explicit = ModelFiles::new(
        models.join("diffusion_models/tiny_lumina_bf16.safetensors"),
        models.join("text_encoders/tiny_gemma2_fp16.safetensors"),
        models.join("vae/tiny_ae.safetensors"),
    )
    .with_dit_config(fixture("dit_config.json"))
    .with_text_encoder_config(fixture("text_encoder_config.json"))
    .with_vae_config(fixture("vae_config.json"));
    assert_eq!(latent_of(explicit), reference);
}

fn events_of(pipeline: &mut Pipeline<Flex>, request: &GenerationRequest) -> Vec<Event> {
    let mut events = Vec::new();
    pipeline
        .generate(request, |e| {
            events.push(e.clone());
            ControlFlow::Continue(())
        })
        .expect("generation");
    events
}

fn loads(events: &[Event]) -> Vec<Component> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Load { component, .. } => Some(*component),
            _ => None,
        })
        .collect()
}

#[test]
fn lean_mode_frees_each_model_and_the_cache_skips_the_encoder() {
    let mut pipeline = Pipeline::<Flex>::builder(files())
        .build()
        .expect("pipeline");
    let request = case("euler");
    let first = events_of(&mut pipeline, &request);
    assert_eq!(
        loads(&first),
        [Component::TextEncoder, Component::Dit, Component::Vae]
    );
    let releases = first
        .iter()
        .filter(|e| matches!(e, Event::Release { .. }))
        .count();
    assert_eq!(releases, 3);
    let steps: Vec<usize> = first
        .iter()
        .filter_map(|e| match e {
            Event::Step { step, steps: 6, .. } => Some(*step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, [0, 1, 2, 3, 4, 5]);
    assert!(first.contains(&Event::Tokens {
        positive: 124,
        negative: 1
    }));
    // Same prompts again: both embeddings are cached, so the encoder is not loaded.
    let second = events_of(&mut pipeline, &request);
    assert_eq!(loads(&second), [Component::Dit, Component::Vae]);
}

#[test]
fn keep_in_memory_loads_once_and_repeats_deterministically() {
    let mut pipeline = Pipeline::<Flex>::builder(files())
        .options(PipelineOptions {
            keep_in_memory: true,
            cache_embeddings: false,
            ..Default::default()
        })
        .build()
        .expect("pipeline");
    let request = case("euler");
    let mut latents = Vec::new();
    let mut all_loads = Vec::new();
    for _ in 0..2 {
        let mut events = Vec::new();
        let g = pipeline
            .generate(&request, |e| {
                events.push(e.clone());
                ControlFlow::Continue(())
            })
            .expect("generation");
        all_loads.extend(loads(&events));
        assert!(!events.iter().any(|e| matches!(e, Event::Release { .. })));
        latents.push(g.latent.into_data().to_vec::<f32>().expect("f32"));
    }
    assert_eq!(
        all_loads,
        [Component::TextEncoder, Component::Dit, Component::Vae]
    );
    assert_eq!(latents[0], latents[1]);
}

#[test]
fn the_callback_cancels_between_steps() {
    let mut pipeline = Pipeline::<Flex>::builder(files())
        .build()
        .expect("pipeline");
    let err = pipeline
        .generate(&case("euler"), |e| match e {
            Event::Step { step: 2, .. } => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        })
        .unwrap_err();
    assert!(
        matches!(err, PipelineError::Cancelled(ref m) if m.contains("step 3 of 6")),
        "{err}"
    );
    // Cancelling before any work also works.
    let err = pipeline
        .generate(&case("euler"), |_| ControlFlow::Break(()))
        .unwrap_err();
    assert!(matches!(err, PipelineError::Cancelled(_)));
}

#[test]
fn long_prompts_are_encoded_whole_with_a_warning() {
    let mut pipeline = Pipeline::<Flex>::builder(files())
        .build()
        .expect("pipeline");
    let long = vec!["blue hair, long hair, smile"; 60].join(", ");
    let request = case("euler").steps(1);
    let request = GenerationRequest {
        prompt: long,
        ..request
    };
    let events = events_of(&mut pipeline, &request);
    let tokens = events.iter().find_map(|e| match e {
        Event::Tokens { positive, .. } => Some(*positive),
        _ => None,
    });
    assert!(tokens.is_some_and(|n| n > 256), "{tokens:?}");
    assert!(events.iter().any(
        |e| matches!(e, Event::Warning(w) if w.contains("trained on at most 256") && w.contains("not truncated"))
    ));
}

#[test]
fn bad_requests_are_typed_errors() {
    let ok = case("euler");
    let invalid = |r: GenerationRequest| r.validate().unwrap_err();
    assert!(matches!(
        invalid(ok.clone().size(1000, 48)),
        PipelineError::Request { name: "width", .. }
    ));
    assert!(matches!(
        invalid(ok.clone().size(64, 0)),
        PipelineError::Request { name: "height", .. }
    ));
    assert!(matches!(
        invalid(ok.clone().size(16384, 64)),
        PipelineError::Request { name: "width", .. }
    ));
    assert!(matches!(
        invalid(ok.clone().batch(0)),
        PipelineError::Request {
            name: "batch size",
            ..
        }
    ));
    assert!(matches!(
        invalid(ok.clone().steps(0)),
        PipelineError::Request { name: "steps", .. }
    ));
    assert!(matches!(
        invalid(ok.clone().shift(-1.0)),
        PipelineError::Request { name: "shift", .. }
    ));
    let no_image = GenerationRequest {
        denoise: 0.5,
        ..ok.clone()
    };
    assert!(matches!(
        invalid(no_image),
        PipelineError::Request {
            name: "denoise",
            ..
        }
    ));
    let err = invalid(ok.clone().guidance(Guidance::Cfg { scale: f32::NAN }));
    assert!(matches!(err, PipelineError::Sampling(_)), "{err}");
    let err = invalid(GenerationRequest::new("<tags>\n<general>blue hair</tags>"));
    assert!(
        matches!(err, PipelineError::Prompt(ref m) if m.contains("2:")),
        "{err}"
    );
    // Prompt warnings are returned, not fatal.
    assert!(ok.validate().expect("valid").is_empty());
}

#[test]
fn file_problems_name_the_file_and_the_component() {
    let models = fixture("models");
    let te = models.join("text_encoders/tiny_gemma2_fp16.safetensors");
    let vae = models.join("vae/tiny_ae.safetensors");
    let build = |files: ModelFiles| {
        Pipeline::<Flex>::builder(
            files
                .with_text_encoder_config(fixture("text_encoder_config.json"))
                .with_vae_config(fixture("vae_config.json")),
        )
        .build()
        .unwrap_err()
    };
    // The VAE given as the denoiser.
    let err = build(ModelFiles::new(&vae, &te, &vae));
    assert!(
        matches!(&err, PipelineError::WrongComponent { expected: Component::Dit, found, .. } if found.contains("VAE")),
        "{err}"
    );
    // A missing file.
    let err = build(ModelFiles::new(models.join("nope.safetensors"), &te, &vae));
    assert!(err.to_string().contains("nope.safetensors"), "{err}");
    // A truncated file.
    let dir = tempfile::tempdir().expect("tempdir");
    let cut = dir.path().join("cut.safetensors");
    let bytes =
        std::fs::read(models.join("diffusion_models/tiny_lumina_bf16.safetensors")).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let err = build(ModelFiles::new(&cut, &te, &vae));
    assert!(
        matches!(err, PipelineError::Weights(_)) && err.to_string().contains("cut.safetensors"),
        "{err}"
    );
    // A denoiser for 4 latent channels with a 16-channel VAE.
    let four =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../nextdit/tests/fixtures/test_diffusers");
    let err = build(ModelFiles::new(four, &te, &vae));
    assert!(
        matches!(&err, PipelineError::Incompatible(m) if m.contains("4 latent channels")),
        "{err}"
    );
}

#[test]
fn models_folder_discovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = ModelFiles::models_dir(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            PipelineError::NotFound {
                component: Component::Dit,
                ..
            }
        ),
        "{err}"
    );
    let models = fixture("models");
    for sub in ["diffusion_models", "text_encoders", "vae"] {
        std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        for entry in std::fs::read_dir(models.join(sub)).expect("read_dir") {
            let p = entry.expect("entry").path();
            std::fs::copy(&p, dir.path().join(sub).join(p.file_name().expect("name")))
                .expect("copy");
        }
    }
    // Unrelated files are skipped; a second denoiser makes the choice ambiguous.
    std::fs::write(dir.path().join("diffusion_models/notes.txt"), "x").expect("write");
    std::fs::copy(
        fixture("../e2e/models/vae/tiny_ae.safetensors"),
        dir.path().join("diffusion_models/a_vae.safetensors"),
    )
    .expect("copy");
    let found = ModelFiles::models_dir(dir.path()).expect("one per component");
    assert!(found.dit.ends_with("tiny_lumina_bf16.safetensors"));
    std::fs::copy(
        models.join("diffusion_models/tiny_lumina_bf16.safetensors"),
        dir.path().join("diffusion_models/another.safetensors"),
    )
    .expect("copy");
    let err = ModelFiles::models_dir(dir.path()).unwrap_err();
    assert!(
        matches!(&err, PipelineError::Ambiguous { candidates, .. } if candidates == &["another.safetensors", "tiny_lumina_bf16.safetensors"]),
        "{err}"
    );
    let chosen = ModelFiles::models_dir_with(
        dir.path(),
        [Some(Path::new("another.safetensors")), None, None],
    )
    .expect("chosen by name");
    assert!(chosen.dit.ends_with("diffusion_models/another.safetensors"));
}

mod adapters;
mod doctor;
mod lowp;
mod trust;
