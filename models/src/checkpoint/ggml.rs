//! Decoding ggml's block-quantized formats (GGUF tensor data) to f32, exactly as ggml's reference
//! `dequantize_row_*` functions do.

use super::DType;

/// Decodes elements `[start, start + out.len())` of a tensor stored as `dtype` blocks in `data` (the whole tensor's
/// bytes). The window need not be block-aligned.
///
/// # Panics
/// If `dtype` is not a block format, or the window lies outside `data`.
pub fn read_blocks(dtype: DType, data: &[u8], start: usize, out: &mut [f32]) {
    let _ = (dtype, data, start, out);
    unimplemented!("ggml block decoding is being written (issue 9)")
}
