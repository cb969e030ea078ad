//! ComfyUI-compatible noise: PyTorch's CPU generator (`torch.manual_seed(seed)` + `torch.randn`).
//!
//! ComfyUI draws the initial latent noise on the CPU with the global generator, so the same seed
//! gives the same picture on any GPU. This module reproduces that generator bit for bit:
//! mt19937 seeded with the low 32 bits of the seed, 24-bit uniforms, and Box–Muller over the pairs
//! `(j, j + 8)` of 16-element blocks, with the last 16 values redrawn when the size is not a
//! multiple of 16. Tensors of fewer than 16 elements take PyTorch's other path: a double-precision
//! Box–Muller that keeps its spare value for the next call.
//!
//! PyTorch computes the transcendental functions of the 16-element blocks in one of two ways,
//! chosen by the CPU ([`RandnKernel`]); they differ in the last bit of about a third of the values.

use burn::tensor::{Tensor, TensorData, backend::Backend};

/// Which of PyTorch's CPU `randn` kernels to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RandnKernel {
    /// `normal_fill_16_AVX2`: the Cephes polynomials of `avx_mathfun.h`, compiled with FMA
    /// contraction. What PyTorch runs on every x86-64 CPU with AVX2 (and AVX-512), so what most
    /// ComfyUI installations produce. The default.
    #[default]
    Avx2,
    /// `normal_fill_16`: the C library's `logf`/`cosf`/`sinf`. What PyTorch runs without AVX2,
    /// notably on ARM (Apple silicon); bit-exact only with the same C library (glibc here).
    Scalar,
}

const N: usize = 624;
const M: usize = 397;

/// PyTorch's CPU generator state: mt19937 plus the spare value of the double Box–Muller.
#[derive(Debug, Clone)]
pub struct TorchGenerator {
    state: Box<[u32; N]>,
    index: usize,
    spare_normal: Option<f64>,
}

impl TorchGenerator {
    /// `torch.manual_seed(seed)`: only the low 32 bits of the seed matter, as in PyTorch.
    pub fn new(seed: u64) -> Self {
        let mut state = Box::new([0u32; N]);
        state[0] = (seed & 0xffff_ffff) as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self {
            state,
            index: N,
            spare_normal: None,
        }
    }

