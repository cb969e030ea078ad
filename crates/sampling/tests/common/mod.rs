//! Loading the reference fixtures written by `tools/reference/sampling.py`.
#![allow(dead_code)] // each test binary uses a different part

use safetensors::{Dtype, SafeTensors};

pub struct Fixtures(Vec<u8>);

impl Fixtures {
    pub fn load() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sampling.safetensors"
        );
        Self(
            std::fs::read(path)
                .expect("fixture file (regenerate with tools/reference/sampling.py)"),
        )
    }

    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.0).expect("valid safetensors")
    }

    /// An f32 tensor's values and shape.
    pub fn f32(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let view = self.view();
        let t = view
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no tensor {name}"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let values = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (values, t.shape().to_vec())
    }

    /// The values of an f32 tensor.
    pub fn values(&self, name: &str) -> Vec<f32> {
        self.f32(name).0
    }

    /// An i64 scalar.
    pub fn i64(&self, name: &str) -> i64 {
        let view = self.view();
        let t = view
            .tensor(name)
            .unwrap_or_else(|_| panic!("fixture has no tensor {name}"));
        assert_eq!(t.dtype(), Dtype::I64, "{name}");
        i64::from_le_bytes(t.data()[..8].try_into().unwrap())
    }

    /// Names under a prefix.
    pub fn names(&self, prefix: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .view()
            .names()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
