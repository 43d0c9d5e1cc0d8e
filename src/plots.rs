//! Charts drawn with plotters. Each returns SVG text, which a notebook shows inline and the CLI
//! writes to a file.

use plotters::prelude::*;

use crate::training::History;

/// The error type of chart drawing.
pub type PlotError = Box<dyn std::error::Error + Send + Sync>;

/// One named line of (x, y) points.
struct Curve<'a> {
    name: &'a str,
    points: Vec<(f64, f64)>,
    color: RGBColor,
}

fn draw_series_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    y_label: &str,
    series: &[Curve<'_>],
    legend: SeriesLabelPosition,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let points = series.iter().flat_map(|c| c.points.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(52)
        .build_cartesian_2d(1.0..x_max.max(2.0), (y_min - pad)..(y_max + pad))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_label)
        .x_labels((x_max as usize).clamp(2, 12))
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|y| format!("{y:.3}"))
        .draw()?;
    for Curve {
        name,
        points,
        color,
    } in series
    {
        let color = *color;
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(legend)
        .draw()?;
    Ok(())
}

/// Accuracy and loss curves, training vs validation, side by side (as the walkthrough plots
/// them after `fit`).
pub fn training_curves_svg(history: &History, title: &str) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 400)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        let pick = |f: fn(&crate::training::EpochRecord) -> Option<f64>| -> Vec<(f64, f64)> {
            history
                .epochs
                .iter()
                .filter_map(|r| f(r).map(|v| (r.epoch as f64, v)))
                .collect()
        };
        let train_color = RGBColor(31, 119, 180);
        let val_color = RGBColor(255, 127, 14);
        draw_series_panel(
            &left,
            &format!("{title}: accuracy"),
            "accuracy",
            &[
                Curve {
                    name: "train",
                    points: pick(|r| Some(r.accuracy)),
                    color: train_color,
                },
                Curve {
                    name: "validation",
                    points: pick(|r| r.val_accuracy),
                    color: val_color,
                },
            ],
            SeriesLabelPosition::LowerRight,
        )?;
        draw_series_panel(
            &right,
            &format!("{title}: loss"),
            "categorical cross-entropy",
            &[
                Curve {
                    name: "train",
                    points: pick(|r| Some(r.loss)),
                    color: train_color,
                },
                Curve {
                    name: "validation",
                    points: pick(|r| r.val_loss),
                    color: val_color,
                },
            ],
            SeriesLabelPosition::UpperRight,
        )?;
        root.present()?;
    }
    Ok(svg)
}
