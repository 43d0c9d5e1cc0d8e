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
//     display_name: Rust
//     language: rust
//     name: rust
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
// self-contained page) and `results.json`. This notebook reads `results.json`; in quick mode without
// it, it runs the quick study itself.

// %% [markdown]
// ## Setup

// %%
// :dep fashion-mnist = { path = ".." }
use fashion_mnist::notebook::*;

let settings = settings();

// %%
let results = study_results().expect("the study's results (run `fashion-mnist report`)");
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
// RESULTS_SUMMARY
