// -*- coding: utf-8 -*-
// ---
// jupyter:
//   jupytext:
//     formats: ipynb,rs:percent
//     text_representation:
//       extension: .rs
//       format_name: percent
//       format_version: '1.3'
//       jupytext_version: 1.17.3
//   kernelspec:
//     display_name: Rust (fashion-mnist)
//     language: rust
//     name: fashion-mnist
// ---

// %% [markdown]
// # 6. Comparison
//
// The walkthrough ends with one table: validation accuracy and loss of LeNet-5, VGG-16 and ResNet-50.
// This notebook shows the same table from our own complete run of the study, extended with the test
// accuracy, the number of trainable parameters, the time each model took and its training speed, and
// with the walkthrough's numbers beside ours.
//
// The numbers come from `fashion-mnist report` (the README's main command), which runs every stage of
// the study — data checks, LeNet-5, the random search, 5-fold cross-validation, VGG-16 and ResNet-50
// transfer — and saves everything in `runs/report/`: `report.html` (the same tables and charts, one
// self-contained page) and `results.json`. This notebook reads `results.json` when it is there;
// without it, the next cell runs the study itself (in quick mode on small subsets in a few minutes;
// otherwise the full study, about an hour on 2 cores, into `runs/report/`, where `fashion-mnist
// report` will find and reuse it).

// %% [markdown]
// ## Setup

// %%
// :dep fashion-mnist = { path = ".." }
use fashion_mnist::notebook::*;

let settings = settings();

// %%
let results = study_results().expect("the study's results");
println!("preset {}: {} training images per stage", results.preset.name, results.preset.train_limit.map_or("all 60000".into(), |n| n.to_string()));

// %% [markdown]
// ## The table

// %%
comparison_table(&results)

// %% [markdown]
// The same validation accuracies as bars, with the walkthrough's three numbers at the right.

// %%
comparison_chart(&results).expect("chart")

// %% [markdown]
// ## Learning curves side by side
//
// Validation accuracy per epoch of LeNet-5 and of every transfer model (for the fine-tuned VGG-16,
// the fine-tuning epochs).

// %%
study_curves(&results).expect("chart")

// %% [markdown]
// ## Where the time went
//
// Each stage records the device, the library version, the seed and its wall time (a stage reused from
// an earlier run keeps its original time).

// %%
stages_table(&results)

// %% [markdown]
// ## Summary
//
// From our full run of `fashion-mnist report` (all data, the walkthrough's settings, one 2-core CPU,
// 56 minutes with the VGG-16 features already cached from an earlier run):
//
// - **LeNet-5 wins the walkthrough's comparison**, as it did there: validation accuracy 0.8992 (the
//   walkthrough: 0.8947) and test accuracy 0.8909, with 44,426 parameters and 48 seconds of training.
// - **Tuning and cross-validation** confirm it rather than improve it: the random search's best model
//   (128 units, learning rate 0.001) scored 0.8958 after 10 epochs, and 5-fold cross-validation of it
//   gives 0.8977 +/- 0.0039 — within the folds' spread of LeNet-5's own result.
// - **VGG-16 transfer** lands close to the walkthrough's 0.8768 with its head on frozen features:
//   0.8686 with the walkthrough's 0..1 pixels, 0.8630 with the scaling the weights expect. Fine-tuning
//   the last block for 3 epochs (mirrored images, learning rate 1e-5) raises it to 0.8818 validation and
//   0.8815 test, still below LeNet-5 and at 240 times its parameter count.
// - **ResNet-50**: no ImageNet weights are available on these machines, so our row is a randomly
//   initialized, frozen ResNet-50 and is not transfer learning. It still scores 0.8159, above the
//   walkthrough's ImageNet ResNet-50 (0.7875).
//
// For 28x28 gray thumbnails a small network trained from scratch is the better tool: faster by two
// orders of magnitude and more accurate than frozen ImageNet features. Transfer learning needs
// fine-tuning (and likely larger inputs) to pay off, which on a CPU is expensive.
