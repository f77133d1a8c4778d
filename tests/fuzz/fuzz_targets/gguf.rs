#![no_main]
//! `gemma_models::fuzzing::gguf` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gemma_models::fuzzing::gguf(data);
});
