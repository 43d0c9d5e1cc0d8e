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

/// Reads a JSON-lines file into records (a missing file: none); a bad line is an error naming
/// its line and column.
pub fn read_json_lines<T: serde::de::DeserializeOwned>(path: &Path) -> DataResult<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                DataError::malformed(path, i as u64 + 1, e.column().to_string(), e.to_string())
            })
        })
        .collect()
}

/// Appends one record per line to a JSON-lines file, each line written whole and synced, so an
/// interrupted run loses at most the record being written. Shared by threads.
pub struct JsonLinesLog {
    path: std::path::PathBuf,
    file: std::sync::Mutex<std::fs::File>,
}

impl JsonLinesLog {
    pub fn open(path: &Path) -> DataResult<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DataError::io(path, e))?;
        Ok(JsonLinesLog {
            path: path.to_path_buf(),
            file: std::sync::Mutex::new(file),
        })
    }

    pub fn append(&self, record: &impl serde::Serialize) -> DataResult<()> {
        let mut line = serde_json::to_string(record).expect("plain data");
        line.push('\n');
        let mut file = self.file.lock().expect("no panics while holding the lock");
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| DataError::io(&self.path, e))
    }
}
