//! σ schedules, computed exactly as ComfyUI's schedulers compute them.
//!
//! Every schedule starts at (or below) σ_max and ends with 0. Schedules are `Vec<f32>` of length
//! `steps + 1` (except `beta`, which drops repeated table indices, and `ddim_uniform`, whose length
//! follows the table stride).

use std::fmt;
use std::str::FromStr;

use crate::{FlowSampling, SamplingError, model_sampling::TABLE_LEN};

/// ComfyUI's scheduler names, as its `KSampler` node lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheduler {
    /// Evenly spaced entries of the σ table.
    Simple,
    /// Timesteps evenly spaced between σ_max and σ_min, shifted again.
    Normal,
    /// Like `normal` with `steps + 1` points, the last dropped.
    SgmUniform,
    /// Table entries at Beta(0.6, 0.6) quantiles.
    Beta,
    /// Mochi's schedule: linear for half the steps, then quadratic. Independent of the shift.
    /// The model card's recommendation.
    LinearQuadratic,
    /// Karras et al. (ρ = 7) between σ_min and σ_max.
    Karras,
    /// Log-linear between σ_max and σ_min.
    Exponential,
    /// `tan` interpolation of `atan σ` (the "KL-optimal" schedule).
    KlOptimal,
    /// Every `1000/steps`-th table entry from the bottom; starts below σ_max.
    DdimUniform,
}

impl Scheduler {
    /// All schedulers.
    pub const ALL: [Scheduler; 9] = [
        Scheduler::Simple,
        Scheduler::Normal,
        Scheduler::SgmUniform,
        Scheduler::Beta,
        Scheduler::LinearQuadratic,
        Scheduler::Karras,
        Scheduler::Exponential,
        Scheduler::KlOptimal,
        Scheduler::DdimUniform,
    ];

    /// ComfyUI's name.
    pub fn name(self) -> &'static str {
        match self {
            Scheduler::Simple => "simple",
            Scheduler::Normal => "normal",
            Scheduler::SgmUniform => "sgm_uniform",
            Scheduler::Beta => "beta",
            Scheduler::LinearQuadratic => "linear_quadratic",
            Scheduler::Karras => "karras",
            Scheduler::Exponential => "exponential",
            Scheduler::KlOptimal => "kl_optimal",
            Scheduler::DdimUniform => "ddim_uniform",
        }
    }

    /// The σ schedule for `steps` steps.
    ///
    /// ```
    /// use sakiko_sampling::{FlowSampling, Scheduler};
    /// let sigmas = Scheduler::LinearQuadratic.sigmas(&FlowSampling::lumina2(), 30).unwrap();
    /// assert_eq!(sigmas.len(), 31);
    /// assert_eq!((sigmas[0], sigmas[30]), (1.0, 0.0));
    /// ```
    pub fn sigmas(self, ms: &FlowSampling, steps: usize) -> Result<Vec<f32>, SamplingError> {
        let min_steps = if self == Scheduler::KlOptimal { 2 } else { 1 };
        if steps < min_steps || steps > 10_000 {
            return Err(SamplingError::InvalidParameter {
                name: "steps",
                value: steps.to_string(),
                expected: "1 to 10000 (2 or more for kl_optimal)",
            });
        }
        Ok(match self {
            Scheduler::Simple => simple(ms, steps),
            Scheduler::Normal => normal(ms, steps, false),
            Scheduler::SgmUniform => normal(ms, steps, true),
            Scheduler::Beta => beta(ms, steps),
            Scheduler::LinearQuadratic => linear_quadratic(steps),
            Scheduler::Karras => karras(ms, steps),
            Scheduler::Exponential => exponential(ms, steps),
            Scheduler::KlOptimal => kl_optimal(ms, steps),
            Scheduler::DdimUniform => ddim_uniform(ms, steps),
        })
    }

    /// The schedule for image-to-image with `denoise` ∈ (0, 1], as ComfyUI's `KSampler` trims it:
    /// the schedule of `⌊steps / denoise⌋` steps, keeping its last `steps + 1` values. `denoise` is
    /// an f64 because ComfyUI's is a Python float, and `⌊30 / 0.6⌋` is 50 in f64 but 49 in f32.
    pub fn sigmas_with_denoise(
        self,
        ms: &FlowSampling,
        steps: usize,
        denoise: f64,
    ) -> Result<Vec<f32>, SamplingError> {
        if !(denoise > 0.0 && denoise <= 1.0) {
            return Err(SamplingError::InvalidParameter {
                name: "denoise",
                value: denoise.to_string(),
                expected: "a number in (0, 1]",
            });
        }
        if denoise > 0.9999 {
            return self.sigmas(ms, steps);
        }
        // Python's `int(steps / denoise)` with a float denoise.
        let total = (steps as f64 / denoise) as usize;
        let full = self.sigmas(ms, total)?;
        let keep = (steps + 1).min(full.len());
        Ok(full[full.len() - keep..].to_vec())
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheduler {
    type Err = SamplingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::names::parse("scheduler", s, &Self::ALL, |x| x.name())
    }
}

