//! Fused CPU kernels for Burn's Flex backend.
//!
//! Flex runs each Burn op as its own pass over memory, with scalar `exp`/`tanh`, and falls back
//! to a generic strided iterator for broadcasts and views. The hot spots of our models (linear
//! layers, convolutions, attention, RoPE, RMSNorm, SwiGLU, GeGLU, GroupNorm + SiLU, upsampling) are therefore
//! written here once as fused, threaded kernels over f32 slices. Each public op in this crate calls [`fast`] first: on Flex with f32 tensors it gets the
//! tensors' storage, otherwise the caller runs the generic Burn code, which every other backend
//! (and half precision on Flex) takes. Every kernel is tested against that generic path.
//!
//! The dispatch compares `B`'s float primitive with `FlexTensor` by `TypeId`, so the models stay
//! generic over plain `B: Backend` (a backend-extension trait would put a bound on every model).

mod attention;
mod conv;
mod image;
mod linear;
mod math;
#[cfg(test)]
mod tests;

pub(crate) use attention::{Visible, attention};
pub(crate) use conv::conv2d;
pub(crate) use image::{group_norm, upsample_nearest2x};
pub(crate) use linear::linear;
pub(crate) use math::{geglu, rms_norm, rope_half, rope_pairs, swiglu};

use std::any::{Any, TypeId};
use std::mem::{ManuallyDrop, MaybeUninit};

use burn::tensor::{Bytes, DType, Tensor, TensorPrimitive, backend::Backend};
use burn_flex::{FlexTensor, Layout};

/// Whether `B` is Flex.
pub(crate) fn is_flex<B: Backend>() -> bool {
    TypeId::of::<B::FloatTensorPrimitive>() == TypeId::of::<FlexTensor>()
}

/// Whether the fused kernels take tensors of this dtype on `B` (Flex, f32).
pub(crate) fn fast<B: Backend>(dtype: DType) -> bool {
    is_flex::<B>() && dtype == DType::F32
}

/// The `FlexTensor` behind `t`, for a `B` that [`is_flex`].
pub(crate) fn into_flex<B: Backend, const D: usize>(t: Tensor<B, D>) -> FlexTensor {
    let TensorPrimitive::Float(p) = t.into_primitive() else {
        unreachable!("the kernels are only called on float tensors")
    };
    let boxed: Box<dyn Any> = Box::new(p);
    *boxed
        .downcast::<FlexTensor>()
        .unwrap_or_else(|_| unreachable!("B's float primitive is FlexTensor"))
}

/// `t` as a tensor of `B`, for a `B` that [`is_flex`].
pub(crate) fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    let boxed: Box<dyn Any> = Box::new(t);
    let p = *boxed
        .downcast::<B::FloatTensorPrimitive>()
        .unwrap_or_else(|_| unreachable!("B's float primitive is FlexTensor"));
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// `t` with a row-major layout (copied only if it is a strided view).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// `t` as it lies if its rows (last dimension) are contiguous and its strides positive, which the
/// kernels that read views at their strides accept; otherwise a row-major copy.
pub(crate) fn row_readable(t: FlexTensor) -> FlexTensor {
    let layout = t.layout();
    if layout.strides().last() == Some(&1) && layout.has_positive_strides() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The f32 values of a contiguous `t`, in row-major order.
pub(crate) fn slice(t: &FlexTensor) -> &[f32] {
    let (start, end) = t
        .layout()
        .contiguous_offsets()
        .unwrap_or_else(|| unreachable!("made contiguous first"));
    &t.storage::<f32>()[start..end]
}

/// `len` f32s that `write` sets, every one, without zeroing them first: on heap memory used
/// before, `vec![0.0; len]` is a `memset`, 5.7 % of a 256² VAE decode in `perf`, for outputs
/// that the kernels overwrite anyway.
///
/// # Safety
/// `write` must initialise all `len` values before it returns.
#[allow(unsafe_code)]
pub(crate) unsafe fn filled_by(
    len: usize,
    write: impl FnOnce(&mut [MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut buf: Vec<MaybeUninit<f32>> = Vec::with_capacity(len);
    // SAFETY: within the capacity; `MaybeUninit` needs no initialisation.
    unsafe { buf.set_len(len) };
    write(&mut buf);
    let mut buf = ManuallyDrop::new(buf);
    // SAFETY: the same allocation, with `MaybeUninit<f32>`'s layout, every value initialised (the
    // caller's promise).
    unsafe { Vec::from_raw_parts(buf.as_mut_ptr().cast(), len, buf.capacity()) }
}

/// A contiguous f32 tensor of `shape` holding `data`.
pub(crate) fn tensor_of(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape.to_vec().into()),
        DType::F32,
    )
}
