//! Opening any bytes as a GGUF file must never panic or allocate more than the file could hold,
//! and every tensor of a file that opens must read (or be a typed error for an unreadable type).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sakiko_weights::{WeightError, WeightFile};

fuzz_target!(|data: &[u8]| {
    // The reader works on files (positioned reads), so the input goes through one.
    let path = std::env::temp_dir().join(format!("sakiko-fuzz-{}.gguf", std::process::id()));
    std::fs::write(&path, data).expect("temp file");
    if let Ok(file) = WeightFile::open_gguf(&path) {
        let keys: Vec<String> = file.keys().map(str::to_owned).collect();
        for key in keys {
            match file.read_f32(&key) {
                Ok((values, shape)) => assert_eq!(values.len(), shape.iter().product::<usize>()),
                Err(WeightError::Dtype { .. }) => {}
                Err(e) => panic!("{key}: {e}"),
            }
        }
    }
});
