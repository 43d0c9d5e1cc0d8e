//! Charts drawn with plotters, one function each. A [`Chart`] is SVG: a notebook shows it
//! inline (evcxr), the CLI and reports write it as `.svg` or `.png`.

mod figures;

pub use figures::*;

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::training::{ConfusionMatrix, History};

/// The error type of chart drawing and writing.
pub type PlotError = Box<dyn std::error::Error + Send + Sync>;

/// A drawn chart (SVG text and its size in pixels).
#[derive(Clone, Debug)]
pub struct Chart {
    svg: String,
    width: u32,
    height: u32,
}

impl Chart {
    fn draw(
        (width, height): (u32, u32),
        paint: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError>,
    ) -> Result<Chart, PlotError> {
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE)?;
            paint(&root)?;
            root.present()?;
        }
        // plotters labels embedded bitmaps "data:png", which browsers and resvg reject.
        let svg = svg.replace("href=\"data:png;base64,", "href=\"data:image/png;base64,");
        Ok(Chart { svg, width, height })
    }

    pub fn svg(&self) -> &str {
        &self.svg
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The chart rasterized to PNG bytes (text uses the system's sans-serif font).
    pub fn to_png(&self) -> Result<Vec<u8>, PlotError> {
        use resvg::{tiny_skia, usvg};
        let mut options = usvg::Options::default();
        options.fontdb_mut().load_system_fonts();
        options.fontdb_mut().set_sans_serif_family("DejaVu Sans");
        let tree = usvg::Tree::from_str(&self.svg, &options)?;
        let mut pixmap =
            tiny_skia::Pixmap::new(self.width, self.height).ok_or("chart has no area")?;
        pixmap.fill(tiny_skia::Color::WHITE);
        resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
        Ok(pixmap.encode_png()?)
    }

    /// Writes the chart as SVG or PNG, chosen by the file extension.
    pub fn save(&self, path: &Path) -> Result<(), PlotError> {
        let bytes = match path.extension().and_then(|e| e.to_str()) {
            Some("svg") => self.svg.as_bytes().to_vec(),
            Some("png") => self.to_png()?,
            _ => return Err(format!("{}: use a .svg or .png file name", path.display()).into()),
        };
        crate::fsutil::write_bytes_atomically(path, &bytes)?;
        Ok(())
    }

    /// Shows the chart inline in an evcxr (Rust Jupyter kernel) notebook.
    pub fn evcxr_display(&self) {
        println!(
            "EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
            self.svg
        );
    }
}

/// One named line of (x, y) points.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }

    /// Values at x = 1, 2, 3, ... (epochs).
    pub fn per_epoch(name: impl Into<String>, values: &[f64]) -> Self {
        Series::new(
            name,
            values
                .iter()
                .enumerate()
                .map(|(i, v)| ((i + 1) as f64, *v))
                .collect(),
        )
    }
}

/// The matplotlib "tab10" colours, in order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn integer_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 {
        format!("{x:.0}")
    } else {
        String::new()
    }
}

fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x_min, mut x_max) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y_min, mut y_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x_min, x_max) = (x_min.min(x), x_max.max(x));
        (y_min, y_max) = (y_min.min(y), y_max.max(y));
    }
    if !x_min.is_finite() {
        (x_min, x_max, y_min, y_max) = (0.0, 1.0, 0.0, 1.0);
    }
    if x_max - x_min < 1.0 {
        x_max = x_min + 1.0;
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let integer_x = series
        .iter()
        .flat_map(|s| s.points.iter())
        .all(|(x, _)| x.fract() == 0.0);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x_min..x_max, (y_min - pad)..(y_max + pad))?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x_desc)
        .y_desc(y_desc)
        .y_label_formatter(&|y| format!("{y:.3}"));
    if integer_x {
        mesh.x_labels(((x_max - x_min) as usize + 1).clamp(2, 12))
            .x_label_formatter(&integer_label);
    }
    mesh.draw()?;
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        // Earlier lines are drawn wider, so a later line that coincides with them (two runs
        // with the same seed share their first epochs) leaves them visible at its edges.
        let width = 2 + 2 * (series.len() - 1 - i).min(2) as u32;
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied(),
                color.stroke_width(width),
            ))?
            .label(s.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        if s.points.len() <= 60 {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::Coordinate(-5, 5))
        .draw()?;
    Ok(())
}

/// Line chart of several named series with a legend and axis labels.
pub fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
) -> Result<Chart, PlotError> {
    Chart::draw((720, 420), |root| {
        draw_lines(root, title, x_desc, y_desc, series)
    })
}

