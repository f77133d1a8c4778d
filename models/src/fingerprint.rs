//! A cheap fingerprint of an export file: its size plus a CRC-32 of sampled 4 KiB blocks (the first, the last
//! and 64 spread evenly between; the whole file when it is smaller than that). Reading 66 blocks costs the same
//! for a 50 MB or a 50 GB `model.onnx_data`, yet a file of the right size with other bytes (random data, the same
//! file from another export or precision) gives another value. It is not a cryptographic hash: it catches
//! accidents and mix-ups, not an attacker who rewrites the manifest too.
//!
//! The exporter writes it into `gemma-onnx.json` and the runtime checks it, both through this one module
//! (re-exported as `gemma_exporter::fingerprint` and `gemma_runtime::fingerprint`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Bytes per sampled block.
pub const BLOCK: u64 = 4096;
/// Blocks sampled between the first and the last.
pub const SAMPLES: u64 = 64;

/// `(size, crc32 of the sampled blocks as 8 lowercase hex digits)` of the file at `path`.
pub fn fingerprint(path: &Path) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&size.to_le_bytes());
    let mut buf = vec![0u8; BLOCK as usize];
    if size <= BLOCK * (SAMPLES + 2) {
        let mut all = Vec::with_capacity(size as usize);
        file.by_ref().take(size).read_to_end(&mut all)?;
        if all.len() as u64 != size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank while being read",
            ));
        }
        hasher.update(&all);
    } else {
        let last = size - BLOCK;
        let offsets = std::iter::once(0)
            .chain((1..=SAMPLES).map(|i| last / (SAMPLES + 1) * i))
            .chain(std::iter::once(last));
        for offset in offsets {
            file.seek(SeekFrom::Start(offset))?;
            file.read_exact(&mut buf)?;
            hasher.update(&buf);
        }
    }
    Ok((size, format!("{:08x}", hasher.finalize())))
}
