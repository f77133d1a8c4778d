//! Opening source files safely: only regular files, never blocking, and never reading more than a limit.
//!
//! A FIFO named `config.json` or a shard would block `open` or `read` forever; `/dev/zero` would be read until
//! memory runs out (its reported size is 0, so a size check on the metadata alone does not help). So files are
//! opened non-blocking, checked to be regular files on the open descriptor (no window between check and open), and
//! read through [`Read::take`].

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// The most a JSON side file (config, index, processor config) may hold.
pub const MAX_JSON_BYTES: u64 = 64 << 20;

/// Opens `path` for reading if it is a regular file (after symlinks). A FIFO, device, socket or folder gives an
/// `InvalidInput` error that says so; opening never blocks.
pub fn open_regular(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // O_NONBLOCK: opening a FIFO without a writer returns at once instead of waiting for one. It does not
        // change reads of regular files.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        let kind = describe_type(&meta.file_type());
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("is {kind}, not a regular file"),
        ));
    }
    Ok(file)
}

/// Reads a regular file of at most `limit` bytes whole.
pub fn read_regular(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is larger than {limit} bytes, the limit for this file"),
        ));
    }
    Ok(bytes)
}

/// [`read_regular`] as UTF-8 text.
pub fn read_regular_to_string(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_regular(path, limit)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("is not UTF-8 text: {e}"),
        )
    })
}

fn describe_type(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_devices_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("config.json");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = open_regular(&fifo).unwrap_err().to_string();
        assert!(err.contains("FIFO"), "{err}");
        let err = read_regular(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .to_string();
        assert!(err.contains("device"), "{err}");
        let err = open_regular(dir.path()).unwrap_err().to_string();
        assert!(err.contains("folder"), "{err}");
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.json");
        std::fs::write(&f, "0123456789").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap().len(), 10);
        let err = read_regular(&f, 9).unwrap_err().to_string();
        assert!(err.contains("larger than 9"), "{err}");
    }
}