/// Accuracy and loss curves, training vs validation, side by side (as the walkthrough plots
/// them after `fit`).
pub fn training_curves(history: &History, title: &str) -> Result<Chart, PlotError> {
    let pick = |f: fn(&crate::training::EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
        history
            .epochs
            .iter()
            .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
            .collect()
    };
    Chart::draw((1000, 400), |root| {
        let (left, right) = root.split_horizontally(500);
        draw_lines(
            &left,
            &format!("{title}: accuracy"),
            "epoch",
            "accuracy",
            &[
                Series::new("train", pick(|r| Some(r.accuracy))),
                Series::new("validation", pick(|r| r.val_accuracy)),
            ],
        )?;
        draw_lines(
            &right,
            &format!("{title}: loss"),
            "epoch",
            "categorical cross-entropy",
            &[
                Series::new("train", pick(|r| Some(r.loss))),
                Series::new("validation", pick(|r| r.val_loss)),
            ],
        )
    })
}

/// Vertical bar chart with a value printed above each bar.
pub fn bar_chart(
    title: &str,
    y_desc: &str,
    labels: &[String],
    values: &[f64],
) -> Result<Chart, PlotError> {
    assert_eq!(labels.len(), values.len(), "one label per bar");
    let n = values.len().max(1);
    let top = values.iter().copied().fold(0.0f64, f64::max).max(1e-9) * 1.12;
    // Wide enough that neighbouring labels do not overlap (about 6.5 px per character).
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let width = (n as f64 * (6.5 * longest as f64 + 14.0) + 80.0).clamp(820.0, 1200.0) as u32;
    Chart::draw((width, 420), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(56)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc(y_desc)
            .y_label_formatter(&|v| format_value(*v))
            .x_labels(n)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), v),
                ],
                PALETTE[0].filled(),
            );
            bar.set_margin(0, 0, 8, 8);
            bar
        }))?;
        chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
            Text::new(
                format_value(v),
                (SegmentValue::CenterOf(i), v + top * 0.015),
                anchored(("sans-serif", 13).into_font(), VPos::Bottom),
            )
        }))?;
        Ok(())
    })
}

