//! Resident memory of the weight files.
//!
//! ONNX Runtime memory-maps a model's external data (`*.onnx_data`) and reads the initializers from those mappings.
//! Most of them are pre-packed into ONNX Runtime's own buffers at load, so their file pages are not read again; the
//! embedding lookup reads a few rows per token. The mapped pages that loading touched still count in the process's
//! resident memory until the kernel needs them back (the scales of the int4 lm_head alone are 20 MiB for Gemma 3
//! 270M), and every lookup maps 16 pages around the row it reads (the kernel's fault-around).
//!
//! [`trim_weight_mappings`] tells the kernel about this after a session is created: the pages of the weight-file
//! mappings go back to the page cache (`MADV_PAGEOUT`) and later reads fault in only the page they touch
//! (`MADV_RANDOM`). Both are hints that never change what the memory holds: a page that is read again comes back
//! from the file, and a page ONNX Runtime might have written is not dropped (it is anonymous memory by then).

/// Hints the kernel that the weight-file mappings of this process (`*.onnx_data`) are read randomly and that their
/// resident pages can go; returns the number of mappings advised. Linux only; elsewhere, and on any error reading
/// `/proc/self/maps`, it does nothing.
pub fn trim_weight_mappings() -> usize {
    #[cfg(target_os = "linux")]
    {
        linux::trim(|path| path.ends_with(".onnx_data"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// `(start, end)` of the mappings in `/proc/self/maps` text whose file path passes `keep`.
    pub(super) fn mappings(maps: &str, keep: impl Fn(&str) -> bool) -> Vec<(usize, usize)> {
        maps.lines()
            .filter_map(|line| {
                // start-end perms offset dev inode path
                let mut fields = line.splitn(6, ' ');
                let range = fields.next()?;
                let path = fields.nth(4)?.trim_start();
                if !keep(path) {
                    return None;
                }
                let (start, end) = range.split_once('-')?;
                Some((
                    usize::from_str_radix(start, 16).ok()?,
                    usize::from_str_radix(end, 16).ok()?,
                ))
            })
            .collect()
    }

    pub(super) fn trim(keep: impl Fn(&str) -> bool) -> usize {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        let ranges = mappings(&maps, keep);
        for &(start, end) in &ranges {
            let (addr, len) = (start as *mut libc::c_void, end - start);
            // SAFETY: the range is a whole mapping of this process as the kernel listed it; both advices are hints
            // that leave its contents as they are (MADV_PAGEOUT reclaims clean file pages only: a page written since
            // mapping is anonymous and stays). Errors (an old kernel without MADV_PAGEOUT, a mapping gone since) are
            // harmless and ignored.
            unsafe {
                libc::madvise(addr, len, libc::MADV_RANDOM);
                libc::madvise(addr, len, libc::MADV_PAGEOUT);
            }
        }
        ranges.len()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn finds_the_weight_file_mappings() {
            let maps = "\
55d0c0a00000-55d0c0a21000 r--p 00000000 fe:00 123 /usr/bin/gemma
7f84e65fb000-7f84e6623000 rw-p 09fd0000 fe:00 10665990                   /m/model.onnx_data
7f84e6700000-7f84e6800000 rw-p 00000000 00:00 0 
7f84e68a3000-7f84e68cb000 r--p 0b430000 fe:00 10665990                   /m dir/vision_encoder.onnx_data
7ffd1000-7ffd2000 rw-p 00000000 00:00 0                          [stack]";
            let found = mappings(maps, |p| p.ends_with(".onnx_data"));
            assert_eq!(
                found,
                vec![
                    (0x7f84e65fb000, 0x7f84e6623000),
                    (0x7f84e68a3000, 0x7f84e68cb000)
                ]
            );
        }

        #[test]
        fn trimming_a_mapping_keeps_its_contents() {
            use std::io::Write;
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("w.onnx_data");
            let bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::File::create(&path)
                .unwrap()
                .write_all(&bytes)
                .unwrap();
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: the file is private to this test and not modified while mapped.
            let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
            assert_eq!(&map[..], &bytes[..]);
            let name = path.to_str().unwrap().to_string();
            assert!(trim(|p| p == name) >= 1);
            assert_eq!(&map[..], &bytes[..]);
        }
    }
}
