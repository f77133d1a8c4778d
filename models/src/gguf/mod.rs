//! GGUF files (llama.cpp): the tokenizer they carry.

pub mod tokenizer;
pub mod vocab;
