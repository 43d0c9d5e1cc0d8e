//! What makes a result on disk reusable. Every resumable record (tuning trials, CV folds, study
//! stages, transfer runs) is stored with a [`RunKey`]: a flat map of everything that determines
//! it (a fingerprint of the exact images, every setting, the library version). A later run
//! reuses the record only when its own key is equal, and otherwise refuses with the names and
//! values of the settings that differ.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{DataError, DataResult};

/// The library version every key carries: results of another version are not reused.
pub const CODE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Everything that determines a result, as dotted names (`train.batch_size`) and JSON values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunKey(BTreeMap<String, serde_json::Value>);

impl Default for RunKey {
    fn default() -> Self {
        Self::new()
    }
}

impl RunKey {
    /// A key holding the library version.
    pub fn new() -> Self {
        RunKey(BTreeMap::from([(
            "version".to_string(),
            CODE_VERSION.into(),
        )]))
    }

    /// Adds `value` under `name`; objects are flattened into `name.field` entries so that a
    /// mismatch names the very setting that differs.
    pub fn with(mut self, name: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).expect("settings serialize to JSON");
        flatten_into(&mut self.0, name, value);
        self
    }

    /// Adds every entry of `other` (its version too).
    pub fn merged(mut self, other: &RunKey) -> Self {
        self.0
            .extend(other.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// The names of the settings that differ.
    pub fn differing_names<'a>(&'a self, stored: &'a RunKey) -> Vec<&'a str> {
        let names: std::collections::BTreeSet<&String> =
            self.0.keys().chain(stored.0.keys()).collect();
        names
            .into_iter()
            .filter(|name| self.0.get(*name) != stored.0.get(*name))
            .map(String::as_str)
            .collect()
    }

    /// The settings that differ, one per line: `name: V1 in the stored results, V2 now`.
    pub fn differences(&self, stored: &RunKey) -> Vec<String> {
        self.differing_names(stored)
            .into_iter()
            .map(|name| {
                format!(
                    "{name}: {} in the stored results, {} now",
                    shown(stored.0.get(name)),
                    shown(self.0.get(name))
                )
            })
            .collect()
    }

    /// An error naming `path` and the differing settings, or `Ok` when the keys are equal.
    pub fn check(&self, stored: &RunKey, path: &Path) -> DataResult<()> {
        let differences = self.differences(stored);
        if differences.is_empty() {
            Ok(())
        } else {
            Err(DataError::StaleResults {
                path: path.to_path_buf(),
                differences: differences.join("; "),
            })
        }
    }
}

fn flatten_into(
    map: &mut BTreeMap<String, serde_json::Value>,
    name: &str,
    value: serde_json::Value,
) {
    match value {
        serde_json::Value::Object(fields) if !fields.is_empty() => {
            for (field, inner) in fields {
                flatten_into(map, &format!("{name}.{field}"), inner);
            }
        }
        other => {
            map.insert(name.to_string(), other);
        }
    }
}

/// A value as an error message shows it: compact JSON, long ones cut short.
fn shown(value: Option<&serde_json::Value>) -> String {
    match value {
        None => "(absent)".into(),
        Some(v) => crate::error::cut(&v.to_string(), 80),
    }
}

/// SHA-256 (hex) of byte slices fed in order: the fingerprint of images and labels.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// The first line of a keyed JSON-lines file.
#[derive(Serialize, Deserialize)]
struct Header {
    run_key: RunKey,
}

/// A JSON-lines results file whose first line is the [`RunKey`] of every record in it, and an
/// appender for new records, each line written whole and synced (so an interrupted run loses
/// at most the record being written). Shared by threads.
pub struct ResultsLog {
    path: PathBuf,
    file: std::sync::Mutex<std::fs::File>,
}

impl ResultsLog {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (or starts) the file at `path` for results made with `key` and returns the records
    /// already there. A file made with another key is refused (naming what differs); a last line
    /// cut off by an interrupted write is moved to `PATH.torn` with a warning, and its record is
    /// simply redone.
    pub fn open<T: DeserializeOwned>(path: &Path, key: &RunKey) -> DataResult<(Self, Vec<T>)> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        }
        let records = if path.exists() {
            set_aside_torn_line(path)?;
            read_keyed(path, key)?
        } else {
            None
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| DataError::io(path, e))?;
        let records = match records {
            Some(records) => records,
            None => {
                let mut line = serde_json::to_string(&Header {
                    run_key: key.clone(),
                })
                .expect("plain data");
                line.push('\n');
                file.write_all(line.as_bytes())
                    .and_then(|_| file.sync_data())
                    .map_err(|e| DataError::io(path, e))?;
                Vec::new()
            }
        };
        Ok((
            ResultsLog {
                path: path.to_path_buf(),
                file: std::sync::Mutex::new(file),
            },
            records,
        ))
    }

    pub fn append(&self, record: &impl Serialize) -> DataResult<()> {
        let mut line = serde_json::to_string(record).expect("plain data");
        line.push('\n');
        let mut file = self.file.lock().expect("no panics while holding the lock");
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| DataError::io(&self.path, e))
    }
}

