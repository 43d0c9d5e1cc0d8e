//! Atomic file writes: content goes to a temporary file beside the target, is flushed to disk,
//! then renamed over the final name, so a crash never leaves a half-written file there.

use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{DataError, DataResult};

/// Creates `path` atomically from what `fill` writes.
pub fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> DataResult<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let temp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| DataError::io(dir, e))?;
    {
        let mut writer = BufWriter::with_capacity(1 << 20, temp.as_file());
        fill(&mut writer).map_err(|e| DataError::io(path, e))?;
        writer.flush().map_err(|e| DataError::io(path, e))?;
    }
    // Temporary files are created private (0600); give the result ordinary permissions.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(|e| DataError::io(path, e))?;
    }
    temp.as_file()
        .sync_all()
        .map_err(|e| DataError::io(path, e))?;
    temp.persist(path)
        .map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}

/// Writes bytes atomically.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> DataResult<()> {
    write_atomically(path, |out| out.write_all(bytes))
}