    fn twist(&mut self) {
        const UPPER: u32 = 0x8000_0000;
        const LOWER: u32 = 0x7fff_ffff;
        const MATRIX_A: u32 = 0x9908_b0df;
        for i in 0..N {
            let y = (self.state[i] & UPPER) | (self.state[(i + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            self.state[i] = self.state[(i + M) % N] ^ (y >> 1) ^ mag;
        }
        self.index = 0;
    }

    /// The next 32-bit output (`generator->random()`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `random64()`: two draws, the first as the high word.
    fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    /// `uniform_real_distribution<float>(0, 1)`: 24 random bits.
    fn uniform_f32(&mut self) -> f32 {
        (self.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// `uniform_real_distribution<double>(0, 1)`: 53 random bits.
    fn uniform_f64(&mut self) -> f64 {
        (self.next_u64() & ((1u64 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// `normal_distribution<double>`: Box–Muller that caches its second value.
    fn normal_f64(&mut self) -> f64 {
        if let Some(spare) = self.spare_normal.take() {
            return spare;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let r = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.spare_normal = Some(r * theta.sin());
        r * theta.cos()
    }

    /// `torch.randn(n)` on the CPU in f32, contiguous, with this generator.
    ///
    /// ```
    /// use sakiko_sampling::{RandnKernel, TorchGenerator};
    /// let noise = TorchGenerator::new(0).randn(16, RandnKernel::Avx2);
    /// // torch.manual_seed(0); torch.randn(16)[0]
    /// assert_eq!(noise[0], -1.1258398);
    /// ```
    pub fn randn(&mut self, n: usize, kernel: RandnKernel) -> Vec<f32> {
        if n < 16 {
            return (0..n).map(|_| self.normal_f64() as f32).collect();
        }
        let mut data: Vec<f32> = (0..n).map(|_| self.uniform_f32()).collect();
        let fill = match kernel {
            RandnKernel::Avx2 => fill16_avx2,
            RandnKernel::Scalar => fill16_scalar,
        };
        for block in data.chunks_exact_mut(16) {
            fill(block);
        }
        if !n.is_multiple_of(16) {
            let tail = &mut data[n - 16..];
            for v in tail.iter_mut() {
                *v = self.uniform_f32();
            }
            fill(tail);
        }
        data
    }
}

impl TorchGenerator {
    /// [`TorchGenerator::randn`] as a tensor of `shape` (row-major, as PyTorch fills it) on
    /// `device`. ComfyUI's initial noise is `TorchGenerator::new(seed).randn_tensor([B, 16, H/8, W/8], …)`.
    pub fn randn_tensor<B: Backend, const D: usize>(
        &mut self,
        shape: [usize; D],
        kernel: RandnKernel,
        device: &B::Device,
    ) -> Tensor<B, D> {
        let values = self.randn(shape.iter().product(), kernel);
        Tensor::from_data(TensorData::new(values, shape), device)
    }
}

/// `normal_fill_16`: Box–Muller on `(j, j + 8)` with the C library's functions.
fn fill16_scalar(data: &mut [f32]) {
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * u1.ln()).sqrt();
        // `2.0f * c10::pi<double> * u2` is evaluated in double, then stored as float.
        let theta = (2.0 * std::f64::consts::PI * f64::from(u2)) as f32;
        data[j] = radius * theta.cos();
        data[j + 8] = radius * theta.sin();
    }
}

/// `normal_fill_16_AVX2`, one lane at a time.
fn fill16_avx2(data: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * cephes_log(u1)).sqrt();
        let (sin, cos) = cephes_sincos(two_pi * u2);
        data[j] = radius * cos;
        data[j + 8] = radius * sin;
    }
}

// The constants are written exactly as in `avx_mathfun.h` and rounded to f32 by the compiler, as
// there: shortening them to f32 precision by hand changes some values.
#[allow(clippy::excessive_precision)]
mod cephes {
    pub const SQRTHF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    pub const LOG_P: [f32; 9] = [
        7.0376836292E-2,
        -1.1514610310E-1,
        1.1676998740E-1,
        -1.2420140846E-1,
        1.4249322787E-1,
        -1.6668057665E-1,
        2.0000714765E-1,
        -2.4999993993E-1,
        3.3333331174E-1,
    ];
    pub const LOG_Q1: f32 = -2.12194440e-4;
    pub const LOG_Q2: f32 = 0.693359375;
    pub const FOPI: f32 = 1.27323954473516;
    pub const DP: [f32; 3] = [
        -0.78515625,
        -2.4187564849853515625e-4,
        -3.77489497744594108e-8,
    ];
    pub const SIN: [f32; 3] = [-1.9515295891E-4, 8.3321608736E-3, -1.6666654611E-1];
    pub const COS: [f32; 3] = [
        2.443315711809948E-005,
        -1.388731625493765E-003,
        4.166664568298827E-002,
    ];
}

/// `log256_ps` from `avx_mathfun.h` for one lane, with the multiply-adds GCC fuses (verified
/// against PyTorch on 524,288 values). Inputs are in (0, 1], so the invalid-input and denormal
/// branches are not needed.
fn cephes_log(x: f32) -> f32 {
    use cephes::{LOG_P, LOG_Q1, LOG_Q2, SQRTHF};
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
    // Keep the mantissa, with the exponent of 0.5: m in [0.5, 1).
    let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
    if m < SQRTHF {
        e -= 1.0;
        m = m - 1.0 + m;
    } else {
        m -= 1.0;
    }
    let z = m * m;
    let mut y = LOG_P[0];
    for &p in &LOG_P[1..] {
        y = y.mul_add(m, p);
    }
    // `y = y*x; y = y*z; y = y + e*q1`: the second product fuses into the addition.
    y = (y * m).mul_add(z, e * LOG_Q1);
    y = z.mul_add(-0.5, y);
    e.mul_add(LOG_Q2, m + y)
}

/// `sincos256_ps` from `avx_mathfun.h` for one lane (x ≥ 0), with the multiply-adds GCC fuses.
fn cephes_sincos(x: f32) -> (f32, f32) {
    use cephes::{COS, DP, FOPI, SIN};
    let mut j = (x * FOPI) as i32;
    j = (j + 1) & !1;
    let y = j as f32;
    let sign_sin = (j & 4) != 0;
    let poly_sin = (j & 2) == 0;
    let sign_cos = ((j - 2) & 4) == 0;

    // Extended-precision range reduction: x - y·π/4 in three parts.
    let mut r = y.mul_add(DP[0], x);
    r = y.mul_add(DP[1], r);
    r = y.mul_add(DP[2], r);
    let z = r * r;

    let mut c = COS[0].mul_add(z, COS[1]);
    c = c.mul_add(z, COS[2]);
    c *= z;
    c = c.mul_add(z, -(z * 0.5));
    c += 1.0;

    let mut s = SIN[0].mul_add(z, SIN[1]);
    s = s.mul_add(z, SIN[2]);
    s *= z;
    s = s.mul_add(r, r);

    let (sin, cos) = if poly_sin { (s, c) } else { (c, s) };
    let flip = |v: f32, neg: bool| if neg { -v } else { v };
    (flip(sin, sign_sin), flip(cos, sign_cos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mt19937_matches_the_reference_sequence() {
        // The C++ standard requires the 10000th output of mt19937 seeded with 5489 to be 4123659995.
        let mut g = TorchGenerator::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = g.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn tensors_are_filled_row_major() {
        use burn::backend::Flex;
        let t: Tensor<Flex, 4> = TorchGenerator::new(3).randn_tensor(
            [1, 2, 3, 5],
            RandnKernel::Avx2,
            &Default::default(),
        );
        assert_eq!(t.dims(), [1, 2, 3, 5]);
        let flat = TorchGenerator::new(3).randn(30, RandnKernel::Avx2);
        assert_eq!(t.into_data().to_vec::<f32>().unwrap(), flat);
    }

    #[test]
    fn only_the_low_32_bits_of_the_seed_matter() {
        let a = TorchGenerator::new(7).randn(32, RandnKernel::Avx2);
        let b = TorchGenerator::new(7 + (1 << 32)).randn(32, RandnKernel::Avx2);
        assert_eq!(a, b);
    }

    #[test]
    fn cephes_functions_are_close_to_libm() {
        for i in 1..=1000 {
            let x = i as f32 / 1000.0;
            assert!(
                (cephes_log(x) - x.ln()).abs() <= 2e-7 * x.ln().abs().max(1.0),
                "{x}"
            );
            let t = x * std::f32::consts::TAU;
            let (s, c) = cephes_sincos(t);
            assert!(
                (s - t.sin()).abs() < 3e-7 && (c - t.cos()).abs() < 3e-7,
                "{t}"
            );
        }
    }
}
