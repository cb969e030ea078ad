//! Normalisation must never panic and must be idempotent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sakiko_prompt::normalize;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let once = normalize(text);
        assert_eq!(normalize(&once), once);
    }
});
