//! Checking that a backend can run before loading gigabytes onto it.

use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::{ElementConversion, Tensor, backend::Backend};

use crate::PipelineError;

/// Runs one small computation on `device` and turns a failure (no GPU, no CUDA driver, no Vulkan
/// adapter: backends report these by panicking when the device is first used) into
/// [`PipelineError::Backend`].
///
/// The panic hook is silenced while the probe runs, so call this before starting other threads
/// that might panic (the CLI calls it first thing).
///
/// ```
/// use burn::backend::Flex;
/// sakiko_pipeline::check_backend::<Flex>(&Default::default())?;
/// # Ok::<(), sakiko_pipeline::PipelineError>(())
/// ```
pub fn check_backend<B: Backend>(device: &B::Device) -> Result<(), PipelineError> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let x = Tensor::<B, 1>::from_floats([1.0, 2.0, 3.0], device);
        x.sum().into_scalar().elem::<f32>()
    }));
    std::panic::set_hook(hook);
    let backend = B::name(device);
    match result {
        Ok(sum) if sum == 6.0 => Ok(()),
        Ok(sum) => Err(PipelineError::Backend {
            backend,
            reason: format!("a test sum gave {sum} instead of 6"),
        }),
        Err(panic) => Err(PipelineError::Backend {
            backend,
            reason: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the backend failed to start".into()),
        }),
    }
}
