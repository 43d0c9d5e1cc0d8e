//! `bench --all`: every workload of the study in one run (LeNet-5 epochs, VGG-16 and ResNet-50
//! extraction, VGG-16 head epochs), ours beside Keras (with `--keras`), each with its ratio,
//! achieved GFLOP/s and share of the machine's nominal peak; written as a markdown table with
//! the CPU model and its vector extensions.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use fashion_mnist::data::FashionMnist;
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::transfer::Architecture;

use super::bench::{
    extraction_row, head_rows, keras_transfer_rows, lenet5_epochs, peer_rows, BenchArgs, Row,
};

/// This machine in words, with its vector extensions, and its nominal f32 peak in GFLOP/s
/// (cores x clock x FLOP per cycle: 32 with AVX2 + FMA, 64 with AVX-512).
pub fn machine() -> (String, f64) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let flags: Vec<&str> = flags.split_whitespace().collect();
    let vector: Vec<&str> = ["avx2", "fma", "avx512f", "avx512bw", "avx512vl"]
        .into_iter()
        .filter(|f| flags.contains(f))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ghz = field("cpu MHz").parse::<f64>().unwrap_or(0.0) / 1000.0;
    let per_cycle = if vector.contains(&"avx512f") {
        64.0
    } else if vector.contains(&"fma") {
        32.0
    } else {
        16.0
    };
    let peak = cores as f64 * ghz * per_cycle;
    let text = format!(
        "{}, {cores} cores at {ghz:.2} GHz, vector extensions: {} (nominal peak {peak:.0} GFLOP/s f32 = {cores} x {ghz:.2} GHz x {per_cycle:.0} FLOP/cycle)",
        field("model name"),
        if vector.is_empty() { "none of AVX2/FMA/AVX-512".to_string() } else { vector.join(" ") },
    );
    (text, peak)
}

/// Multiply-adds of a 3x3 (or `k`x`k`) convolution layer.
fn conv_macs(cin: usize, cout: usize, k: usize, out_side: usize) -> f64 {
    (cin * cout * k * k * out_side * out_side) as f64
}

/// FLOP of one forward pass of VGG-16's convolutions at 32x32x3.
pub fn vgg16_forward_flop() -> f64 {
    let layers = [
        (3, 64, 32),
        (64, 64, 32),
        (64, 128, 16),
        (128, 128, 16),
        (128, 256, 8),
        (256, 256, 8),
        (256, 256, 8),
        (256, 512, 4),
        (512, 512, 4),
        (512, 512, 4),
        (512, 512, 2),
        (512, 512, 2),
        (512, 512, 2),
    ];
    2.0 * layers
        .iter()
        .map(|&(cin, cout, side)| conv_macs(cin, cout, 3, side))
        .sum::<f64>()
}

/// FLOP of one forward pass of ResNet-50 (Keras layout: stride on each stage's first 1x1) at
/// 32x32x3, up to `conv5_block3_out`.
pub fn resnet50_forward_flop() -> f64 {
    // Stem: 7x7/2 conv to 16x16, 3x3/2 max-pool to 8x8.
    let mut macs = conv_macs(3, 64, 7, 16);
    let (mut channels, mut side) = (64, 8);
    for (stage, (blocks, mid)) in [(3, 64), (4, 128), (6, 256), (3, 512)]
        .into_iter()
        .enumerate()
    {
        let out = mid * 4;
        for block in 0..blocks {
            if block == 0 && stage > 0 {
                side /= 2;
            }
            macs += conv_macs(channels, mid, 1, side) + conv_macs(mid, mid, 3, side);
            macs += conv_macs(mid, out, 1, side);
            if block == 0 {
                macs += conv_macs(channels, out, 1, side);
            }
            channels = out;
        }
    }
    2.0 * macs
}

/// FLOP of one training step per image of LeNet-5 (forward, weight gradients, and input
/// gradients of every layer but the first).
pub fn lenet5_training_flop() -> f64 {
    let conv1 = conv_macs(1, 6, 5, 28);
    let rest = conv_macs(6, 16, 5, 10) + (400 * 120 + 120 * 84 + 84 * 10) as f64;
    2.0 * (2.0 * (conv1 + rest) + rest)
}

/// FLOP of one training step per feature vector of the walkthrough's VGG-16 head (3x forward).
pub fn vgg16_head_training_flop() -> f64 {
    let widths = [512, 1024, 1024, 1024, 512, 512, 256, 64, 64, 10];
    let macs: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
    6.0 * macs as f64
}

/// One workload: what it is, our value and Keras', in `unit`, and its FLOP per unit of work.
struct Workload {
    name: String,
    unit: &'static str,
    ours: Vec<f64>,
    keras: Vec<f64>,
    /// FLOP per image (rates) or per epoch (seconds).
    flop: f64,
    higher_is_better: bool,
}

fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

fn values(rows: &[Row], system_starts: &str, what_contains: &str) -> Vec<f64> {
    rows.iter()
        .filter(|r| r.system.starts_with(system_starts) && r.what.contains(what_contains))
        .map(|r| r.value)
        .collect()
}

