//! Atomic file writes: content goes to a temporary file beside the target, is flushed to disk,
//! then renamed over the final name, so a crash never leaves a half-written file there.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use crate::error::{DataError, DataResult};

/// Name prefix of the temporary files that atomic writes rename into place.
const PARTIAL_PREFIX: &str = ".partial-";

/// A temporary file untouched this long belongs to no live write (the largest we write, a
/// training state, takes seconds), so it was left by a process stopped while saving.
const STALE_PARTIAL_AGE: Duration = Duration::from_secs(15 * 60);

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
    remove_stale_partials(dir, STALE_PARTIAL_AGE);
    let temp = tempfile::Builder::new()
        .prefix(PARTIAL_PREFIX)
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

/// Whether `name` is one of our temporary files: the prefix and tempfile's 6 random letters or
/// digits, nothing else (a user's `.partial-notes.txt` is left alone).
fn is_partial_name(name: &str) -> bool {
    name.strip_prefix(PARTIAL_PREFIX)
        .is_some_and(|rest| rest.len() == 6 && rest.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Removes the temporary files of atomic writes in `dir` that nothing has written for `age`
/// (a killed run leaves them behind; a training state's is hundreds of MB) and says so on
/// stderr. Best effort: what cannot be read or removed is left as it is.
fn remove_stale_partials(dir: &Path, age: Duration) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !is_partial_name(&entry.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let idle = meta
            .modified()
            .ok()
            .and_then(|modified| modified.elapsed().ok());
        if !meta.is_file() || idle.is_none_or(|idle| idle < age) {
            continue;
        }
        let path = entry.path();
        if std::fs::remove_file(&path).is_ok() {
            eprintln!(
                "removed {} ({:.1} MB): left by a run stopped while saving",
                path.display(),
                meta.len() as f64 / 1e6
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn partial_file(dir: &Path, name: &str, idle: Duration) -> std::path::PathBuf {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(1000).unwrap();
        file.set_modified(SystemTime::now() - idle).unwrap();
        path
    }

    #[test]
    fn an_atomic_write_removes_only_stale_temporary_files_of_earlier_writes() {
        let dir = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let stale = partial_file(dir.path(), ".partial-AbC123", hour);
        let live = partial_file(dir.path(), ".partial-XyZ789", Duration::from_secs(5));
        let foreign = partial_file(dir.path(), "notes.partial-1", hour);
        let users = partial_file(dir.path(), ".partial-notes.txt", hour);

        write_bytes_atomically(&dir.path().join("result.json"), b"{}").unwrap();

        assert!(!stale.exists(), "a stale temporary file stays");
        assert!(live.exists(), "a temporary file being written was removed");
        assert!(foreign.exists(), "a file of another name was removed");
        assert!(users.exists(), "a user's file with the prefix was removed");
        assert_eq!(
            std::fs::read(dir.path().join("result.json")).unwrap(),
            b"{}"
        );
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| is_partial_name(name))
            .collect();
        assert_eq!(left, vec![".partial-XyZ789".to_string()]);
    }
}
