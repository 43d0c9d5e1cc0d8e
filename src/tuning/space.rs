//! Search spaces: integer ranges with a step, float ranges (linear or log), and choices;
//! declared in code or read from a TOML/JSON file.

use std::collections::BTreeMap;
use std::path::Path;

use rand::Rng;

use crate::error::{DataError, DataResult};

/// One hyperparameter and the values it may take.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Param {
    /// `min, min + step, ..., <= max`.
    Int {
        name: String,
        min: i64,
        max: i64,
        #[serde(default = "one")]
        step: i64,
    },
    /// Uniform in `[min, max]`, or log-uniform when `log`.
    Float {
        name: String,
        min: f64,
        max: f64,
        #[serde(default)]
        log: bool,
    },
    /// One of the listed values.
    Choice {
        name: String,
        values: Vec<serde_json::Value>,
    },
}

fn one() -> i64 {
    1
}

impl Param {
    pub fn name(&self) -> &str {
        match self {
            Param::Int { name, .. } | Param::Float { name, .. } | Param::Choice { name, .. } => {
                name
            }
        }
    }

    fn check(&self) -> Result<(), String> {
        match self {
            Param::Int { min, max, step, .. } if *step <= 0 || min > max => Err(format!(
                "needs min <= max and step > 0 (min {min}, max {max}, step {step})"
            )),
            Param::Float { min, max, log, .. }
                if !(min.is_finite() && max.is_finite()) || min > max || (*log && *min <= 0.0) =>
            {
                Err(format!(
                    "needs finite min <= max (and min > 0 for log): min {min}, max {max}"
                ))
            }
            Param::Choice { values, .. } if values.is_empty() => {
                Err("needs at least one value".into())
            }
            _ => Ok(()),
        }
    }

    fn sample(&self, rng: &mut impl Rng) -> serde_json::Value {
        match self {
            Param::Int { min, max, step, .. } => {
                let steps = (max - min) / step;
                serde_json::json!(min + step * rng.gen_range(0..=steps))
            }
            Param::Float { min, max, log, .. } => {
                let value = if min == max {
                    *min
                } else if *log {
                    (rng.gen_range(min.ln()..=max.ln())).exp()
                } else {
                    rng.gen_range(*min..=*max)
                };
                serde_json::json!(value)
            }
            Param::Choice { values, .. } => values[rng.gen_range(0..values.len())].clone(),
        }
    }

    /// Whether `value` is one this parameter can take.
    pub fn contains(&self, value: &serde_json::Value) -> bool {
        match self {
            Param::Int { min, max, step, .. } => value
                .as_i64()
                .is_some_and(|v| v >= *min && v <= *max && (v - min) % step == 0),
            Param::Float { min, max, .. } => value
                .as_f64()
                .is_some_and(|v| v >= *min * (1.0 - 1e-12) && v <= *max * (1.0 + 1e-12)),
            Param::Choice { values, .. } => values.contains(value),
        }
    }
}

/// Values of the hyperparameters of one trial, by name.
pub type HyperParams = BTreeMap<String, serde_json::Value>;

/// A set of hyperparameters to search.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SearchSpace {
    #[serde(rename = "param")]
    pub params: Vec<Param>,
}

impl SearchSpace {
    pub fn new() -> Self {
        SearchSpace::default()
    }

    /// Adds an integer range `min..=max` in steps of `step`.
    pub fn int(mut self, name: &str, min: i64, max: i64, step: i64) -> Self {
        self.params.push(Param::Int {
            name: name.into(),
            min,
            max,
            step,
        });
        self
    }

    /// Adds a float range, sampled uniformly or log-uniformly.
    pub fn float(mut self, name: &str, min: f64, max: f64, log: bool) -> Self {
        self.params.push(Param::Float {
            name: name.into(),
            min,
            max,
            log,
        });
        self
    }

    /// Adds a choice among `values`.
    pub fn choice(mut self, name: &str, values: &[serde_json::Value]) -> Self {
        self.params.push(Param::Choice {
            name: name.into(),
            values: values.to_vec(),
        });
        self
    }

    /// The walkthrough's space: first dense layer 64-128 step 16, learning rate 1e-2 or 1e-3.
    pub fn walkthrough() -> Self {
        SearchSpace::new().int("units", 64, 128, 16).choice(
            "learning_rate",
            &[serde_json::json!(1e-2), serde_json::json!(1e-3)],
        )
    }

    /// A wider space for comparing searches: the same widths, the learning rate log-uniform
    /// between 1e-4 and 1e-2.
    pub fn wide() -> Self {
        SearchSpace::new()
            .int("units", 64, 128, 16)
            .float("learning_rate", 1e-4, 1e-2, true)
    }

    /// `walkthrough`, `wide`, or a TOML/JSON file.
    pub fn named_or_file(spec: &str) -> DataResult<Self> {
        match spec {
            "walkthrough" => Ok(SearchSpace::walkthrough()),
            "wide" => Ok(SearchSpace::wide()),
            path => SearchSpace::from_file(Path::new(path)),
        }
    }

    /// Checks the declarations (names unique, ranges sensible).
    pub fn validate(&self) -> Result<(), String> {
        if self.params.is_empty() {
            return Err("the search space has no parameters".into());
        }
        for (i, p) in self.params.iter().enumerate() {
            if self.params[..i].iter().any(|q| q.name() == p.name()) {
                return Err(format!("parameter {} is declared twice", p.name()));
            }
            p.check()
                .map_err(|e| format!("parameter {}: {e}", p.name()))?;
        }
        Ok(())
    }

    /// Draws one set of values.
    pub fn sample(&self, rng: &mut impl Rng) -> HyperParams {
        self.params
            .iter()
            .map(|p| (p.name().to_string(), p.sample(rng)))
            .collect()
    }

    /// Whether every parameter of the space has a value it can take in `values`.
    pub fn contains(&self, values: &HyperParams) -> bool {
        self.params
            .iter()
            .all(|p| values.get(p.name()).is_some_and(|v| p.contains(v)))
    }

    /// Reads a space from TOML (`[[param]]` tables) or JSON (`{"param": [...]}`), by extension.
    pub fn from_file(path: &Path) -> DataResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        let space: SearchSpace = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => serde_json::from_str(&text).map_err(|e| {
                DataError::malformed(path, e.line() as u64, e.column().to_string(), e.to_string())
            })?,
            _ => toml::from_str(&text).map_err(|e| {
                let (line, column) = e
                    .span()
                    .map(|s| {
                        let before = &text[..s.start.min(text.len())];
                        (
                            before.lines().count().max(1),
                            before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1,
                        )
                    })
                    .unwrap_or((0, 0));
                DataError::malformed(
                    path,
                    line as u64,
                    column.to_string(),
                    e.message().to_string(),
                )
            })?,
        };
        space
            .validate()
            .map_err(|message| DataError::invalid(path, message))?;
        Ok(space)
    }
}