/// Runs every workload; prints and writes the table to `write`.
pub fn run_all(
    args: &BenchArgs,
    loaded: &FashionMnist,
    device: DeviceChoice,
    write: &Path,
) -> Result<()> {
    let mut rows = lenet5_epochs(args, loaded, device)?;
    rows.extend(peer_rows(args, loaded, device)?);
    let mut pool = loaded.train.images.clone();
    if let Some(test) = &loaded.test {
        pool.extend_from_slice(&test.images);
    }
    let n = args
        .extract_images
        .min(pool.len() / fashion_mnist::data::IMAGE_PIXELS);
    pool.truncate(n * fashion_mnist::data::IMAGE_PIXELS);
    for architecture in [Architecture::Vgg16, Architecture::Resnet50] {
        let extraction = extraction_row(&pool, n, architecture, device)?;
        if architecture == Architecture::Vgg16 {
            rows.extend(head_rows(args, device, &extraction.system)?);
        }
        rows.push(extraction);
        if let Some(python) = &args.keras {
            rows.extend(keras_transfer_rows(python, args, architecture, n)?);
        }
    }
    // Our LeNet-5 rows carry only the epoch number; the other rows name their workload.
    let lenet5_ours: Vec<f64> = rows
        .iter()
        .filter(|r| r.system.starts_with("fashion-mnist") && r.what.parse::<usize>().is_ok())
        .map(|r| r.value)
        .collect();
    let workloads = [
        Workload {
            name: format!(
                "LeNet-5 epoch, {} images, batch {}",
                args.images, args.batch_size
            ),
            unit: "s",
            ours: lenet5_ours,
            keras: values(&rows, "Keras / TensorFlow (walkthrough", ""),
            flop: lenet5_training_flop() * args.images as f64,
            higher_is_better: false,
        },
        Workload {
            name: format!("VGG-16 extraction 32x32, {n} images"),
            unit: "images/s",
            ours: values(&rows, "fashion-mnist", "vgg16 extraction"),
            keras: values(&rows, "Keras / TensorFlow", "vgg16 extraction"),
            flop: vgg16_forward_flop(),
            higher_is_better: true,
        },
        Workload {
            name: format!("ResNet-50 extraction 32x32, {n} images"),
            unit: "images/s",
            ours: values(&rows, "fashion-mnist", "resnet50 extraction"),
            keras: values(&rows, "Keras / TensorFlow", "resnet50 extraction"),
            flop: resnet50_forward_flop(),
            higher_is_better: true,
        },
        Workload {
            name: format!(
                "VGG-16 head epoch, {} cached vectors, batch {}",
                args.images, args.batch_size
            ),
            unit: "s",
            ours: values(&rows, "fashion-mnist", "head epoch"),
            keras: values(&rows, "Keras / TensorFlow", "head epoch"),
            flop: vgg16_head_training_flop() * args.images as f64,
            higher_is_better: false,
        },
    ];
    let table = markdown(&workloads, &rows);
    print!("{table}");
    if let Some(dir) = write.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    fashion_mnist::fsutil::write_bytes_atomically(write, table.as_bytes())?;
    eprintln!("wrote {}", write.display());
    Ok(())
}

fn show(values: &[f64]) -> String {
    match values {
        [] => "-".into(),
        [one] => format!("{one:.1}"),
        many => {
            let (lo, hi) = many
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                    (a.min(v), b.max(v))
                });
            format!("{lo:.1}-{hi:.1}")
        }
    }
}

fn markdown(workloads: &[Workload], rows: &[Row]) -> String {
    let (machine, peak) = machine();
    let mut text = String::new();
    let _ = writeln!(text, "# CPU benchmarks (`fashion-mnist bench --all`)\n");
    let _ = writeln!(text, "Machine: {machine}.\n");
    let _ = writeln!(
        text,
        "Every row from one run, ours beside Keras on the same machine. Epoch rows: the first epoch includes warm-up; the ratio uses medians (Keras time / ours for seconds, ours / Keras for rates: above 1 means we are faster). GFLOP/s from the layer shapes (see src/cli/bench_all.rs).\n"
    );
    let _ = writeln!(
        text,
        "| workload | ours | Keras | ratio (x faster) | our GFLOP/s | share of peak |"
    );
    let _ = writeln!(text, "| --- | --- | --- | --- | --- | --- |");
    for w in workloads {
        let (ours, keras) = (median(&w.ours), median(&w.keras));
        let ratio = match (ours, keras) {
            (Some(o), Some(k)) if w.higher_is_better => format!("{:.2}", o / k),
            (Some(o), Some(k)) => format!("{:.2}", k / o),
            _ => "-".into(),
        };
        let gflops = ours.map(|o| {
            if w.higher_is_better {
                o * w.flop / 1e9
            } else {
                w.flop / o / 1e9
            }
        });
        let _ = writeln!(
            text,
            "| {} | {} {} | {} {} | {ratio} | {} | {} |",
            w.name,
            show(&w.ours),
            w.unit,
            show(&w.keras),
            w.unit,
            gflops.map_or("-".into(), |g| format!("{g:.1}")),
            gflops.map_or("-".into(), |g| format!(
                "{:.0}%",
                100.0 * g / peak.max(1e-9)
            )),
        );
    }
    let _ = writeln!(text, "\nAll measurements:\n");
    let _ = writeln!(text, "| system | measurement | value |");
    let _ = writeln!(text, "| --- | --- | --- |");
    for r in rows {
        let unit = if r.what.contains("extraction") {
            "images/s"
        } else {
            "s"
        };
        let what = if r.what.parse::<usize>().is_ok() {
            format!("LeNet-5 epoch {}", r.what)
        } else {
            r.what.clone()
        };
        let _ = writeln!(text, "| {} | {what} | {:.2} {unit} |", r.system, r.value);
    }
    text
}
