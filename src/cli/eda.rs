//! `eda`: the walkthrough's exploratory checks.

use anyhow::Result;
use clap::Args;
use fashion_mnist::data::eda;

use super::common::DataSource;

#[derive(Args)]
pub struct EdaArgs {
    #[command(flatten)]
    source: DataSource,
    /// Rows of the head to show
    #[arg(long, default_value_t = 5)]
    rows: usize,
}

pub fn run(args: EdaArgs) -> Result<()> {
    let loaded = args.source.load()?;
    let df = eda::to_dataframe(&loaded.train)?;
    println!("shape: {:?}", df.shape());
    println!("{}", eda::head_preview(&df, args.rows)?);
    let (missing, total) = eda::missing_values(&df);
    println!("missing values: {total} in all");
    for (column, n) in missing.iter().take(20) {
        println!("  {column}: {n}");
    }
    let duplicates = eda::duplicate_count(&df)?;
    println!("duplicate rows: {duplicates}");
    if duplicates > 0 {
        let deduplicated = eda::drop_duplicates(&df)?;
        println!("after dropping duplicates: {:?}", deduplicated.shape());
    }
    println!("{}", eda::class_counts(&df)?);
    Ok(())
}
