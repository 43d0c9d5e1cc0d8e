//! A Keras-like model summary: layer, output shape, parameter count, totals.

use std::fmt;

/// One row of the summary. Output shapes use Keras' channels-last notation, (None, H, W, C),
/// so the table reads like the walkthrough's.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LayerSummary {
    pub name: String,
    pub kind: String,
    pub output_shape: Vec<usize>,
    pub params: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelSummary {
    pub name: String,
    pub layers: Vec<LayerSummary>,
    /// Parameters that training does not change (frozen backbones).
    pub non_trainable_params: usize,
}

impl ModelSummary {
    pub fn total_params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }

    pub fn trainable_params(&self) -> usize {
        self.total_params() - self.non_trainable_params
    }
}

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = std::iter::once("None".to_string())
        .chain(shape.iter().map(|d| d.to_string()))
        .collect();
    format!("({})", dims.join(", "))
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = "=".repeat(65);
        writeln!(f, "Model: \"{}\"", self.name)?;
        writeln!(f, "{}", "_".repeat(65))?;
        writeln!(
            f,
            "{:<33}{:<24}{:>10}",
            "Layer (type)", "Output Shape", "Param #"
        )?;
        writeln!(f, "{rule}")?;
        for (i, layer) in self.layers.iter().enumerate() {
            writeln!(
                f,
                "{:<33}{:<24}{:>10}",
                format!("{} ({})", layer.name, layer.kind),
                shape_text(&layer.output_shape),
                thousands(layer.params)
            )?;
            if i + 1 < self.layers.len() {
                writeln!(f)?;
            }
        }
        writeln!(f, "{rule}")?;
        writeln!(f, "Total params: {}", thousands(self.total_params()))?;
        writeln!(
            f,
            "Trainable params: {}",
            thousands(self.trainable_params())
        )?;
        writeln!(
            f,
            "Non-trainable params: {}",
            thousands(self.non_trainable_params)
        )?;
        write!(f, "{}", "_".repeat(65))
    }
}
