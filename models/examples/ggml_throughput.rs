//! Measures how fast `read_blocks` decodes each ggml block format on one core:
//! `cargo run --release -p gemma-models --example ggml_throughput`.

use std::time::Instant;

use gemma_models::checkpoint::{ggml::read_blocks, DType};

fn main() {
    const ELEMS: usize = 1 << 24; // 16 Mi elements per type
    const CHUNK: usize = 1 << 16; // the exporter streams in chunks of this order
    let mut out = vec![0.0f32; CHUNK];
    for dtype in [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4K,
        DType::Q5K,
        DType::Q6K,
    ] {
        // Pseudo-random blocks; the scale bytes are random too, which does not change the speed.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..dtype.byte_len(ELEMS).unwrap())
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            for start in (0..ELEMS).step_by(CHUNK) {
                read_blocks(dtype, &data, start, &mut out);
                std::hint::black_box(&out);
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{:5} {:7.0} M elements/s  ({:.1} GB/s of f32 out)",
            dtype.name(),
            ELEMS as f64 / best / 1e6,
            ELEMS as f64 * 4.0 / best / 1e9,
        );
    }
}
