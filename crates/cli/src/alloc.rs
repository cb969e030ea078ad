//! glibc's allocator set up for tensor work.
//!
//! Every forward frees and allocates again buffers of a few to tens of MiB. With glibc's defaults
//! those above its (dynamic) mmap threshold are unmapped when freed, and the free top of the heap
//! is returned to the kernel beyond 128 KiB, so the next forward pays the page faults and the
//! kernel's zeroing again: `perf` put ≈ 6 % of a mid 512² CFG step in the kernel's page-fault
//! path, and the step ran 4–13 % faster with the two settings below (`docs/performance.md`).

/// Requests up to this size come from the heap, whose memory is reused, rather than from fresh
/// mappings (glibc's largest mmap threshold on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free memory at the top of the heap is kept up to this size for the next forward.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 << 20;

/// Keeps the buffers a forward frees for the next one (glibc on Linux; elsewhere nothing). A
/// user's own `GLIBC_TUNABLES` malloc settings take precedence.
///
/// The `libc` crate's `mallopt` is called directly: no allocator crate sets glibc's parameters,
/// and replacing the allocator (mimalloc, tried) made loading the weights 4.5× slower.
pub fn keep_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_set = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if !user_set {
            set_thresholds();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_thresholds() {
    // SAFETY: `mallopt` only changes the allocator's parameters, with valid values; it is called
    // at the start of `main`, before any other thread runs.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
}
