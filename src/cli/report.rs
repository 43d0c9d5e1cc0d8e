//! `report`: the whole study as an HTML report and results.json.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use fashion_mnist::ops::DeviceChoice;
use fashion_mnist::study::{self, StudyPaths, StudyPreset};

use super::common::{create_dir, DataSource, Fresh};
use super::progress::Bars;

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    source: DataSource,
    /// Small subsets and few epochs: minutes on a CPU, for trying the pipeline
    #[arg(long)]
    quick: bool,
    /// The full study plus VGG-16 at 64x64 and fine-tuned end to end (hours on a CPU); shares
    /// runs/report with the full study, so its finished stages are reused
    #[arg(long, conflicts_with = "quick")]
    extended: bool,
    /// Run directory: report.html, results.json, one folder per stage (default: runs/report, or runs/report-quick)
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value = "data/weights")]
    weights_dir: PathBuf,
    #[arg(long, default_value = "data/features")]
    cache: PathBuf,
    /// Python with pip (to fetch VGG-16's weights when missing)
    #[arg(long, default_value = "python3")]
    python: String,
    #[command(flatten)]
    fresh: Fresh,
    /// Run STAGE again, reusing the others (its old folder is moved aside, to STAGE.old); for a
    /// stage whose settings changed, e.g. a new default. Repeatable
    #[arg(long, value_name = "STAGE", conflicts_with = "fresh",
          value_parser = clap::builder::PossibleValuesParser::new(study::STAGES_WITH_FOLDERS.iter().copied()))]
    redo: Vec<String>,
}

pub fn run(args: ReportArgs, device: DeviceChoice) -> Result<()> {
    let preset = if args.quick {
        StudyPreset::quick()
    } else if args.extended {
        StudyPreset::extended()
    } else {
        StudyPreset::full()
    };
    let default_out = if args.quick {
        "runs/report-quick"
    } else {
        "runs/report"
    };
    let out = args.out.clone().unwrap_or_else(|| default_out.into());
    args.fresh.apply(&out)?;
    for stage in &args.redo {
        if let Some(old) = fashion_mnist::resume::set_aside(&out.join(stage))? {
            eprintln!("--redo {stage}: earlier results moved to {}", old.display());
        }
    }
    create_dir(&out)?;
    let loaded = args.source.load()?;
    let paths = StudyPaths {
        out: out.clone(),
        weights_dir: args.weights_dir.clone(),
        feature_cache: args.cache.clone(),
        python: args.python.clone(),
    };
    let mut progress = Bars::for_study(
        preset.stage_minutes_left(&out),
        preset.stages_partly_done(&out),
    );
    let results = study::run_study(&loaded, &preset, &paths, device, &mut progress)?;
    let html = study::render_html(&results, Some(&loaded))?;
    let report = out.join("report.html");
    fashion_mnist::fsutil::write_bytes_atomically(&report, html.as_bytes())?;
    println!("{}", study::comparison_table(&results));
    println!(
        "\nwrote {} and {} ({:.1} min this run)",
        report.display(),
        out.join("results.json").display(),
        results.wall_seconds / 60.0
    );
    Ok(())
}