/// A text style centred horizontally, with the given vertical anchor.
fn anchored(font: FontDesc<'_>, vertical: VPos) -> TextStyle<'_> {
    TextStyle::from(font).pos(Pos::new(HPos::Center, vertical))
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// 1500 -> "1.5k", 2000000 -> "2M", 0.25 -> "0.25": axis labels on log scales.
fn compact_number(v: f64) -> String {
    let trim = |x: f64| {
        let text = format!("{x:.2}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    if v.abs() >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if v.abs() >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// Heatmap of a `rows` x `cols` grid (row 0 at the top) with a colour scale (viridis) beside it.
pub fn heatmap(title: &str, values: &[f64], rows: usize, cols: usize) -> Result<Chart, PlotError> {
    assert_eq!(values.len(), rows * cols, "rows x cols values");
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    Chart::draw((620, 520), |root| {
        let (main, scale) = root.split_horizontally(520);
        let mut chart = ChartBuilder::on(&main)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(36)
            .build_cartesian_2d(0..cols, rows..0)?;
        chart.configure_mesh().disable_mesh().draw()?;
        chart.draw_series(values.iter().enumerate().map(|(i, &v)| {
            let (r, c) = (i / cols, i % cols);
            let color = ViridisRGB::get_color_normalized(v, lo, lo + span);
            Rectangle::new([(c, r), (c + 1, r + 1)], color.filled())
        }))?;
        let steps = 64;
        let mut bar = ChartBuilder::on(&scale)
            .margin_top(44)
            .margin_bottom(42)
            .margin_right(8)
            .y_label_area_size(52)
            .build_cartesian_2d(0.0..1.0, lo..lo + span)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_label_style(("sans-serif", 12))
            .draw()?;
        bar.draw_series((0..steps).map(|s| {
            let a = lo + span * s as f64 / steps as f64;
            let b = lo + span * (s + 1) as f64 / steps as f64;
            let color = ViridisRGB::get_color_normalized(a, lo, lo + span);
            Rectangle::new([(0.0, a), (1.0, b)], color.filled())
        }))?;
        Ok(())
    })
}

/// A grid of gray images (values 0..255, `side` x `side` each, light on dark as in
/// Fashion-MNIST) with a caption under each, `columns` per row.
pub fn image_grid(
    title: &str,
    images: &[Vec<u8>],
    side: usize,
    captions: &[String],
    columns: usize,
) -> Result<Chart, PlotError> {
    assert_eq!(images.len(), captions.len(), "one caption per image");
    let columns = columns.max(1);
    let rows = images.len().div_ceil(columns).max(1);
    let scale = 3usize;
    let cell = (side * scale + 24) as u32;
    let width = (cell + 16) * columns as u32;
    let height = 40 + cell * rows as u32;
    Chart::draw((width, height), |root| {
        let body = root.titled(title, ("sans-serif", 20))?;
        let cells = body.split_evenly((rows, columns));
        for ((image, caption), area) in images.iter().zip(captions).zip(cells.iter()) {
            let (w, _) = area.dim_in_pixel();
            let x0 = (w as i32 - (side * scale) as i32) / 2;
            // Nearest-neighbour upscaling to an RGB buffer, embedded as one bitmap.
            let mut rgb = Vec::with_capacity(side * side * scale * scale * 3);
            for y in 0..side * scale {
                for x in 0..side * scale {
                    let v = image[(y / scale) * side + x / scale];
                    rgb.extend_from_slice(&[v, v, v]);
                }
            }
            let size = ((side * scale) as u32, (side * scale) as u32);
            let element =
                BitMapElement::with_owned_buffer((x0, 2), size, rgb).ok_or("image buffer size")?;
            area.draw(&element)?;
            area.draw(&Text::new(
                caption.clone(),
                (w as i32 / 2, (side * scale) as i32 + 6),
                anchored(("sans-serif", 12).into_font(), VPos::Top),
            ))?;
        }
        Ok(())
    })
}

/// Confusion matrix as a coloured grid with the count in every cell (rows: true class,
/// columns: predicted class).
pub fn confusion_matrix_chart(
    matrix: &ConfusionMatrix,
    class_names: &[&str],
    title: &str,
) -> Result<Chart, PlotError> {
    let n = matrix.counts.len();
    let max = matrix
        .counts
        .iter()
        .flatten()
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    Chart::draw((760, 680), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(50)
            .y_label_area_size(100)
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())?;
        let name = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => class_names
                .get(n - 1 - *i)
                .copied()
                .unwrap_or("")
                .to_string(),
            _ => String::new(),
        };
        let column_name = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => class_names.get(*i).copied().unwrap_or("").to_string(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .axis_desc_style(("sans-serif", 16))
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&column_name)
            .y_label_formatter(&name)
            .x_label_style(("sans-serif", 10))
            .draw()?;
        for (t, row) in matrix.counts.iter().enumerate() {
            let y = n - 1 - t;
            for (p, &count) in row.iter().enumerate() {
                let strength = count as f64 / max;
                let color = if t == p { PALETTE[0] } else { PALETTE[3] };
                let fill = color.mix(0.08 + 0.92 * strength.sqrt());
                chart.draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                    ],
                    fill.filled(),
                )))?;
                let text_color = if strength > 0.45 { WHITE } else { BLACK };
                chart.draw_series(std::iter::once(Text::new(
                    count.to_string(),
                    (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                    anchored(("sans-serif", 13).into_font(), VPos::Center).color(&text_color),
                )))?;
            }
        }
        Ok(())
    })
}

/// Scatter plot of (x, y) points coloured by a third value (viridis), with a colour scale.
pub fn scatter_colored(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    value_desc: &str,
    points: &[(f64, f64, f64)],
) -> Result<Chart, PlotError> {
    let range = |f: fn(&(f64, f64, f64)) -> f64| {
        let (lo, hi) = points
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if !lo.is_finite() {
            (0.0, 1.0)
        } else if hi - lo < 1e-12 {
            (lo - 0.5, hi + 0.5)
        } else {
            let pad = (hi - lo) * 0.08;
            (lo - pad, hi + pad)
        }
    };
    let (x_lo, x_hi) = range(|p| p.0);
    let (y_lo, y_hi) = range(|p| p.1);
    let (v_lo, v_hi) = points
        .iter()
        .map(|p| p.2)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (v_lo, v_hi) = if v_lo.is_finite() && v_hi > v_lo {
        (v_lo, v_hi)
    } else {
        (v_lo.min(0.0), v_lo.max(0.0) + 1.0)
    };
    Chart::draw((760, 460), |root| {
        let (main, scale) = root.split_horizontally(650);
        let mut chart = ChartBuilder::on(&main)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()?;
        chart.draw_series(points.iter().map(|&(x, y, v)| {
            let color = ViridisRGB::get_color_normalized(v, v_lo, v_hi);
            Circle::new((x, y), 7, color.filled())
        }))?;
        let steps = 48;
        let mut bar = ChartBuilder::on(&scale)
            .caption(value_desc, ("sans-serif", 13))
            .margin_top(20)
            .margin_bottom(44)
            .margin_right(8)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..1.0, v_lo..v_hi)?;
        bar.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_label_formatter(&|v| format!("{v:.3}"))
            .y_label_style(("sans-serif", 12))
            .draw()?;
        bar.draw_series((0..steps).map(|s| {
            let a = v_lo + (v_hi - v_lo) * s as f64 / steps as f64;
            let b = v_lo + (v_hi - v_lo) * (s + 1) as f64 / steps as f64;
            Rectangle::new(
                [(0.0, a), (1.0, b)],
                ViridisRGB::get_color_normalized(a, v_lo, v_hi).filled(),
            )
        }))?;
        Ok(())
    })
}

