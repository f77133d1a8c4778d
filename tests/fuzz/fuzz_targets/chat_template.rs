#![no_main]
//! `gemma_runtime::fuzzing::chat_template` on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = gemma_runtime::fuzzing::chat_template(data);
});
