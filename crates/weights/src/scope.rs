//! A key prefix within a checkpoint, and loading tensors of checked shapes through it.

use burn::tensor::{DType, Tensor, TensorData, backend::Backend};

use crate::{WeightError, WeightFile};

/// The tensors of a [`WeightFile`] under a key prefix; nested scopes append to it.
#[derive(Debug, Clone)]
pub struct Weights<'a> {
    file: &'a WeightFile,
    prefix: String,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(file: &'a WeightFile, prefix: String) -> Self {
        Self { file, prefix }
    }

    /// The file.
    pub fn file(&self) -> &'a WeightFile {
        self.file
    }

    /// The full key of `name` in this scope.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A nested scope: `scope("decoder")` then `scope("conv_in")` reads `decoder.conv_in.*`.
    pub fn scope(&self, name: &str) -> Weights<'a> {
        Weights {
            file: self.file,
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// Whether `name` exists in this scope.
    pub fn contains(&self, name: &str) -> bool {
        self.file.contains(&self.key(name))
    }

    /// The stored shape of `name`.
    pub fn shape(&self, name: &str) -> Option<&'a [usize]> {
        self.file.shape(&self.key(name))
    }

    /// Loads `name` as an f32 tensor of exactly `shape`.
    pub fn tensor<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        self.tensor_reshaped(name, shape, &shape, device)
    }

    /// Loads `name`, stored with shape `stored` (checked), as a tensor of `shape` with the same
    /// number of elements (a `[C, C, 1, 1]` convolution kernel used as a `[C, C]` matrix).
    pub fn tensor_reshaped<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        stored: &[usize],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        self.tensor_reshaped_as(name, shape, stored, DType::F32, device)
    }

    /// [`Weights::tensor`] in `dtype` (e.g. `DType::BF16` to keep bf16 weights at half the
    /// memory of f32; only one tensor is ever held in f32 while converting).
    pub fn tensor_as<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        self.tensor_reshaped_as(name, shape, &shape, dtype, device)
    }

    /// [`Weights::tensor_reshaped`] in `dtype`.
    pub fn tensor_reshaped_as<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        stored: &[usize],
        dtype: DType,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, WeightError> {
        let key = self.key(name);
        let (values, found) = self.file.read_f32(&key)?;
        if found != stored {
            return Err(WeightError::Shape {
                path: self.file.path().to_path_buf(),
                key,
                expected: stored.to_vec(),
                found,
            });
        }
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            (device, dtype),
        ))
    }
}
