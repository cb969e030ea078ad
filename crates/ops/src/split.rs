//! Attention across CPU threads. Burn's Flex backend computes attention one (batch, head) at a time
//! on one thread (its GEMMs use rayon, its attention does not), so on a CPU most cores idle while
//! the NextDiT attends. Every (sample, KV head, block of query rows) is independent, so the call is
//! split into those pieces and run on scoped threads, each piece through the same Burn kernel.
//! GPU backends parallelise inside their kernels and keep the single call.
//!
//! Dispatching on the backend's type (rather than a Burn backend-extension trait) keeps every model
//! generic over plain `B: Backend`; the split is exact per piece (each query row attends on its
//! own), and tested against the single call.

use burn::tensor::module;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, backend::Backend};

use crate::{QUERY_BLOCK, contiguous};

/// How many threads attention on `B` runs on: the CPU's threads (or `RAYON_NUM_THREADS`, which
/// also sizes Flex's own pool) for Flex, 1 for every other backend.
pub(crate) fn threads<B: Backend>() -> usize {
    if !std::any::type_name::<B>().contains("Flex") {
        return 1;
    }
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// `module::attention` of contiguous `q` `[B, H, S_q, D]` (S_q a multiple of [`QUERY_BLOCK`]) and
/// `k`, `v` `[B, H, S_kv, D]`, in pieces on `threads` threads.
pub(crate) fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    threads: usize,
) -> Tensor<B, 4> {
    let [b, h, s_q, _] = q.dims();
    if b * h == 0 || s_q == 0 {
        return single(q, k, v);
    }
    let blocks = s_q / QUERY_BLOCK;
    // Enough pieces for every thread, each a whole number of query blocks.
    let per_head = threads.div_ceil(b * h).clamp(1, blocks.max(1));
    let rows = (blocks.div_ceil(per_head)) * QUERY_BLOCK;
    let pieces: Vec<(usize, usize, usize)> = (0..b)
        .flat_map(|i| (0..h).flat_map(move |j| (0..s_q).step_by(rows).map(move |r| (i, j, r))))
        .collect();
    if pieces.len() == 1 || threads == 1 {
        return single(q, k, v);
    }
    let per_thread = pieces.len().div_ceil(threads);
    let outputs: Vec<Vec<Tensor<B, 4>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = pieces
            .chunks(per_thread)
            .map(|chunk| {
                let (q, k, v) = (q.clone(), k.clone(), v.clone());
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&(i, j, r)| {
                            let end = (r + rows).min(s_q);
                            let head = |t: &Tensor<B, 4>| t.clone().narrow(0, i, 1).narrow(1, j, 1);
                            single(
                                contiguous(head(&q).narrow(2, r, end - r)),
                                contiguous(head(&k)),
                                contiguous(head(&v)),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    // Pieces are in (sample, head, rows) order: rows join, then heads, then samples.
    let mut pieces = outputs.into_iter().flatten();
    let samples: Vec<Tensor<B, 4>> = (0..b)
        .map(|_| {
            let heads: Vec<Tensor<B, 4>> = (0..h)
                .map(|_| Tensor::cat(pieces.by_ref().take(s_q.div_ceil(rows)).collect(), 2))
                .collect();
            Tensor::cat(heads, 1)
        })
        .collect();
    Tensor::cat(samples, 0)
}

/// One backend call.
pub(crate) fn single<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
) -> Tensor<B, 4> {
    module::attention(q, k, v, None, None, AttentionModuleOptions::default())
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{Distribution, ElementConversion};

    use super::*;

    /// Split over 1–7 threads against the single call: each piece runs the same kernel; pieces
    /// shorter than Flex's flash threshold take its naive path, equal to rounding.
    #[test]
    fn pieces_equal_the_single_call() {
        let device = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        for (b, h, s_q, s_kv, d) in [
            (2, 2, 384, 300, 16),
            (1, 1, 1024, 1100, 8),
            (2, 3, 128, 40, 8),
        ] {
            let q = Tensor::<Flex, 4>::random([b, h, s_q, d], normal, &device);
            let k = Tensor::<Flex, 4>::random([b, h, s_kv, d], normal, &device);
            let v = Tensor::<Flex, 4>::random([b, h, s_kv, d], normal, &device);
            let want = single(q.clone(), k.clone(), v.clone());
            for threads in 1..=7 {
                let got = attention(q.clone(), k.clone(), v.clone(), threads);
                assert_eq!(got.dims(), want.dims());
                let diff: f32 = (got - want.clone()).abs().max().into_scalar().elem();
                assert!(
                    diff < 1e-5,
                    "{:?} on {threads} threads: {diff}",
                    [b, h, s_q, s_kv, d]
                );
            }
        }
        assert!(threads::<Flex>() >= 1);
    }
}