/// `torch.linspace` in f32: the first half counts up from `start`, the second down from `end`.
fn linspace(start: f32, end: f32, n: usize) -> Vec<f32> {
    if n == 1 {
        return vec![start];
    }
    let step = (end - start) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                start + step * i as f32
            } else {
                end - step * (n - 1 - i) as f32
            }
        })
        .collect()
}

fn simple(ms: &FlowSampling, steps: usize) -> Vec<f32> {
    let stride = TABLE_LEN as f64 / steps as f64;
    let table = ms.table();
    let mut sigmas: Vec<f32> = (0..steps)
        .map(|x| table[TABLE_LEN - 1 - (x as f64 * stride) as usize])
        .collect();
    sigmas.push(0.0);
    sigmas
}

fn normal(ms: &FlowSampling, steps: usize, sgm: bool) -> Vec<f32> {
    let start = ms.timestep(ms.sigma_max());
    let end = ms.timestep(ms.sigma_min());
    let (mut n, mut append_zero) = (steps, true);
    if f64::from(ms.sigma(end)).abs() <= 1e-5 {
        n += 1;
        append_zero = false;
    }
    let timesteps = if sgm {
        let mut t = linspace(start, end, n + 1);
        t.pop();
        t
    } else {
        linspace(start, end, n)
    };
    let mut sigmas: Vec<f32> = timesteps.into_iter().map(|t| ms.sigma(t)).collect();
    if append_zero {
        sigmas.push(0.0);
    }
    sigmas
}

fn beta(ms: &FlowSampling, steps: usize) -> Vec<f32> {
    const ALPHA: f64 = 0.6;
    const BETA: f64 = 0.6;
    let last_index = (TABLE_LEN - 1) as f64;
    let mut sigmas = Vec::with_capacity(steps + 1);
    let mut last = -1.0;
    for i in 0..steps {
        // numpy: 1 - linspace(0, 1, steps, endpoint=False)
        let t = 1.0 - i as f64 * (1.0 / steps as f64);
        // α = β makes the median exactly 0.5, i.e. index 499.5 → 500; computed quantiles land a
        // rounding error either side of it (SciPy's above, statrs' below), so pin it.
        let quantile = if t == 0.5 {
            0.5
        } else {
            statrs::function::beta::inv_beta_reg(ALPHA, BETA, t)
        };
        let index = (quantile * last_index).round_ties_even();
        if index != last {
            sigmas.push(ms.table()[index as usize]);
        }
        last = index;
    }
    sigmas.push(0.0);
    sigmas
}

fn linear_quadratic(steps: usize) -> Vec<f32> {
    const THRESHOLD: f64 = 0.025;
    if steps == 1 {
        return vec![1.0, 0.0];
    }
    let linear_steps = steps / 2;
    let (ls, n) = (linear_steps as f64, steps as f64);
    let qs = (steps - linear_steps) as f64;
    let diff = ls - THRESHOLD * n;
    let quadratic_coef = diff / (ls * (qs * qs));
    let linear_coef = THRESHOLD / ls - 2.0 * diff / (qs * qs);
    let constant = quadratic_coef * (ls * ls);
    let linear = (0..linear_steps).map(|i| i as f64 * THRESHOLD / ls);
    let quadratic = (linear_steps..steps).map(|i| {
        let i = i as f64;
        quadratic_coef * (i * i) + linear_coef * i + constant
    });
    linear
        .chain(quadratic)
        .chain(std::iter::once(1.0))
        .map(|v| (1.0 - v) as f32)
        .collect()
}

