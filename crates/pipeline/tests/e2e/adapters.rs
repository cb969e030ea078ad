//! Adapters in the pipeline (`tools/reference/adapters.py`): the reference generation with a DiT
//! LoRA and a text-encoder LoKr, and switching adapters on resident models without reading the
//! base weights again.

use std::ops::ControlFlow;

use burn::backend::Flex;
use sakiko_pipeline::{AdapterSpec, Event, GenerationRequest, Pipeline, PipelineOptions, Strength};
use sakiko_weights::WeightFile;

use crate::{case, files, max_abs};

fn lora(name: &str, dit: f32, text_encoder: f32) -> AdapterSpec {
    AdapterSpec {
        path: std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/e2e_adapters/loras")
            .join(format!("{name}.safetensors")),
        strength: Strength { dit, text_encoder },
    }
}

fn request(adapters: Vec<AdapterSpec>) -> GenerationRequest {
    GenerationRequest {
        adapters,
        ..case("euler").seed(11)
    }
}

fn reference() -> Vec<f32> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/e2e_adapters/expected.safetensors");
    WeightFile::open(path)
        .and_then(|f| f.read_f32("adapters/latent"))
        .expect("reference")
        .0
}

fn latent(pipeline: &mut Pipeline<Flex>, request: &GenerationRequest) -> (Vec<f32>, Vec<Event>) {
    let mut events = Vec::new();
    let g = pipeline
        .generate(request, |e| {
            events.push(e.clone());
            ControlFlow::Continue(())
        })
        .expect("generation");
    (g.latent.into_data().to_vec().unwrap(), events)
}

fn loads(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, Event::Load { .. }))
        .count()
}

/// With every model resident, adapters switch from memory: on, off, on again give the reference,
/// the base result and the reference again, bit for bit, and no model is read a second time.
#[test]
fn adapters_switch_on_resident_models_without_reloading() {
    let with = vec![
        lora("tiny_dit_lora", 0.8, 0.8),
        lora("tiny_te_lokr", 0.6, 0.6),
    ];
    let mut pipeline = Pipeline::<Flex>::builder(files())
        .options(PipelineOptions {
            keep_in_memory: true,
            ..Default::default()
        })
        .build()
        .unwrap();
    let (first, events) = latent(&mut pipeline, &request(with.clone()));
    let err = max_abs(&first, &reference());
    assert!(err < 1e-4, "latent differs from the reference by {err}");
    assert_eq!(loads(&events), 3);
    let reports: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Adapter(r) => Some((r.dit_layers, r.text_encoder_layers)),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 2);
    assert!(reports[0].0 > 0 && reports[0].1 == 0 && reports[1].0 == 0 && reports[1].1 > 0);

    let (plain, events) = latent(&mut pipeline, &request(vec![]));
    assert_eq!(loads(&events), 0, "switching adapters read no file");
    let mut fresh = Pipeline::<Flex>::builder(files()).build().unwrap();
    assert!(
        plain == latent(&mut fresh, &request(vec![])).0,
        "restored base"
    );
    assert!(
        max_abs(&plain, &first) > 1e-2,
        "the adapters change the result"
    );

    let (again, events) = latent(&mut pipeline, &request(with));
    assert_eq!(loads(&events), 0);
    assert!(again == first, "re-merged bit for bit");
}

/// Strength 0 everywhere gives exactly the generation without adapters.
#[test]
fn zero_strength_adapters_change_nothing() {
    let zero = vec![
        lora("tiny_dit_lora", 0.0, 0.0),
        lora("tiny_te_lokr", 0.0, 0.0),
    ];
    let mut pipeline = Pipeline::<Flex>::builder(files()).build().unwrap();
    let (with, _) = latent(&mut pipeline, &request(zero));
    let (without, _) = latent(&mut pipeline, &request(vec![]));
    assert!(with == without);
}