/// One labelled point of [`labelled_scatter_panels`].
#[derive(Clone, Debug)]
pub struct LabelledPoint {
    pub label: String,
    /// One x value per panel.
    pub xs: Vec<f64>,
    pub y: f64,
}

/// Side-by-side scatter panels sharing the y axis (one per `x_descs` entry, each on a log x
/// axis), every point labelled; for "accuracy against cost" pictures.
pub fn labelled_scatter_panels(
    title: &str,
    x_descs: &[&str],
    y_desc: &str,
    points: &[LabelledPoint],
) -> Result<Chart, PlotError> {
    let finite = |v: &f64| v.is_finite() && *v > 0.0;
    let (y_lo, y_hi) = points
        .iter()
        .map(|p| p.y)
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    let (y_lo, y_hi) = if y_lo.is_finite() {
        let pad = ((y_hi - y_lo) * 0.12).max(0.005);
        (y_lo - pad, y_hi + pad)
    } else {
        (0.0, 1.0)
    };
    let panels = x_descs.len().max(1);
    Chart::draw((520 * panels as u32, 480), |root| {
        let body = root.titled(title, ("sans-serif", 20))?;
        let areas = body.split_evenly((1, panels));
        for (panel, (area, x_desc)) in areas.iter().zip(x_descs).enumerate() {
            let xs: Vec<f64> = points
                .iter()
                .filter_map(|p| p.xs.get(panel).copied())
                .filter(finite)
                .collect();
            let (lo, hi) = xs
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            let (x_lo, x_hi) = if lo.is_finite() {
                (lo / 2.0, hi * 3.0)
            } else {
                (1.0, 10.0)
            };
            let mut chart = ChartBuilder::on(area)
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)?;
            chart
                .configure_mesh()
                .x_desc(*x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&|v| compact_number(*v))
                .y_label_formatter(&|v| format!("{v:.3}"))
                .draw()?;
            // Label boxes already placed in this panel (pixels), so a label that would cover
            // another moves down or up by a line until it is clear.
            let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
            for (i, point) in points.iter().enumerate() {
                let Some(&x) = point.xs.get(panel).filter(|x| finite(x)) else {
                    continue;
                };
                if !point.y.is_finite() {
                    continue;
                }
                let color = Palette99::pick(i).to_rgba();
                chart.draw_series(std::iter::once(Circle::new(
                    (x, point.y),
                    6,
                    color.filled(),
                )))?;
                // Labels of points in the right third go to their left, so they are not cut off.
                let right_third = (x / x_lo).ln() > (x_hi / x_lo).ln() * 2.0 / 3.0;
                let (h_pos, dx) = if right_third {
                    (HPos::Right, -9)
                } else {
                    (HPos::Left, 9)
                };
                let (px, py) = chart.backend_coord(&(x, point.y));
                // About 7 pixels per character at 12 px, a line of 14.
                let width = 7 * point.label.chars().count() as i32;
                let left = px + dx - if right_third { width } else { 0 };
                let label_box = |dy: i32| (left, py + dy - 7, left + width, py + dy + 7);
                let clear = |dy: i32| {
                    let (left, top, right, bottom) = label_box(dy);
                    placed
                        .iter()
                        .all(|&(l, t, r, b)| right <= l || r <= left || bottom <= t || b <= top)
                };
                let dy = [0, 14, -14, 28, -28, 42, -42]
                    .into_iter()
                    .find(|&dy| clear(dy))
                    .unwrap_or(0);
                placed.push(label_box(dy));
                let style = ("sans-serif", 12)
                    .into_font()
                    .into_text_style(area)
                    .pos(Pos::new(h_pos, VPos::Center));
                chart.draw_series(std::iter::once(
                    EmptyElement::at((x, point.y))
                        + Text::new(point.label.clone(), (dx, dy), style),
                ))?;
            }
        }
        Ok(())
    })
}
