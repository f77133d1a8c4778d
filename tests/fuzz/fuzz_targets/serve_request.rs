#![no_main]
//! `gemma_runtime::fuzzing::serve_request` (a `gemma serve` request body) on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gemma_runtime::fuzzing::serve_request(data);
});
