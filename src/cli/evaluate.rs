//! `evaluate` (a checkpoint on the test set) and `predict` (pictures).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use dfdx::prelude::Cpu;
use fashion_mnist::data::prepare::{self, Prepared};
use fashion_mnist::data::{source, CLASS_NAMES};
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::training::{self, checkpoint};

use super::common::DataSource;

#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    source: DataSource,
    #[arg(long)]
    checkpoint: PathBuf,
}

#[derive(Args)]
pub struct PredictArgs {
    #[arg(long)]
    checkpoint: PathBuf,
    /// Pictures to classify (PNG or JPEG)
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn run_evaluate(args: EvaluateArgs, device: DeviceChoice) -> Result<()> {
    let loaded = args.source.load()?;
    let Some(test) = &loaded.test else {
        bail!(
            "no test set next to {} (the IDX t10k files or {})",
            loaded.located.train.display(),
            source::KAGGLE_TEST_CSV
        );
    };
    let test = Prepared::from_dataset(test);
    let architecture = checkpoint::read_metadata(&args.checkpoint)?.0;
    let evaluation = fashion_mnist::on_device!(device, d => {
        if architecture == "modern_cnn" {
            let model = checkpoint::load_modern_cnn(d, &args.checkpoint)?;
            training::evaluate(&model, &test, 1000)?
        } else {
            let model = checkpoint::load_lenet5(d, &args.checkpoint)?;
            training::evaluate(&model, &test, 1000)?
        }
    })?;
    let confusion = evaluation.confusion_matrix(&test.labels);
    println!(
        "test accuracy {:.4}, loss {:.4} ({} images)\n",
        evaluation.accuracy,
        evaluation.loss,
        test.len()
    );
    println!("{confusion}");
    println!("{}", confusion.report());
    Ok(())
}

/// Class probabilities of one picture's pixels.
type Classify = dyn Fn(&[f32]) -> Vec<f32>;

pub fn run_predict(args: PredictArgs) -> Result<()> {
    let cpu = Cpu::default();
    let probabilities_of: Box<Classify> =
        if checkpoint::read_metadata(&args.checkpoint)?.0 == "modern_cnn" {
            let model = checkpoint::load_modern_cnn(&cpu, &args.checkpoint)?;
            Box::new(move |pixels| training::predict_proba(&model, pixels, 1))
        } else {
            let model = checkpoint::load_lenet5(&cpu, &args.checkpoint)?;
            Box::new(move |pixels| training::predict_proba(&model, pixels, 1))
        };
    for path in &args.images {
        let picture =
            image::open(path).with_context(|| format!("reading picture {}", path.display()))?;
        let pixels = prepare::picture_to_pixels(&picture);
        let probabilities = probabilities_of(&pixels);
        let mut ranked: Vec<(usize, f32)> = probabilities.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let top: Vec<String> = ranked
            .iter()
            .take(3)
            .map(|(c, p)| format!("{} {:.1}%", CLASS_NAMES[*c], p * 100.0))
            .collect();
        println!("{}: {}", path.display(), top.join(", "));
    }
    Ok(())
}