fn karras(ms: &FlowSampling, steps: usize) -> Vec<f32> {
    const RHO: f64 = 7.0;
    let min_inv = f64::from(ms.sigma_min()).powf(1.0 / RHO);
    let max_inv = f64::from(ms.sigma_max()).powf(1.0 / RHO);
    let (base, span) = (max_inv as f32, (min_inv - max_inv) as f32);
    let mut sigmas: Vec<f32> = linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|r| (base + r * span).powf(RHO as f32))
        .collect();
    sigmas.push(0.0);
    sigmas
}

fn exponential(ms: &FlowSampling, steps: usize) -> Vec<f32> {
    let start = f64::from(ms.sigma_max()).ln() as f32;
    let end = f64::from(ms.sigma_min()).ln() as f32;
    let mut sigmas: Vec<f32> = linspace(start, end, steps)
        .into_iter()
        .map(f32::exp)
        .collect();
    sigmas.push(0.0);
    sigmas
}

fn kl_optimal(ms: &FlowSampling, steps: usize) -> Vec<f32> {
    let atan_min = f64::from(ms.sigma_min()).atan() as f32;
    let atan_max = f64::from(ms.sigma_max()).atan() as f32;
    let mut sigmas: Vec<f32> = (0..steps)
        .map(|i| {
            let a = i as f32 / (steps - 1) as f32;
            (a * atan_min + (1.0 - a) * atan_max).tan()
        })
        .collect();
    sigmas.push(0.0);
    sigmas
}

fn ddim_uniform(ms: &FlowSampling, steps: usize) -> Vec<f32> {
    let table = ms.table();
    let (mut steps, mut sigmas) = (steps, vec![0.0]);
    if f64::from(table[1]).abs() <= 1e-5 {
        steps += 1;
        sigmas.clear();
    }
    let stride = (TABLE_LEN / steps).max(1);
    sigmas.extend((1..TABLE_LEN).step_by(stride).map(|x| table[x]));
    sigmas.reverse();
    sigmas
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_suggestions() {
        for s in Scheduler::ALL {
            assert_eq!(s.name().parse::<Scheduler>().unwrap(), s);
        }
        let err = "linear_quadratc".parse::<Scheduler>().unwrap_err();
        assert!(matches!(
            err,
            SamplingError::UnknownName {
                suggestion: Some("linear_quadratic"),
                ..
            }
        ));
        assert!(err.to_string().contains("did you mean `linear_quadratic`?"));
    }

    #[test]
    fn linspace_matches_torch_split() {
        assert_eq!(linspace(0.0, 1.0, 5), [0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(linspace(2.0, 3.0, 1), [2.0]);
    }

    #[test]
    fn invalid_steps_and_denoise() {
        let ms = FlowSampling::lumina2();
        assert!(Scheduler::Simple.sigmas(&ms, 0).is_err());
        assert!(Scheduler::KlOptimal.sigmas(&ms, 1).is_err());
        for bad in [0.0, -0.5, 1.5, f64::NAN] {
            assert!(matches!(
                Scheduler::Simple.sigmas_with_denoise(&ms, 10, bad),
                Err(SamplingError::InvalidParameter {
                    name: "denoise",
                    ..
                })
            ));
        }
    }

    #[test]
    fn linear_quadratic_card_values() {
        // The values quoted in the reference notes for 30 steps.
        let s = linear_quadratic(30);
        let expect = [
            (0, 1.0),
            (1, 0.998_333),
            (14, 0.976_667),
            (15, 0.975),
            (16, 0.969_111),
            (29, 0.124_111),
        ];
        for (i, v) in expect {
            assert!((s[i] - v).abs() < 1e-6, "sigma[{i}] = {}", s[i]);
        }
    }
}
