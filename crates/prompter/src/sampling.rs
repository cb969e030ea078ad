//! Choosing the next token: transformers' logits processors, in transformers' order, then a
//! seeded draw.
//!
//! The processors are a few lines each and run on one row of logits on the host, so they are
//! written here rather than pulled in from an LLM runtime; each is tested against transformers'
//! own processor on fixed logits.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::GenerationConfig;

/// How the next token is chosen. `temperature == 0` is greedy (argmax after the repetition
/// penalty, as transformers' `do_sample=False`); otherwise the repetition penalty, temperature,
/// top-k, top-p and min-p are applied in that order (transformers' `_get_logits_processor`) and a
/// token is drawn from what is left with a ChaCha8 generator seeded by `seed`, so a seed gives
/// the same tokens on a backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; 0 means greedy.
    pub temperature: f32,
    /// Keep the `k` most likely tokens (ties at the boundary kept, as transformers does).
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose mass reaches `p`.
    pub top_p: Option<f32>,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: Option<f32>,
    /// transformers' repetition penalty over the prompt and the generated tokens (1: none).
    pub repetition_penalty: f32,
    /// The seed of the draw.
    pub seed: u64,
}

impl Default for Sampling {
    /// Greedy.
    fn default() -> Self {
        Self::greedy()
    }
}

impl Sampling {
    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }

    /// The settings of a model folder's `generation_config.json` (greedy when it says
    /// `do_sample: false` or gives no temperature), with `seed`.
    pub fn from_generation_config(g: &GenerationConfig, seed: u64) -> Self {
        let greedy = g.do_sample == Some(false);
        Self {
            temperature: if greedy {
                0.0
            } else {
                g.temperature.unwrap_or(1.0)
            },
            top_k: g.top_k.filter(|&k| k > 0),
            top_p: g.top_p.filter(|&p| p < 1.0),
            min_p: g.min_p.filter(|&p| p > 0.0),
            repetition_penalty: g.repetition_penalty.unwrap_or(1.0),
            seed,
        }
    }

    /// Whether this is argmax decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Checks the values (transformers' ranges).
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str, v: f32| Err(format!("{what} {v} is out of range"));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad("temperature", self.temperature);
        }
        if let Some(p) = self.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return bad("top-p", p);
        }
        if let Some(p) = self.min_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return bad("min-p", p);
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition penalty", self.repetition_penalty);
        }
        if self.top_k == Some(0) {
            return Err("top-k 0 (omit it to keep every token)".into());
        }
        Ok(())
    }

    /// The processed scores (log-domain; `-inf` for removed tokens) after every processor
    /// this sampling applies, given the tokens so far (`context`).
    pub fn scores(&self, logits: &[f32], context: &[u32]) -> Vec<f64> {
        let mut s: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
        if self.repetition_penalty != 1.0 {
            let p = f64::from(self.repetition_penalty);
            let mut seen = vec![false; s.len()];
            for &id in context {
                let i = id as usize;
                if i < s.len() && !std::mem::replace(&mut seen[i], true) {
                    s[i] = if s[i] < 0.0 { s[i] * p } else { s[i] / p };
                }
            }
        }
        if self.is_greedy() {
            return s;
        }
        if self.temperature != 1.0 {
            let t = f64::from(self.temperature);
            s.iter_mut().for_each(|v| *v /= t);
        }
        if let Some(k) = self.top_k.filter(|&k| k < s.len()) {
            // The k-th largest value; a selection, not a sort of the whole vocabulary.
            let mut values = s.clone();
            let (_, &mut kth, _) =
                values.select_nth_unstable_by(k.max(1) - 1, |a, b| b.total_cmp(a));
            s.iter_mut()
                .filter(|v| **v < kth)
                .for_each(|v| *v = f64::NEG_INFINITY);
        }
        if let Some(top_p) = self.top_p.filter(|&p| p < 1.0) {
            // Ascending order; drop the low tail whose cumulative mass is ≤ 1 − p, keeping the
            // most likely token always (transformers' TopPLogitsWarper).
            // Tokens already removed weigh nothing, so only the rest are sorted (after top-k,
            // a few dozen instead of the whole vocabulary).
            let probs = softmax(&s);
            let mut order: Vec<usize> = (0..s.len())
                .filter(|&i| s[i] != f64::NEG_INFINITY)
                .collect();
            order.sort_by(|&a, &b| s[a].total_cmp(&s[b]));
            let mut mass = 0.0;
            let last = order.len().saturating_sub(1);
            for (rank, &i) in order.iter().enumerate() {
                mass += probs[i];
                if mass <= 1.0 - f64::from(top_p) && rank < last {
                    s[i] = f64::NEG_INFINITY;
                }
            }
        }
        if let Some(min_p) = self.min_p.filter(|&p| p > 0.0) {
            let probs = softmax(&s);
            let top = probs.iter().copied().fold(0.0, f64::max);
            let best = argmax(&s);
            for (i, v) in s.iter_mut().enumerate() {
                if probs[i] < f64::from(min_p) * top && i != best {
                    *v = f64::NEG_INFINITY;
                }
            }
        }
        s
    }

    /// The probability of each token after the processors (zero for removed tokens).
    pub fn probabilities(&self, logits: &[f32], context: &[u32]) -> Vec<f64> {
        softmax(&self.scores(logits, context))
    }

    /// A sampler for one generation (its generator starts from `seed`).
    pub fn sampler(&self) -> Sampler {
        Sampler {
            sampling: self.clone(),
            rng: ChaCha8Rng::seed_from_u64(self.seed),
        }
    }
}

/// [`Sampling`] with its generator's state.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// The next token after `context`, from `logits` (one row, the vocabulary).
    pub fn next(&mut self, logits: &[f32], context: &[u32]) -> u32 {
        let scores = self.sampling.scores(logits, context);
        if self.sampling.is_greedy() {
            return argmax(&scores) as u32;
        }
        let probs = softmax(&scores);
        let mut u: f64 = self.rng.random::<f64>();
        let mut last = argmax(&scores);
        for (i, p) in probs.iter().enumerate() {
            if *p > 0.0 {
                last = i;
                if u < *p {
                    return i as u32;
                }
                u -= p;
            }
        }
        // Rounding left a sliver of mass past the end: the last kept token.
        last as u32
    }
}

/// The first index of the largest value (torch's argmax picks the first on ties).
fn argmax(s: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in s.iter().enumerate() {
        if *v > s[best] {
            best = i;
        }
    }
    best
}

fn softmax(s: &[f64]) -> Vec<f64> {
    let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        let mut s = Sampling::greedy().sampler();
        assert_eq!(s.next(&[0.1, 2.0, 2.0, -1.0], &[]), 1);
    }

    #[test]
    fn a_seed_repeats_its_draws_and_another_differs() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampling {
                temperature: 1.0,
                seed,
                ..Sampling::greedy()
            }
            .sampler();
            (0..40).map(|_| s.next(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn draws_follow_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln(), f32::NEG_INFINITY];
        let mut s = Sampling {
            temperature: 1.0,
            ..Sampling::greedy()
        }
        .sampler();
        let n = 20_000;
        let ones = (0..n).filter(|_| s.next(&logits, &[]) == 1).count();
        let share = ones as f64 / n as f64;
        assert!((share - 0.75).abs() < 0.015, "{share}");
    }
}
