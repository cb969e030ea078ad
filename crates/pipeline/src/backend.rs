//! Checking that a backend can run before loading gigabytes onto it.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{ElementConversion, Tensor, backend::Backend};

use crate::PipelineError;

/// Runs one small computation on `device` and turns a failure (no GPU, no CUDA driver, no Vulkan
/// adapter: backends report these by panicking when the device is first used) into
/// [`PipelineError::Backend`].
///
/// The process's panic hook is left alone (a library must not swap it: other threads may be
/// running), so the backend's own message also reaches the hook (stderr by default).
///
/// ```
/// use burn::backend::Flex;
/// sakiko_pipeline::check_backend::<Flex>(&Default::default())?;
/// # Ok::<(), sakiko_pipeline::PipelineError>(())
/// ```
pub fn check_backend<B: Backend>(device: &B::Device) -> Result<(), PipelineError> {
    // `B::name` itself starts the device on some backends, so it runs inside the probe too.
    let result = catch_unwind(AssertUnwindSafe(|| {
        let x = Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], device);
        (x.sum().into_scalar().elem::<f32>(), B::name(device))
    }));
    match result {
        Ok((6.0, _)) => Ok(()),
        Ok((sum, backend)) => Err(PipelineError::Backend {
            backend,
            reason: format!("a test sum gave {sum} instead of 6"),
        }),
        Err(panic) => Err(PipelineError::Backend {
            backend: backend_name::<B>(),
            reason: payload_text(panic.as_ref()),
        }),
    }
}

/// `wgpu`, `cuda` or `flex` from the backend's type name (the backend's own `name` needs a working
/// device).
pub fn backend_name<B: Backend>() -> String {
    let full = std::any::type_name::<B>();
    ["Wgpu", "Cuda", "Flex", "Rocm", "Metal", "Vulkan"]
        .iter()
        .find(|n| full.contains(*n))
        .map_or_else(|| full.to_owned(), |n| n.to_lowercase())
}

/// A panic's message: its `String` or `&str` payload (what `panic!` and `unwrap` carry).
pub fn panic_message(payload: &(dyn Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
}

/// [`panic_message`], or a generic reason for payloads of other types.
pub(crate) fn payload_text(payload: &(dyn Any + Send)) -> String {
    panic_message(payload).unwrap_or_else(|| "the backend failed to start".into())
}
