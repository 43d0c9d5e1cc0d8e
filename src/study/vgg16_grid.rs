//! VGG-16 from ImageNet weights by fine-tuning depth (frozen, block 5, end to end) and input
//! size: every caffe-input run of the study in one grid, and a sentence written from it.

use super::{minutes, StudyResults};
use crate::report::Table;
use crate::transfer::{
    Architecture, Preprocessing, StageOutcome, TransferOutcome, BLOCK5_LABEL, END_TO_END_LABEL,
};

/// How much of VGG-16 was trained, in the grid's row order.
const DEPTHS: [&str; 3] = ["frozen (head only)", BLOCK5_LABEL, END_TO_END_LABEL];

/// One cell: a run's scores at one depth and input side.
struct Cell<'a> {
    depth: usize,
    side: usize,
    stage: &'a StageOutcome,
    run: &'a TransferOutcome,
}

/// Every grid cell the study has: each caffe-input VGG-16 run gives its head's cell and, when
/// it fine-tuned, that cell too (a head trained again for a fine-tuning run is not repeated
/// when the frozen run at that size exists).
fn cells(results: &StudyResults) -> Vec<Cell<'_>> {
    let mut cells: Vec<Cell<'_>> = Vec::new();
    let runs = results.transfer_runs().filter(|o| {
        o.config.backbone == Architecture::Vgg16 && o.config.preprocessing == Preprocessing::Caffe
    });
    for run in runs {
        let side = run.config.side;
        if !cells.iter().any(|c| c.depth == 0 && c.side == side) {
            cells.push(Cell {
                depth: 0,
                side,
                stage: &run.head,
                run,
            });
        }
        if let (Some(ft), Some(stage)) = (&run.config.fine_tune, &run.fine_tune) {
            let depth = DEPTHS
                .iter()
                .position(|d| *d == ft.depth_label())
                .expect("every fine-tuning depth is a row");
            cells.push(Cell {
                depth,
                side,
                stage,
                run,
            });
        }
    }
    cells
}

fn sides(cells: &[Cell<'_>]) -> Vec<usize> {
    let mut sides: Vec<usize> = cells.iter().map(|c| c.side).collect();
    sides.sort_unstable();
    sides.dedup();
    sides
}

/// Test accuracy (validation accuracy, wall time of the run) of VGG-16 by fine-tuning depth
/// (rows) and input size (columns); "-" where the study has no such run. Runs on a random
/// backbone are marked.
pub fn vgg16_grid_table(results: &StudyResults) -> Table {
    let cells = cells(results);
    let sides = sides(&cells);
    let headers: Vec<String> = std::iter::once("VGG-16 (caffe input)".to_string())
        .chain(sides.iter().map(|s| format!("{s}x{s}: test (val), time")))
        .collect();
    let header_refs: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = Table::new(&header_refs);
    // Cells trained on different subsets (the quick preset) say how many images each used.
    let mixed = cells
        .windows(2)
        .any(|w| w[0].run.config.limit != w[1].run.config.limit);
    for (depth, name) in DEPTHS.iter().enumerate() {
        let mut row = vec![name.to_string()];
        for &side in &sides {
            let cell = cells.iter().find(|c| c.depth == depth && c.side == side);
            row.push(cell.map_or("-".into(), |c| {
                let images = match (mixed, c.run.config.limit) {
                    (false, _) => String::new(),
                    (true, Some(n)) => format!(", first {n} images"),
                    (true, None) => ", all images".into(),
                };
                format!(
                    "{} ({:.4}), {}{images}{}",
                    c.stage
                        .test
                        .map_or("-".into(), |t| format!("{:.4}", t.accuracy)),
                    c.stage.validation.accuracy,
                    minutes(c.run.wall_seconds),
                    if c.run.weights.imagenet {
                        ""
                    } else {
                        ", RANDOM init"
                    }
                )
            }));
        }
        table.push(row);
    }
    table
}

/// What the grid shows, in sentences written from its numbers: the best cell by validation
/// accuracy (what a practitioner would pick) with its test accuracy, and what a larger input and
/// each fine-tuning depth changed on the test images, each against a run on the same images.
/// Empty when the study has no VGG-16 runs with test scores.
pub fn vgg16_grid_text(results: &StudyResults) -> String {
    let cells = cells(results);
    let test = |stage: &StageOutcome| stage.test.map(|t| t.accuracy);
    let Some(best) = cells
        .iter()
        .filter(|c| c.stage.test.is_some())
        .max_by(|a, b| {
            a.stage
                .validation
                .accuracy
                .total_cmp(&b.stage.validation.accuracy)
        })
    else {
        return String::new();
    };
    let mut sentences = vec![format!(
        "Picked on validation accuracy ({:.4}), the best VGG-16 is {} at {}x{}: test accuracy {:.4}, {} trainable parameters.",
        best.stage.validation.accuracy,
        DEPTHS[best.depth],
        best.side,
        best.side,
        test(best.stage).unwrap_or(f64::NAN),
        best.stage.trainable_params
    )];
    let frozen = |side: usize| cells.iter().find(|c| c.depth == 0 && c.side == side);
    if let Some(small) = frozen(32) {
        for side in sides(&cells).into_iter().filter(|&s| s > 32) {
            let same_images = |c: &&Cell<'_>| c.run.config.limit == small.run.config.limit;
            if let Some(large) = frozen(side).filter(same_images) {
                if let (Some(a), Some(b)) = (test(small.stage), test(large.stage)) {
                    sentences.push(format!(
                        "Frozen features at {side}x{side} instead of 32x32: {:+.1} points of test accuracy.",
                        100.0 * (b - a)
                    ));
                }
            }
        }
    }
    // Each fine-tuning against the head it started from (same images, same input size).
    for cell in cells.iter().filter(|c| c.depth > 0) {
        if let (Some(tuned), Some(head)) = (test(cell.stage), test(&cell.run.head)) {
            sentences.push(format!(
                "{} at {}x{}: {:+.1} points over its frozen start.",
                capitalized(DEPTHS[cell.depth]),
                cell.side,
                cell.side,
                100.0 * (tuned - head)
            ));
        }
    }
    if cells.iter().any(|c| !c.run.weights.imagenet) {
        sentences.push(
            "Runs marked RANDOM init had no ImageNet weights: they are not transfer learning."
                .into(),
        );
    }
    sentences.join(" ")
}

fn capitalized(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().chain(chars).collect()
    })
}
