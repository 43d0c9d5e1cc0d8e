//! What each stage of the study saves about itself (`STAGE/stage.json`), and the rule for
//! reusing it: the same key (images, config, version) and every file it wrote unchanged.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::STAGES;
use crate::error::{DataError, TrainError};
use crate::progress::Progress;
use crate::resume::RunKey;

/// What every stage records about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord<T> {
    pub stage: String,
    /// The settings that determine the results; a rerun with equal settings reuses them.
    pub config: serde_json::Value,
    pub seed: u64,
    pub version: String,
    pub device: String,
    /// Seconds since the Unix epoch when the stage started.
    pub started_unix: u64,
    pub wall_seconds: f64,
    /// Everything that determines the results (the exact images, `config`, the version): the
    /// stage is reused only under an equal key (absent in records of older versions).
    #[serde(default)]
    pub run_key: RunKey,
    /// Files the stage wrote (relative to the run directory) with their SHA-256: the stage is
    /// reused only while they are all there and unchanged.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    pub results: T,
}

/// A file a stage wrote, and the SHA-256 of its content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub path: String,
    pub sha256: String,
}

impl Artifact {
    fn of(out: &Path, relative: &str) -> Result<Self, TrainError> {
        let path = out.join(relative);
        let bytes = std::fs::read(&path).map_err(|e| crate::error::DataError::io(&path, e))?;
        Ok(Artifact {
            path: relative.to_string(),
            sha256: crate::resume::fingerprint([bytes.as_slice()]),
        })
    }

    /// Why the file no longer verifies (None: it does).
    fn problem(&self, out: &Path) -> Option<String> {
        let path = out.join(&self.path);
        match std::fs::read(&path) {
            Err(e) => Some(format!("{} cannot be read ({e})", path.display())),
            Ok(bytes) if crate::resume::fingerprint([bytes.as_slice()]) != self.sha256 => Some(
                format!("{} has changed since the stage wrote it", path.display()),
            ),
            Ok(_) => None,
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(super) fn stage_file(out: &Path, stage: &str) -> PathBuf {
    out.join(stage).join("stage.json")
}

/// The record saved for `stage` when it can be reused: made under `key`, its artifacts intact.
/// A record made under another key is refused (naming what differs); an unreadable record or
/// a missing or changed artifact means the stage runs again (with a warning).
fn reusable<T: DeserializeOwned>(
    out: &Path,
    stage: &str,
    key: &RunKey,
    progress: &mut dyn Progress,
) -> Result<Option<StageRecord<T>>, TrainError> {
    let path = stage_file(out, stage);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(None);
    };
    let record: StageRecord<T> = match serde_json::from_str(&text) {
        Ok(record) => record,
        Err(e) => {
            progress.on_message(&format!(
                "warning: {} cannot be read ({e}); running the stage again",
                path.display()
            ));
            return Ok(None);
        }
    };
    match key.check(&record.run_key, &path) {
        Ok(()) => {}
        Err(DataError::StaleResults { path, differences }) => {
            // Only the stage's own settings changed (not the data or the library version): running
            // this stage again is enough, so the error says how.
            let only_settings = key
                .differing_names(&record.run_key)
                .iter()
                .all(|name| *name == "config" || name.starts_with("config."));
            let error = if only_settings {
                DataError::StaleStage {
                    path,
                    stage: stage.to_string(),
                    differences,
                }
            } else {
                DataError::StaleResults { path, differences }
            };
            return Err(error.into());
        }
        Err(other) => return Err(other.into()),
    }
    if let Some(problem) = record.artifacts.iter().find_map(|a| a.problem(out)) {
        progress.on_message(&format!(
            "warning: stage {stage}: {problem}; running the stage again"
        ));
        return Ok(None);
    }
    Ok(Some(record))
}

fn save_record<T: Serialize>(out: &Path, record: &StageRecord<T>) -> Result<(), TrainError> {
    let path = stage_file(out, &record.stage);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| crate::error::DataError::io(dir, e))?;
    }
    let json = serde_json::to_string_pretty(record).expect("plain data");
    crate::fsutil::write_bytes_atomically(&path, json.as_bytes())?;
    Ok(())
}

/// Where and on what a study's stages run: keys every stage record.
pub(super) struct StageContext<'a> {
    pub out: &'a Path,
    pub device: &'a str,
    /// Fingerprint of the training and test images.
    pub data: RunKey,
    pub seed: u64,
}

/// Runs `work` unless a reusable record with the same settings exists; saves the new record,
/// with the SHA-256 of the `artifacts` (paths relative to the run directory) it wrote.
pub(super) fn stage<T: Serialize + DeserializeOwned>(
    context: &StageContext<'_>,
    (index, name): (usize, &str),
    config: &impl Serialize,
    artifacts: &[&str],
    progress: &mut dyn Progress,
    work: impl FnOnce(&mut dyn Progress) -> Result<T, TrainError>,
) -> Result<StageRecord<T>, TrainError> {
    let out = context.out;
    // The config the stage runs with is what is saved and what keys its reuse.
    let config = serde_json::to_value(config).expect("plain data");
    let key = context.data.clone().with("config", &config);
    if let Some(record) = reusable::<T>(out, name, &key, progress)? {
        progress.on_stage_start(index, STAGES.len(), name, true);
        progress.on_stage_end(name, 0.0);
        return Ok(record);
    }
    progress.on_stage_start(index, STAGES.len(), name, false);
    let (started, started_unix) = (Instant::now(), now_unix());
    let results = work(progress)?;
    let record = StageRecord {
        stage: name.to_string(),
        config,
        seed: context.seed,
        version: crate::resume::CODE_VERSION.to_string(),
        device: context.device.to_string(),
        started_unix,
        wall_seconds: started.elapsed().as_secs_f64(),
        run_key: key,
        artifacts: artifacts
            .iter()
            .map(|a| Artifact::of(out, a))
            .collect::<Result<_, _>>()?,
        results,
    };
    save_record(out, &record)?;
    progress.on_stage_end(name, record.wall_seconds);
    Ok(record)
}
