//! `bench`: LeNet-5 epoch times, or (with --backbone) feature extraction and head epochs,
//! optionally beside the same workloads in Keras / PyTorch run by the Python scripts in
//! `scripts/` (their output is parsed, never passed through to our stdout).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use fashion_mnist::data::prepare::{self, Prepared};
use fashion_mnist::data::{self, FashionMnist};
use fashion_mnist::models::{
    DenseHead, HeadConfig, LeNet5, LeNet5Config, ModernCnn, ModernCnnConfig,
};
use fashion_mnist::ops::{DeviceChoice, ModelDevice};
use fashion_mnist::pipeline::modern_cnn::ModernCnnStage;
use fashion_mnist::training::{self, TrainConfig};
use fashion_mnist::transfer::{
    self, Architecture, FeatureSettings, FeatureStage, LoadedBackbone, Preprocessing,
};

use super::common::{parse_architecture, DataSource};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    source: DataSource,
    /// Training images per epoch (the walkthrough's 80% split: 48,000); with --backbone or
    /// --all also the number of cached vectors a head epoch trains on
    #[arg(long, default_value_t = 48_000)]
    pub images: usize,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Epochs to time (the first includes warm-up)
    #[arg(long, default_value_t = 2)]
    pub epochs: usize,
    /// The from-scratch model whose training epochs are timed (modern-cnn: with its augmentation
    /// and schedule; its own batch is 64, pass --batch-size 64)
    #[arg(long, value_enum, default_value = "lenet5", conflicts_with_all = ["backbone", "all"])]
    model: ScratchModel,
    /// Python with TensorFlow: also time the walkthrough's Keras code on the same machine
    #[arg(long, value_name = "PYTHON")]
    pub keras: Option<PathBuf>,
    /// Python with PyTorch: also time the same LeNet-5 in PyTorch eager mode on the same device
    /// (scripts/torch_lenet5_bench.py)
    #[arg(long, value_name = "PYTHON")]
    torch: Option<PathBuf>,
    /// Time transfer learning instead: frozen-backbone feature extraction and (VGG-16) head
    /// epochs on cached features
    #[arg(long, value_name = "vgg16|resnet50")]
    backbone: Option<String>,
    /// Images to extract features from (with --backbone or --all): training images, then test
    /// images (70,000 in all)
    #[arg(long, default_value_t = 2000)]
    pub extract_images: usize,
    /// Every workload in one run (LeNet-5 epochs, VGG-16 and ResNet-50 extraction, VGG-16 head
    /// epochs), with ratios to Keras (--keras) and GFLOP/s, written as a markdown table
    #[arg(long, conflicts_with_all = ["backbone", "torch"])]
    all: bool,
    /// With --all: where the table goes
    #[arg(long, value_name = "FILE", default_value = "benchmarks/cpu.md")]
    write: PathBuf,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum ScratchModel {
    Lenet5,
    ModernCnn,
}

/// One measured row: who, what, value.
pub struct Row {
    pub system: String,
    pub what: String,
    pub value: f64,
}

pub fn run(args: BenchArgs, device: DeviceChoice) -> Result<()> {
    if args.model == ScratchModel::ModernCnn && (args.keras.is_some() || args.torch.is_some()) {
        bail!("--keras and --torch time LeNet-5 only: there is no peer script for the modern CNN");
    }
    if let Some(backbone) = &args.backbone {
        return run_transfer_bench(&args, parse_architecture(backbone)?, device);
    }
    let loaded = args.source.load()?;
    if args.all {
        return super::bench_all::run_all(&args, &loaded, device, &args.write);
    }
    if loaded.train.len() < args.images {
        bail!(
            "--images {} is more than the {} training images",
            args.images,
            loaded.train.len()
        );
    }
    let rows = lenet5_epochs(&args, &loaded, device)?;
    let rows = rows.into_iter().chain(peer_rows(&args, &loaded, device)?);
    println!(
        "{:<48} {:>6} {:>8} {:>6} {:>10} {:>10}",
        "system", "epoch", "images", "batch", "seconds", "images/s"
    );
    for row in rows {
        println!(
            "{:<48} {:>6} {:>8} {:>6} {:>10.2} {:>10.0}",
            row.system,
            row.what,
            args.images,
            args.batch_size,
            row.value,
            args.images as f64 / row.value
        );
    }
    Ok(())
}

