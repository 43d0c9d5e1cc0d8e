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
// # 1. Data preparation
//
// This notebook follows the first part of the Kaggle walkthrough on Fashion-MNIST: load the 60,000
// training images, look at them as a table, check for missing values and duplicates, see how the
// classes are balanced and what the pictures look like, and finally turn the pixels into what a
// neural network takes: numbers between 0 and 1, one-hot labels, and a held-out validation set.
//
// Fashion-MNIST is Zalando's drop-in replacement for the handwritten digits of MNIST: 70,000 gray
// 28x28 pictures of clothing in 10 classes, 60,000 for training and 10,000 for testing.

// %% [markdown]
// ## Setup
//
// The first cell makes the project's library available to the Rust kernel. The first time, this
// compiles the library and its dependencies (several minutes); later runs reuse the build and take
// seconds. Everything after it is short calls into the library: the code that does the work lives in
// `src/`, under the same names the text uses.

// %%
// :dep fashion-mnist = { path = ".." }
use fashion_mnist::data::eda;
use fashion_mnist::notebook::*;

let settings = settings();
println!("quick mode: {} (set FASHION_MNIST_QUICK=1 for a fast run on a subset)", settings.quick);

// %% [markdown]
// ## Loading the data
//
// The walkthrough reads Kaggle's CSV export. We read the original files published by Zalando (the
// same images; Kaggle's CSV lists them in another order), or a Kaggle CSV when that is what we are
// given. The loader looks in `$FASHION_MNIST_DATA`, then `data/fashion-mnist/`, then where Debian's
// `dataset-fashion-mnist` package puts the files, and checks the content against the published
// SHA-256 checksums, so we know we are looking at the real dataset.

// %%
let data = load_data().expect("Fashion-MNIST loads (see the README: Where the data comes from)");
source_table(&data)

// %% [markdown]
// ## The data as a table
//
// The walkthrough works on a pandas DataFrame with one row per image: the label, then the 784 pixel
// intensities (`pixel1` to `pixel784`, row by row, 0 = background, 255 = brightest). We build the same
// table with polars. Only the first and last columns are shown; the rest look alike.

// %%
let df: eda::DataFrame = eda::to_dataframe(&data.train).expect("DataFrame with the Kaggle columns");
println!("shape: {:?} (rows, columns)", df.shape());
head_table(&df, 5)

// %% [markdown]
// ## Missing values
//
// A missing pixel would break training, so the walkthrough counts empty cells per column. Image files
// cannot have holes, and the loader rejects a CSV with an empty field (naming its line and column), so
// we expect zero here.

// %%
missing_values_table(&df)

// %% [markdown]
// ## Duplicates
//
// The walkthrough found 43 duplicate rows in Kaggle's export and dropped them, keeping the first of
// each. A row counts as a duplicate when its label and all 784 pixels repeat an earlier row. On
// Zalando's original training files the count is 0; the check itself is tested with planted
// duplicates in the project's test suite.

// %%
let duplicates = eda::duplicate_count(&df).expect("duplicate check");
let df: eda::DataFrame = eda::drop_duplicates(&df).expect("drop duplicates");
println!("duplicate rows: {duplicates}; shape after dropping them: {:?}", df.shape());

// %% [markdown]
// ## Class balance
//
// A classifier trained on unbalanced classes learns to favour the frequent ones, and accuracy then
// hides how it does on the rare ones. Fashion-MNIST is balanced by design: 6,000 training images per
// class.

// %%
class_counts_chart(&df).expect("bar chart")

// %% [markdown]
// ## Where the pixels are
//
// The walkthrough plots a heatmap of the pixel data. Here every cell is the mean intensity of one
// pixel position over all training images: the objects are centred, the border is almost always
// background, and the bright vertical band shows the shape most classes share (tops, dresses, coats,
// trousers).

// %%
mean_image_heatmap(&data.train).expect("heatmap")

// %% [markdown]
// ## What the classes look like
//
// Three examples per class. Some classes are easy to tell apart (trousers, bags, sandals); shirts,
// T-shirts, pullovers and coats share a silhouette, and that is where the models will make most of
// their mistakes.

// %%
samples_by_class(&data.train, 3).expect("image grid")

// %% [markdown]
// ## Preparing the inputs
//
// Three steps, as in the walkthrough:
//
// 1. **Scale** the pixels from 0..255 to 0..1, so that the first layer's inputs are small and
//    similar in size, which keeps gradient descent stable.
// 2. **One-hot encode** the labels: class 3 becomes `[0,0,0,1,0,0,0,0,0,0]`, the form the softmax
//    output and the categorical cross-entropy loss compare against.
// 3. **Split** the training images 80/20 into a training part and a validation part, shuffled with a
//    fixed seed (42), so that every run sees the same split. The validation part is never trained on;
//    it tells us how well the model generalizes while we choose settings. The 10,000 test images are
//    kept apart until the very end (the walkthrough never used them).

// %%
let split = prepare_split(&data, 0.2, 42, settings.train_limit);
split_table(&split)

// %%
one_hot_table(&split.train.labels[..3])

// %% [markdown]
// The images now have the shapes the walkthrough's Keras model expects: `(N, 28, 28, 1)` — one
// channel, as they are gray — and the labels `(N, 10)`. The next notebook trains LeNet-5 on them.
