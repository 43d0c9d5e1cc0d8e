//! `data`: where the data was found, counts per split and class, whether it verified; and
//! `data export-csv`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use fashion_mnist::data::{self, source, Dataset, FashionMnist, Verification, CLASS_NAMES};

use super::common::DataSource;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DataArgs {
    #[command(flatten)]
    source: DataSource,
    #[command(subcommand)]
    action: Option<DataAction>,
}

#[derive(Subcommand)]
enum DataAction {
    /// Write the data as Kaggle-format CSV (fashion-mnist_train.csv, fashion-mnist_test.csv)
    ExportCsv {
        #[command(flatten)]
        source: DataSource,
        /// Output directory
        #[arg(long, default_value = "data/csv")]
        out: PathBuf,
    },
}

pub fn run(args: DataArgs) -> Result<()> {
    if let Some(DataAction::ExportCsv { source, out }) = args.action {
        return export_csv(&source.load()?, &out);
    }
    let loaded = args.source.load()?;
    print_source(&loaded);
    print_counts(&loaded);
    Ok(())
}

fn export_csv(loaded: &FashionMnist, out: &std::path::Path) -> Result<()> {
    let train_path = out.join(source::KAGGLE_TRAIN_CSV);
    data::csv::write_kaggle_csv(&loaded.train, &train_path)?;
    println!(
        "wrote {} ({} rows)",
        train_path.display(),
        loaded.train.len()
    );
    if let Some(test) = &loaded.test {
        let test_path = out.join(source::KAGGLE_TEST_CSV);
        data::csv::write_kaggle_csv(test, &test_path)?;
        println!("wrote {} ({} rows)", test_path.display(), test.len());
    }
    Ok(())
}

fn print_source(loaded: &FashionMnist) {
    let located = &loaded.located;
    println!("source:   {} ({:?})", located.origin, located.format);
    println!("train:    {}", located.train.display());
    if let Some(p) = &located.train_labels {
        println!("          {}", p.display());
    }
    for p in [&located.test, &located.test_labels].into_iter().flatten() {
        println!("test:     {}", p.display());
    }
    println!(
        "verified: {}",
        match &loaded.verification {
            Verification::Verified => "yes (SHA-256 of the decompressed files matches)".to_string(),
            Verification::Mismatch(files) => format!("NO, differs: {}", files.join(", ")),
            Verification::NotApplicable => "n/a (CSV input has no published checksum)".to_string(),
            Verification::Sample => "yes, as the committed sample (the first 2,000 training and 1,000 test images of the published files)".to_string(),
        }
    );
    println!();
}

fn print_counts(loaded: &FashionMnist) {
    let splits: Vec<(&str, &Dataset)> = std::iter::once(("train", &loaded.train))
        .chain(loaded.test.iter().map(|t| ("test", t)))
        .collect();
    print!("{:<14}", "class");
    for (name, _) in &splits {
        print!("{name:>8}");
    }
    println!();
    let counts: Vec<_> = splits.iter().map(|(_, d)| d.class_counts()).collect();
    for (c, class) in CLASS_NAMES.iter().enumerate() {
        print!("{c} {class:<12}");
        for count in &counts {
            print!("{:>8}", count[c]);
        }
        println!();
    }
    print!("{:<14}", "total");
    for (_, d) in &splits {
        print!("{:>8}", d.len());
    }
    println!();
}