/// Our LeNet-5 (or, with `--model modern-cnn`, modern CNN) epochs on the walkthrough's
/// training split (the first `--images` of it).
pub(super) fn lenet5_epochs(
    args: &BenchArgs,
    loaded: &FashionMnist,
    device: DeviceChoice,
) -> Result<Vec<Row>> {
    let all = Prepared::from_dataset(&loaded.train);
    let split = prepare::train_validation_split(&all.labels, 0.2, 42, false);
    let indices: Vec<usize> = split
        .train
        .iter()
        .chain(&split.validation)
        .copied()
        .take(args.images)
        .collect();
    let train = all.subset(&indices);
    let modern = args.model == ScratchModel::ModernCnn;
    let config = if modern {
        TrainConfig {
            batch_size: args.batch_size,
            early_stopping: None,
            ..ModernCnnStage::recommended(args.epochs, 42).train
        }
    } else {
        TrainConfig {
            epochs: args.epochs,
            batch_size: args.batch_size,
            ..TrainConfig::default()
        }
    };
    let (history, described) = fashion_mnist::on_device!(device, d => {
        eprintln!(
            "timing {} epoch(s) of {} images, batch {}, on {}",
            args.epochs,
            train.len(),
            args.batch_size,
            d.describe()
        );
        let history = if modern {
            let mut model = ModernCnn::new(d, ModernCnnConfig::default(), 42);
            training::fit(&mut model, &train, None, &config, &mut training::Silent)?
        } else {
            let mut model = LeNet5::new(d, LeNet5Config::default(), 42);
            training::fit(&mut model, &train, None, &config, &mut training::Silent)?
        };
        (history, d.describe())
    })?;
    let name = if modern { " modern CNN" } else { "" };
    let system = format!("fashion-mnist{name} (dfdx, {described})");
    Ok(history
        .epochs
        .iter()
        .map(|r| Row {
            system: system.clone(),
            what: r.epoch.to_string(),
            value: r.seconds,
        })
        .collect())
}

/// The Keras and PyTorch LeNet-5 epochs, when asked for.
pub(super) fn peer_rows(
    args: &BenchArgs,
    loaded: &FashionMnist,
    device: DeviceChoice,
) -> Result<Vec<Row>> {
    let data_dir = loaded
        .located
        .train
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut rows = Vec::new();
    if let Some(python) = &args.keras {
        let label = "Keras / TensorFlow (walkthrough code)";
        rows.extend(peer_epochs(
            python,
            "keras_lenet5_bench.py",
            label,
            &data_dir,
            args,
            &[],
        )?);
    }
    if let Some(python) = &args.torch {
        let torch_device = device.name();
        let label = format!("PyTorch eager ({torch_device})");
        let extra = ["--device", torch_device];
        rows.extend(peer_epochs(
            python,
            "torch_lenet5_bench.py",
            &label,
            &data_dir,
            args,
            &extra,
        )?);
    }
    Ok(rows)
}

