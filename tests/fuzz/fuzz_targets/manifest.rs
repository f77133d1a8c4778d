#![no_main]
//! `gemma_runtime::fuzzing::manifest` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gemma_runtime::fuzzing::manifest(data);
});
