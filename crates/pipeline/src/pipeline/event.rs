//! The pipeline's progress events, and how a user's callback cancels it.

use std::ops::ControlFlow;
use std::path::PathBuf;

use image::RgbImage;

use crate::{Component, MemoryEstimate, PipelineError};

#[cfg(doc)]
use crate::{GenerationRequest, Pipeline, latent_preview};

/// What the pipeline is doing; the callback given to [`Pipeline::generate`] sees every event and
/// cancels by returning `ControlFlow::Break(())`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A component's weights are being read.
    Load {
        /// Which.
        component: Component,
        /// From where.
        path: PathBuf,
    },
    /// A component's weights were freed (memory-lean mode).
    Release {
        /// Which.
        component: Component,
    },
    /// The prompts were tokenized (counts include BOS).
    Tokens {
        /// Prompt tokens.
        positive: usize,
        /// Negative-prompt tokens.
        negative: usize,
    },
    /// Something the user should know (long prompt, prompt warnings).
    Warning(String),
    /// Estimated peak memory of this request.
    Memory(MemoryEstimate),
    /// A sampling step finished.
    Step {
        /// The step just finished (from 0).
        step: usize,
        /// Total steps.
        steps: usize,
        /// σ at its start.
        sigma: f32,
    },
    /// The latents are being decoded.
    Decode,
    /// An adapter was read and matched to the models' layers (once per adapter set).
    Adapter(sakiko_adapters::AdapterReport),
    /// A cheap preview of the image being sampled (batch item 0, at latent resolution), every
    /// [`GenerationRequest::preview_every`] steps and after the last.
    Preview {
        /// The step just finished (from 0).
        step: usize,
        /// Total steps.
        steps: usize,
        /// The x0 prediction mapped to RGB (see [`latent_preview`]).
        image: RgbImage,
    },
}

impl Event {
    /// The event's kind, for messages (`step 3/30`, `preview`, `load`, …).
    pub fn name(&self) -> String {
        match self {
            Event::Load { component, .. } => format!("loading the {component}"),
            Event::Release { component } => format!("releasing the {component}"),
            Event::Tokens { .. } => "tokenizing".into(),
            Event::Warning(_) => "a warning".into(),
            Event::Memory(_) => "the memory estimate".into(),
            Event::Step { step, steps, .. } => format!("step {}/{steps}", step + 1),
            Event::Decode => "decoding".into(),
            Event::Adapter(_) => "an adapter".into(),
            Event::Preview { step, steps, .. } => {
                format!("the preview of step {}/{steps}", step + 1)
            }
        }
    }
}

/// Turns a user's event callback into the stages' `emit`: a break becomes
/// [`PipelineError::Cancelled`].
pub(super) fn emitter<F>(on_event: &mut F) -> impl FnMut(Event) -> Result<(), PipelineError> + '_
where
    F: FnMut(&Event) -> ControlFlow<()>,
{
    move |event: Event| match on_event(&event) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(PipelineError::Cancelled(format!("at {}", event.name()))),
    }
}