/// `scripts/NAME` of the checkout in the working directory, else of the one this binary was
/// built from (a binary copied to another machine runs from that machine's checkout).
fn bench_script(name: &str) -> PathBuf {
    let here = Path::new("scripts").join(name);
    if here.is_file() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs `python script args`, returning its stdout (its stderr on failure, in the error).
fn run_script(python: &Path, script: &Path, args: &[String]) -> Result<String> {
    let output = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed:\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `scripts/SCRIPT` with `python` on the same images and settings; collects its
/// `epoch_seconds EPOCH SECONDS` lines.
fn peer_epochs(
    python: &Path,
    script: &str,
    label: &str,
    data_dir: &Path,
    args: &BenchArgs,
    extra: &[&str],
) -> Result<Vec<Row>> {
    let script = bench_script(script);
    eprintln!("timing {label}: {} {}", python.display(), script.display());
    let mut script_args = vec![
        "--data".to_string(),
        data_dir.display().to_string(),
        "--images".into(),
        args.images.to_string(),
        "--batch-size".into(),
        args.batch_size.to_string(),
        "--epochs".into(),
        args.epochs.to_string(),
    ];
    script_args.extend(extra.iter().map(|s| s.to_string()));
    let stdout = run_script(python, &script, &script_args)?;
    let mut rows = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("epoch_seconds ") {
            let mut parts = rest.split_whitespace();
            if let (Some(e), Some(s)) = (parts.next(), parts.next()) {
                rows.push(Row {
                    system: label.to_string(),
                    what: e.to_string(),
                    value: s.parse()?,
                });
            }
        }
    }
    Ok(rows)
}

/// `bench --backbone`: extraction images/s and head seconds per epoch, ours and (with --keras)
/// Keras', in one table.
fn run_transfer_bench(
    args: &BenchArgs,
    architecture: Architecture,
    device: DeviceChoice,
) -> Result<()> {
    let loaded = args.source.load()?;
    // Training images, then test images (all 70,000 when asked for that many).
    let mut pool = loaded.train.images.clone();
    if let Some(test) = &loaded.test {
        pool.extend_from_slice(&test.images);
    }
    let n = args.extract_images.min(pool.len() / data::IMAGE_PIXELS);
    pool.truncate(n * data::IMAGE_PIXELS);
    let mut rows = vec![extraction_row(&pool, n, architecture, device)?];
    if architecture == Architecture::Vgg16 && args.epochs > 0 {
        rows.extend(head_rows(args, device, &rows[0].system)?);
    }
    if let Some(python) = &args.keras {
        rows.extend(keras_transfer_rows(python, args, architecture, n)?);
    }
    println!("{:<48} {:<52} {:>12}", "system", "measurement", "value");
    for row in &rows {
        let unit = if row.what.contains("extraction") {
            "images/s"
        } else {
            "s"
        };
        println!(
            "{:<48} {:<52} {:>9.1} {unit}",
            row.system, row.what, row.value
        );
    }
    Ok(())
}

/// Our extraction rate over the `n` images of `pool` (random weights: the speed does not
/// depend on their values), after one untimed batch.
pub(super) fn extraction_row(
    pool: &[u8],
    n: usize,
    architecture: Architecture,
    device: DeviceChoice,
) -> Result<Row> {
    let backbone = LoadedBackbone::random(architecture, 0);
    let settings = FeatureSettings {
        backbone: architecture,
        weights_id: "bench".into(),
        preprocessing: Preprocessing::Caffe,
        side: 32,
        stage: FeatureStage::Output,
        mirrored: false,
    };
    let (record, described, batch) = fashion_mnist::on_device!(device, d => {
        eprintln!("extracting {n} images with {} on {}", architecture.name(), d.describe());
        // Loading kernels and libraries is not extraction speed.
        let warm_up = &pool[..pool.len().min(d.extraction_batch() * data::IMAGE_PIXELS)];
        let extractor = transfer::Extractor::new(&backbone, d);
        transfer::cached_features(&extractor, warm_up, &settings, None, &mut |_| {})?;
        let (_, record) =
            transfer::cached_features(&extractor, pool, &settings, None, &mut |_| {})?;
        (record, d.describe(), d.extraction_batch())
    })?;
    Ok(Row {
        system: format!("fashion-mnist (dfdx, {described})"),
        what: format!(
            "{} extraction, {n} images, batch {batch}",
            architecture.name()
        ),
        value: record.images as f64 / record.seconds,
    })
}

/// VGG-16 head epochs on `--images` synthetic 512-value feature vectors.
pub(super) fn head_rows(args: &BenchArgs, device: DeviceChoice, system: &str) -> Result<Vec<Row>> {
    let vectors = args.images;
    let features = Prepared {
        pixels: (0..vectors * 512)
            .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0)
            .collect(),
        labels: (0..vectors).map(|i| (i % 10) as u8).collect(),
    };
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        ..TrainConfig::default()
    };
    eprintln!(
        "timing {} head epoch(s) on {vectors} feature vectors",
        args.epochs
    );
    let history = fashion_mnist::on_device!(device, d => {
        let mut head = DenseHead::new(d, HeadConfig::walkthrough_vgg16(512), 0);
        training::fit_head(&mut head, &features, None, &config, &mut training::Silent)?
    })?;
    Ok(history
        .epochs
        .iter()
        .map(|r| Row {
            system: system.to_string(),
            what: format!(
                "VGG-16 head epoch {}, {vectors} vectors, batch {}",
                r.epoch, args.batch_size
            ),
            value: r.seconds,
        })
        .collect())
}

/// The same extraction and head epochs in Keras (scripts/keras_transfer_bench.py).
pub(super) fn keras_transfer_rows(
    python: &Path,
    args: &BenchArgs,
    architecture: Architecture,
    n: usize,
) -> Result<Vec<Row>> {
    let script = bench_script("keras_transfer_bench.py");
    eprintln!("timing Keras: {} {}", python.display(), script.display());
    let script_args: Vec<String> = [
        "--backbone",
        architecture.name(),
        "--images",
        &n.to_string(),
        "--head-vectors",
        &args.images.to_string(),
        "--head-epochs",
        &args.epochs.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stdout = run_script(python, &script, &script_args)?;
    let mut rows = Vec::new();
    for line in stdout.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        match parts[..] {
            ["extract_images_per_second", rate] => rows.push(Row {
                system: "Keras / TensorFlow".into(),
                what: format!("{} extraction, {n} images, batch 64", architecture.name()),
                value: rate.parse()?,
            }),
            ["head_epoch_seconds", epoch, seconds] => rows.push(Row {
                system: "Keras / TensorFlow".into(),
                what: format!(
                    "VGG-16 head epoch {epoch}, {} vectors, batch 32",
                    args.images
                ),
                value: seconds.parse()?,
            }),
            _ => {}
        }
    }
    Ok(rows)
}
