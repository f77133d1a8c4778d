#![no_main]
//! `gemma_models::fuzzing::safetensors_index` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gemma_models::fuzzing::safetensors_index(data);
});
