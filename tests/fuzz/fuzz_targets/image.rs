#![no_main]
//! `gemma_runtime::fuzzing::image` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gemma_runtime::fuzzing::image(data);
});
