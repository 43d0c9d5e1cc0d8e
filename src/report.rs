//! Tables for people: rendered as HTML in notebooks (evcxr) and as aligned text in a terminal.

use std::fmt;

use polars::prelude::DataFrame;

use crate::models::ModelSummary;
use crate::training::{ClassificationReport, History};

/// A table of text cells with a header row.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    pub title: Option<String>,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// The HTML templates (auto-escaping every value they are given, as their names end in
/// `.html`): a table, and the study's report.
fn templates() -> &'static minijinja::Environment<'static> {
    static TEMPLATES: std::sync::OnceLock<minijinja::Environment<'static>> =
        std::sync::OnceLock::new();
    TEMPLATES.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, source) in [
            ("table.html", include_str!("templates/table.html")),
            ("study.html", include_str!("templates/study.html")),
        ] {
            env.add_template(name, source)
                .expect("the templates are valid");
        }
        env
    })
}

/// Renders the template `name` with `context`.
pub fn render(name: &str, context: impl serde::Serialize) -> Result<String, minijinja::Error> {
    templates().get_template(name)?.render(context)
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            title: None,
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn titled(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// The first rows of a DataFrame (at most `max_rows`), every column.
    pub fn from_dataframe(df: &DataFrame, max_rows: usize) -> Self {
        let mut table = Table {
            title: None,
            headers: df
                .get_column_names()
                .iter()
                .map(|n| n.to_string())
                .collect(),
            rows: Vec::new(),
        };
        for i in 0..df.height().min(max_rows) {
            table.push(
                df.get_columns()
                    .iter()
                    .map(|c| match c.get(i) {
                        Ok(polars::prelude::AnyValue::String(s)) => s.to_string(),
                        Ok(v) => v.to_string(),
                        Err(_) => String::new(),
                    })
                    .collect(),
            );
        }
        table
    }

    /// The table as an HTML `<table>` (cells escaped by the template).
    pub fn to_html(&self) -> String {
        render("table.html", minijinja::context! { table => self })
            .expect("the table template renders any table")
    }

    /// Shows the table as HTML in an evcxr notebook.
    pub fn evcxr_display(&self) {
        println!(
            "EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT",
            self.to_html()
        );
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        if let Some(title) = &self.title {
            writeln!(f, "{title}")?;
        }
        let line = |cells: &[String]| -> String {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:>w$}"))
                .collect::<Vec<_>>()
                .join("  ")
        };
        writeln!(f, "{}", line(&self.headers))?;
        writeln!(
            f,
            "{}",
            "-".repeat(widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1))
        )?;
        for row in &self.rows {
            writeln!(f, "{}", line(row))?;
        }
        Ok(())
    }
}

fn opt(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.4}"))
        .unwrap_or_else(|| "-".into())
}

impl From<&History> for Table {
    fn from(history: &History) -> Table {
        let mut table = Table::new(&[
            "epoch",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "seconds",
        ]);
        for r in &history.epochs {
            let marker = if history.best_epoch == Some(r.epoch) {
                " *"
            } else {
                ""
            };
            table.push(vec![
                format!("{}{marker}", r.epoch),
                format!("{:.4}", r.loss),
                format!("{:.4}", r.accuracy),
                opt(r.val_loss),
                opt(r.val_accuracy),
                format!("{:.1}", r.seconds),
            ]);
        }
        table
    }
}

impl From<&ModelSummary> for Table {
    fn from(summary: &ModelSummary) -> Table {
        let mut table = Table::new(&["Layer (type)", "Output Shape", "Param #"]).titled(format!(
            "Model \"{}\": {} parameters ({} trainable)",
            summary.name,
            summary.total_params(),
            summary.trainable_params()
        ));
        for layer in &summary.layers {
            let shape: Vec<String> = std::iter::once("None".to_string())
                .chain(layer.output_shape.iter().map(|d| d.to_string()))
                .collect();
            table.push(vec![
                format!("{} ({})", layer.name, layer.kind),
                format!("({})", shape.join(", ")),
                layer.params.to_string(),
            ]);
        }
        table
    }
}

impl From<&ClassificationReport> for Table {
    fn from(report: &ClassificationReport) -> Table {
        let mut table = Table::new(&["class", "precision", "recall", "f1-score", "support"]);
        for c in &report.classes {
            table.push(vec![
                c.class.clone(),
                format!("{:.4}", c.precision),
                format!("{:.4}", c.recall),
                format!("{:.4}", c.f1),
                c.support.to_string(),
            ]);
        }
        let support: u32 = report.classes.iter().map(|c| c.support).sum();
        let (p, r, f1) = report.macro_average();
        table.push(vec![
            "accuracy".into(),
            String::new(),
            String::new(),
            format!("{:.4}", report.accuracy),
            support.to_string(),
        ]);
        table.push(vec![
            "macro avg".into(),
            format!("{p:.4}"),
            format!("{r:.4}"),
            format!("{f1:.4}"),
            support.to_string(),
        ]);
        table
    }
}

impl ModelSummary {
    /// Shows the summary as an HTML table in an evcxr notebook.
    pub fn evcxr_display(&self) {
        Table::from(self).evcxr_display();
    }
}

impl History {
    /// Shows the history as an HTML table in an evcxr notebook (best epoch marked `*`).
    pub fn evcxr_display(&self) {
        Table::from(self).evcxr_display();
    }
}

impl ClassificationReport {
    /// Shows the report as an HTML table in an evcxr notebook.
    pub fn evcxr_display(&self) {
        Table::from(self).evcxr_display();
    }
}
