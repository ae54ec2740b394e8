//! Reading model files without trusting the path: only regular files, within a size limit.
//!
//! A model URI may name anything the server can open. A FIFO would block the open (and the
//! thread) until some writer appears; `/dev/zero` or `/dev/urandom` would be read until
//! memory runs out; a 50 GB file the same. The file is opened non-blocking, checked with
//! `fstat` on the open descriptor (so it cannot be swapped after the check), and read at
//! most one byte past the limit.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest model file loaded (1 GiB): an in-process model beyond it belongs on a model
/// server.
pub const MAX_MODEL_BYTES: u64 = 1 << 30;

/// The largest model spec (`<model>.json`) read.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// Reads `path` if it is a regular file of at most `limit` bytes. `NotFound` passes through
/// unchanged (callers fall back on it); anything else that is not a readable regular file
/// within the limit is `InvalidInput` saying why.
pub fn read_regular(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    // Opening some devices has effects of its own (a watchdog, a terminal): look first.
    let named = std::fs::metadata(path)?;
    if !named.is_file() {
        return Err(invalid(format!(
            "{} is not a regular file ({})",
            path.display(),
            kind(&named.file_type())
        )));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        // Swapped for a FIFO since the look: opening it for reading must not block, and
        // a terminal must not become ours.
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(invalid(format!(
            "{} is not a regular file ({})",
            path.display(),
            kind(&meta.file_type())
        )));
    }
    if meta.len() > limit {
        return Err(invalid(format!(
            "{} has {} bytes, more than the {limit} accepted",
            path.display(),
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // The file may grow after the check: never read past the limit.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(invalid(format!(
            "{} grew beyond the {limit} bytes accepted while being read",
            path.display()
        )));
    }
    Ok(bytes)
}

fn kind(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.onnx");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_regular(&file, 10).unwrap(), b"0123456789");
        let err = read_regular(&file, 9).unwrap_err();
        assert!(err.to_string().contains("more than the 9"), "{err}");
        let err = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let err = read_regular(dir.path(), 1 << 20).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        // Without a writer this would block for ever; here it is refused at once.
        let err = read_regular(&fifo, 1 << 20).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        assert_eq!(
            read_regular(&dir.path().join("absent"), 10)
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::NotFound
        );
    }
}