/// The records of a keyed file made with `key` (None: the file holds nothing yet).
fn read_keyed<T: DeserializeOwned>(path: &Path, key: &RunKey) -> DataResult<Option<Vec<T>>> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, first)) = lines.next() else {
        return Ok(None);
    };
    let header: Header = serde_json::from_str(first).map_err(|_| {
        DataError::invalid(
            path,
            "its first line is not a run key (written by an older version, or not a results file): \
             what made its records cannot be checked; start over with --fresh or use another output directory",
        )
    })?;
    key.check(&header.run_key, path)?;
    lines
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                DataError::malformed(path, i as u64 + 1, e.column().to_string(), e.to_string())
            })
        })
        .collect::<DataResult<Vec<T>>>()
        .map(Some)
}

/// Moves a last line without its newline (a write cut off by a crash) to `PATH.torn`.
fn set_aside_torn_line(path: &Path) -> DataResult<()> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let torn_path = PathBuf::from(format!("{}.torn", path.display()));
    let mut torn = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&torn_path)
        .map_err(|e| DataError::io(&torn_path, e))?;
    torn.write_all(&bytes[keep..])
        .and_then(|_| torn.write_all(b"\n"))
        .and_then(|_| torn.sync_data())
        .map_err(|e| DataError::io(&torn_path, e))?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| DataError::io(path, e))?;
    file.set_len(keep as u64)
        .and_then(|_| file.sync_data())
        .map_err(|e| DataError::io(path, e))?;
    eprintln!(
        "warning: {}: its last line was cut off (a run stopped while writing it); moved it to {} and that record will be redone",
        path.display(),
        torn_path.display()
    );
    Ok(())
}

/// Sets the results at `path` (a file or a run directory) aside as `PATH.old`, replacing an
/// earlier one, so a run can start over (`--fresh`) without destroying what it replaces.
pub fn set_aside(path: &Path) -> DataResult<Option<PathBuf>> {
    if !path.exists() {
        return Ok(None);
    }
    let old = PathBuf::from(format!("{}.old", path.display()));
    if old.is_dir() {
        std::fs::remove_dir_all(&old).map_err(|e| DataError::io(&old, e))?;
    } else if old.exists() {
        std::fs::remove_file(&old).map_err(|e| DataError::io(&old, e))?;
    }
    std::fs::rename(path, &old).map_err(|e| DataError::io(path, e))?;
    Ok(Some(old))
}

/// The records of a keyed results file without checking its key (for showing what a finished
/// run found; a missing file has none).
pub fn read_records<T: DeserializeOwned>(path: &Path) -> DataResult<Vec<T>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with("{\"run_key\""))
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|e| {
                DataError::malformed(path, i as u64 + 1, e.column().to_string(), e.to_string())
            })
        })
        .collect()
}
