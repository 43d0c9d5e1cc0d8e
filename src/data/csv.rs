//! Kaggle-format CSV (`label,pixel1,...,pixel784`, header required, integers 0-255, labels 0-9).

use std::path::Path;

use super::{Dataset, IMAGE_PIXELS};
use crate::error::{DataError, DataResult};

/// Name of CSV column `index` (0 = `label`, then `pixel1`..`pixel784`).
pub fn column_name(index: usize) -> String {
    if index == 0 {
        "label".to_string()
    } else {
        format!("pixel{index}")
    }
}

fn parse_u8_field(field: &[u8], max: u8) -> Result<u8, String> {
    let text = std::str::from_utf8(field).map_err(|_| "not valid UTF-8".to_string())?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty value (missing)".to_string());
    }
    let value: i64 = trimmed
        .parse()
        .map_err(|_| format!("{:?} is not an integer", crate::error::cut(trimmed, 40)))?;
    if value < 0 || value > max as i64 {
        return Err(format!("{value} is outside 0-{max}"));
    }
    Ok(value as u8)
}

/// What a file that starts with `head` is, when it is a known binary format rather than text.
pub fn binary_format(head: &[u8]) -> Option<&'static str> {
    const FORMATS: [(&[u8], &str); 6] = [
        (
            b"\x1f\x8b",
            "a gzip file (decompress it first; for the IDX .gz files pass their directory)",
        ),
        (
            b"\x89PNG",
            "a PNG image (`fashion-mnist predict` classifies pictures)",
        ),
        (
            b"\xff\xd8\xff",
            "a JPEG image (`fashion-mnist predict` classifies pictures)",
        ),
        (
            b"PK\x03\x04",
            "a zip archive (extract the CSV from it first)",
        ),
        (
            b"\x00\x00\x08\x03",
            "an IDX image file (pass the directory holding the IDX files)",
        ),
        (
            b"\x00\x00\x08\x01",
            "an IDX label file (pass the directory holding the IDX files)",
        ),
    ];
    FORMATS
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, what)| *what)
}

/// Reads a Kaggle-format CSV file. Every problem is reported with its file, line and column.
pub fn read_kaggle_csv(path: &Path) -> DataResult<Dataset> {
    use std::io::{BufRead, BufReader};
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let head = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
    if let Some(what) = binary_format(head) {
        return Err(DataError::invalid(
            path,
            format!("expected Kaggle-format CSV (label,pixel1,...,pixel784), but this is {what}"),
        ));
    }
    read_kaggle_csv_from(path, reader)
}

/// Reads Kaggle-format CSV from any reader; `path` is only used in error messages.
pub fn read_kaggle_csv_from(path: &Path, reader: impl std::io::Read) -> DataResult<Dataset> {
    let mut csv_reader = ::csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(reader);
    let mut record = ::csv::ByteRecord::new();
    let csv_error = |e: ::csv::Error| {
        let line = e.position().map(|p| p.line()).unwrap_or(0);
        DataError::malformed(path, line, "-", e.to_string())
    };

    let has_header = csv_reader
        .read_byte_record(&mut record)
        .map_err(csv_error)?;
    if !has_header {
        return Err(DataError::malformed(
            path,
            1,
            "label",
            "the file is empty; expected the header label,pixel1,...,pixel784",
        ));
    }
    let expected_columns = IMAGE_PIXELS + 1;
    for index in 0..expected_columns.max(record.len()) {
        let expected = (index < expected_columns).then(|| column_name(index));
        let found = record
            .get(index)
            .map(|f| String::from_utf8_lossy(f).trim().to_string());
        if expected != found {
            return Err(DataError::malformed(
                path,
                1,
                expected
                    .clone()
                    .unwrap_or_else(|| format!("{} (after pixel784)", index + 1)),
                match (expected, found) {
                    (Some(e), Some(f)) => format!("header has {:?} where {e:?} was expected (Kaggle format: label,pixel1,...,pixel784)", crate::error::cut(&f, 40)),
                    (Some(e), None) => format!("header ends after {index} columns; {e:?} is missing"),
                    (None, Some(f)) => format!("header has an extra column {:?} after pixel784", crate::error::cut(&f, 40)),
                    (None, None) => unreachable!(),
                },
            ));
        }
    }

    let mut images = Vec::new();
    let mut labels = Vec::new();
    while csv_reader
        .read_byte_record(&mut record)
        .map_err(csv_error)?
    {
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        if record.len() == 1 && record.get(0).is_some_and(|f| f.is_empty()) {
            continue; // blank line
        }
        if record.len() != expected_columns {
            let column = if record.len() < expected_columns {
                column_name(record.len())
            } else {
                format!("{} (after pixel784)", expected_columns + 1)
            };
            return Err(DataError::malformed(
                path,
                line,
                column,
                format!(
                    "row has {} values, expected {expected_columns}",
                    record.len()
                ),
            ));
        }
        for (index, field) in record.iter().enumerate() {
            let max = if index == 0 { 9 } else { 255 };
            let value = parse_u8_field(field, max)
                .map_err(|message| DataError::malformed(path, line, column_name(index), message))?;
            if index == 0 {
                labels.push(value);
            } else {
                images.push(value);
            }
        }
    }
    Ok(Dataset::new(images, labels))
}

/// Writes a dataset as Kaggle-format CSV, atomically: the file appears under its final name
/// only once complete.
pub fn write_kaggle_csv(dataset: &Dataset, path: &Path) -> DataResult<()> {
    crate::fsutil::write_atomically(path, |out| {
        let mut line = String::with_capacity(4 * (IMAGE_PIXELS + 1));
        line.push_str("label");
        for index in 1..=IMAGE_PIXELS {
            line.push(',');
            line.push_str(&column_name(index));
        }
        line.push('\n');
        out.write_all(line.as_bytes())?;
        for i in 0..dataset.len() {
            line.clear();
            line.push_str(&dataset.labels[i].to_string());
            for &pixel in dataset.image(i) {
                line.push(',');
                line.push_str(&pixel.to_string());
            }
            line.push('\n');
            out.write_all(line.as_bytes())?;
        }
        Ok(())
    })
}
