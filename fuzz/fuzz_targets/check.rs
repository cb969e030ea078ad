//! The checker must never panic, and a prompt it accepts must render to text it accepts again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sakiko_prompt::check_bytes;

fuzz_target!(|data: &[u8]| {
    let report = check_bytes(data);
    assert_eq!(report.prompt.is_some(), !report.has_errors());
    if let Some(prompt) = report.prompt {
        let again = sakiko_prompt::check(&prompt.body());
        assert_eq!(
            again.prompt.as_ref(),
            Some(&prompt),
            "{:?}",
            again.diagnostics
        );
    }
});
