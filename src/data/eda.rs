//! The walkthrough's exploratory checks on a polars DataFrame with its columns
//! (`label, pixel1..pixel784`): shape, head, missing values, duplicates, class counts.

use polars::prelude::*;

/// Re-exported so that notebooks can name the type (evcxr needs it for variables).
pub use polars::prelude::DataFrame;

use super::{csv::column_name, Dataset, CLASS_NAMES, IMAGE_PIXELS, NUM_CLASSES};

/// The dataset as a DataFrame with Kaggle's columns (`label`, `pixel1`..`pixel784`, UInt8).
pub fn to_dataframe(dataset: &Dataset) -> PolarsResult<DataFrame> {
    let n = dataset.len();
    let mut columns = Vec::with_capacity(IMAGE_PIXELS + 1);
    columns.push(Column::new("label".into(), dataset.labels.clone()));
    for pixel in 0..IMAGE_PIXELS {
        let values: Vec<u8> = (0..n)
            .map(|i| dataset.images[i * IMAGE_PIXELS + pixel])
            .collect();
        columns.push(Column::new(column_name(pixel + 1).into(), values));
    }
    DataFrame::new(columns)
}

/// Back from a DataFrame with Kaggle's columns to a [`Dataset`] (any integer dtype; values are
/// checked to be in range).
pub fn from_dataframe(df: &DataFrame) -> PolarsResult<Dataset> {
    let n = df.height();
    let mut images = vec![0u8; n * IMAGE_PIXELS];
    let mut labels = vec![0u8; n];
    for index in 0..=IMAGE_PIXELS {
        let name = column_name(index);
        let column = df.column(&name)?.cast(&DataType::UInt8)?;
        let values = column.u8()?;
        if values.null_count() > 0 {
            polars_bail!(ComputeError: "column {name} has missing or out-of-range values");
        }
        for (row, value) in values.into_no_null_iter().enumerate() {
            if index == 0 {
                labels[row] = value;
            } else {
                images[row * IMAGE_PIXELS + index - 1] = value;
            }
        }
    }
    Ok(Dataset::new(images, labels))
}

/// Missing values per column (only columns with at least one), and the total.
pub fn missing_values(df: &DataFrame) -> (Vec<(String, usize)>, usize) {
    let per_column: Vec<(String, usize)> = df
        .get_columns()
        .iter()
        .filter(|c| c.null_count() > 0)
        .map(|c| (c.name().to_string(), c.null_count()))
        .collect();
    let total = per_column.iter().map(|(_, n)| n).sum();
    (per_column, total)
}

/// Number of rows that repeat an earlier row exactly (label and all pixels), as pandas'
/// `duplicated().sum()` counts them.
pub fn duplicate_count(df: &DataFrame) -> PolarsResult<usize> {
    Ok(df.height() - drop_duplicates(df)?.height())
}

/// The frame without repeated rows, keeping the first of each, in the original order.
pub fn drop_duplicates(df: &DataFrame) -> PolarsResult<DataFrame> {
    df.unique_stable(None, UniqueKeepStrategy::First, None)
}

/// Images per class as a DataFrame (`label`, `class`, `count`), in label order.
pub fn class_counts(df: &DataFrame) -> PolarsResult<DataFrame> {
    let labels = df.column("label")?.cast(&DataType::UInt8)?;
    let mut counts = [0u32; NUM_CLASSES];
    for label in labels.u8()?.into_iter().flatten() {
        if (label as usize) < NUM_CLASSES {
            counts[label as usize] += 1;
        }
    }
    df!(
        "label" => (0..NUM_CLASSES as u32).collect::<Vec<_>>(),
        "class" => CLASS_NAMES.to_vec(),
        "count" => counts.to_vec(),
    )
}

/// The first rows, with only the first and last few columns, for a readable print.
pub fn head_preview(df: &DataFrame, rows: usize) -> PolarsResult<DataFrame> {
    let names: Vec<String> = (0..5)
        .map(column_name)
        .chain((IMAGE_PIXELS - 2..=IMAGE_PIXELS).map(column_name))
        .collect();
    df.select(names).map(|d| d.head(Some(rows)))
}
