//! Reader for the IDX format of the original MNIST/Fashion-MNIST files, gzip-compressed or raw.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};

use super::{Dataset, IMAGE_SIDE};
use crate::error::{DataError, DataResult};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// The decompressed bytes of a file and their SHA-256 (hex), read from `.gz` or raw.
#[derive(Debug)]
pub struct RawFile {
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// Reads a file, decompressing it when it starts with the gzip magic bytes.
pub fn read_maybe_gz(path: &Path) -> DataResult<RawFile> {
    let stored = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = if stored.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(stored.len() * 4);
        GzDecoder::new(&stored[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::invalid(
                    path,
                    format!("gzip stream is corrupt or truncated ({e}); delete the file and fetch it again"),
                )
            })?;
        out
    } else {
        stored
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(RawFile { bytes, sha256 })
}

fn header_u32(path: &Path, bytes: &[u8], field: usize, name: &str) -> DataResult<u32> {
    let start = field * 4;
    bytes
        .get(start..start + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| {
            DataError::malformed(
                path,
                0,
                name,
                format!(
                    "file ends after {} bytes, inside the IDX header",
                    bytes.len()
                ),
            )
        })
}

fn check_magic(path: &Path, bytes: &[u8], expected: u32) -> DataResult<()> {
    let magic = header_u32(path, bytes, 0, "magic")?;
    if magic != expected {
        return Err(DataError::malformed(
            path,
            0,
            "magic",
            format!("wrong magic number 0x{magic:08x}, expected 0x{expected:08x} (is this the right IDX file?)"),
        ));
    }
    Ok(())
}

/// Parses IDX image bytes (magic 0x803, dims n x 28 x 28) into row-major pixels.
pub fn parse_images(path: &Path, bytes: &[u8]) -> DataResult<(Vec<u8>, usize)> {
    check_magic(path, bytes, IMAGES_MAGIC)?;
    let count = header_u32(path, bytes, 1, "count")? as usize;
    let rows = header_u32(path, bytes, 2, "rows")? as usize;
    let cols = header_u32(path, bytes, 3, "columns")? as usize;
    if rows != IMAGE_SIDE || cols != IMAGE_SIDE {
        return Err(DataError::malformed(
            path,
            0,
            "rows x columns",
            format!("images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}"),
        ));
    }
    let pixels = &bytes[16..];
    let image_bytes = rows * cols;
    let expected = count * image_bytes;
    if pixels.len() < expected {
        let complete = pixels.len() / image_bytes;
        return Err(DataError::malformed(
            path,
            complete as u64,
            format!("pixel {}", pixels.len() % image_bytes),
            format!(
                "truncated: the header promises {count} images ({expected} pixel bytes) but the file holds {} bytes; image {complete} is incomplete",
                pixels.len()
            ),
        ));
    }
    if pixels.len() > expected {
        return Err(DataError::malformed(
            path,
            count as u64,
            "trailer",
            format!(
                "{} bytes after the last of the {count} images",
                pixels.len() - expected
            ),
        ));
    }
    Ok((pixels.to_vec(), count))
}

/// Parses IDX label bytes (magic 0x801) and checks every label is 0-9.
pub fn parse_labels(path: &Path, bytes: &[u8]) -> DataResult<Vec<u8>> {
    check_magic(path, bytes, LABELS_MAGIC)?;
    let count = header_u32(path, bytes, 1, "count")? as usize;
    let labels = &bytes[8..];
    if labels.len() != count {
        return Err(DataError::malformed(
            path,
            labels.len().min(count) as u64,
            "label",
            format!(
                "{} the header promises {count} labels but the file holds {}",
                if labels.len() < count {
                    "truncated:"
                } else {
                    "too long:"
                },
                labels.len()
            ),
        ));
    }
    if let Some(row) = labels.iter().position(|&l| l > 9) {
        return Err(DataError::malformed(
            path,
            row as u64,
            "label",
            format!("label {} is outside 0-9", labels[row]),
        ));
    }
    Ok(labels.to_vec())
}

/// Reads an images file and its labels file into a [`Dataset`], returning the SHA-256 of each
/// decompressed file as well.
pub fn read_pair(images_path: &Path, labels_path: &Path) -> DataResult<(Dataset, [String; 2])> {
    let images_file = read_maybe_gz(images_path)?;
    let labels_file = read_maybe_gz(labels_path)?;
    let (images, count) = parse_images(images_path, &images_file.bytes)?;
    let labels = parse_labels(labels_path, &labels_file.bytes)?;
    if labels.len() != count {
        return Err(DataError::invalid(
            labels_path,
            format!(
                "{} labels for {count} images in {}",
                labels.len(),
                images_path.display()
            ),
        ));
    }
    Ok((
        Dataset::new(images, labels),
        [images_file.sha256, labels_file.sha256],
    ))
}

/// Encodes images as IDX bytes (used by tests and fixtures).
pub fn encode_images(images: &[u8], count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + images.len());
    for v in [
        IMAGES_MAGIC,
        count as u32,
        IMAGE_SIDE as u32,
        IMAGE_SIDE as u32,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(images);
    out
}

/// Encodes labels as IDX bytes.
pub fn encode_labels(labels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}
