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
// # 7. Beyond the walkthrough: how far does a CNN from scratch go, and when does transfer win?
//
// The walkthrough ends with LeNet-5 (validation accuracy 0.8947) ahead of frozen VGG-16 (0.8768) and
// ResNet-50 (0.7875), and guesses why: ImageNet features computed on 32x32 upscaled gray images are not
// a good fit for small clothing pictures. Notebook 06 measured the same order. This notebook asks the
// next question a teacher of "CNN versus transfer learning" needs answered with numbers: what does a
// *modern* small CNN, trained from scratch with today's standard tricks, reach on the same images?
//
// The three tricks, each shown below before it is used:
//
// 1. **Data augmentation**: every epoch, each training image is shifted by up to 1 pixel and mirrored
//    at random, so the network never sees exactly the same picture twice.
// 2. **Batch normalization**: after each convolution, every channel is normalized by the batch's own
//    mean and standard deviation, which keeps the signal in a range where learning is fast.
// 3. **A learning-rate schedule**: a short warm-up, then a cosine decay to zero.
//
// Model selection uses the validation images only (the epoch with the best validation accuracy is
// kept); the 10,000 test images are scored once, at the end.
//
// Then the other side of the question: transfer learning done the way a practitioner would
// (VGG-16 at a larger input, and fine-tuned end to end), and every model of the study by accuracy,
// size and time.

// %% [markdown]
// ## Setup

// %%
// :dep fashion-mnist = { path = ".." }
use fashion_mnist::models::ImageClassifier;
use fashion_mnist::notebook::*;

let stage = modern_cnn_stage();

// %%
let data = load_data().expect("Fashion-MNIST loads (see the README)");
source_table(&data)

// %% [markdown]
// ## 1. Augmentation: shifts and flips
//
// The top row shows the first training images; each row below is one random draw (an example) of
// the transformation the training loop applies (`dx`/`dy`: pixels moved right/down,
// the uncovered border filled with the black background; `flip`: mirrored left-right). Clothes stay
// clothes when mirrored or moved a little, so the label stays right while the pixels change. Training
// draws its own from its seed, so a run is reproducible.

// %%
augmentation_grid(&data, Augmentation::shifts_and_flips(), 8, 3, 42).expect("chart")

// %% [markdown]
// ## 2. Batch normalization, measured
//
// A freshly initialized 3x3 convolution with 8 filters, applied to 64 training images: each output
// channel has its own mean and spread (left columns). Batch normalization subtracts each channel's
// batch mean and divides by its batch standard deviation (right columns: mean 0, standard deviation
// about 1; a little under 1 in channels with a small spread, because a constant 0.001 is added to
// the variance to keep the division safe), then multiplies by a learned `gamma` and adds a learned `beta`. While training, the batch's
// statistics are used and running averages of them are kept; when evaluating, the running averages
// are used instead, so a prediction does not depend on which other images share its batch. The
// library's implementation is checked against a naive reference (values and gradients) and against
// Keras' `BatchNormalization` (`tests/ops.rs`).

// %%
batch_norm_table(&data, 64)

// %% [markdown]
// ## 3. The network
//
// Two blocks, each: 3x3 convolution → batch normalization → ReLU, twice, then 2x2 max-pooling and
// dropout 0.1. Then a dense layer of 128 units with ReLU and dropout 0.3, and the 10-way output.
// The "non-trainable" parameters are batch normalization's running averages.

// %%
println!("{}", stage.summary());

// %% [markdown]
// ## 4. The learning-rate schedule
//
// Adam with a peak learning rate of 3e-3: a linear warm-up over the first 10% of the steps (large
// steps on a freshly initialized network can throw it off), then a cosine decay to zero, so the last
// epochs make small, careful steps.

// %%
let training_images = stage.split.limit.unwrap_or(60_000) as f64 * (1.0 - stage.split.validation_split);
let steps_per_epoch = (training_images / stage.train.batch_size as f64).ceil() as usize;
schedule_chart(stage.train.schedule, stage.train.learning_rate, stage.train.epochs, steps_per_epoch).expect("chart")

// %% [markdown]
// ## 5. Training
//
// The next cell trains the network exactly as `fashion-mnist report` does, one line per epoch. On
// all the data this takes a while on a CPU (see the README's table for the time on a 2-core
// machine); when `fashion-mnist report` or an earlier run of this cell already trained it with the
// same images and settings, its saved results and weights in `runs/report/modern_cnn/` are reused
// instead. In quick mode (`FASHION_MNIST_QUICK=1`) it trains on a small subset for a few epochs.

// %%
let (results, model) = train_modern_cnn(&data).expect("the modern CNN trains");
println!("{} trainable parameters", model.param_count());

// %%
training_curves(&results.history, "modern CNN").expect("chart")

// %% [markdown]
// ## 6. On the test images
//
// The kept epoch's weights, scored once on the test images, with the confusion matrix: rows are the
// true classes, columns the predictions. Shirts, T-shirts, pullovers and coats remain the hard
// cases, as for LeNet-5.

// %%
println!(
    "validation accuracy {:.4}, test accuracy {}",
    results.validation.accuracy,
    results.test.map_or("-".into(), |t| format!("{:.4}", t.accuracy))
);
modern_cnn_confusion(&results).expect("chart")

// %% [markdown]
// ## 7. Transfer learning the way a practitioner would
//
// The walkthrough trains only a head on VGG-16's frozen 32x32 features, and our block-5 run
// unfreezes only the last block. A practitioner has two more dials:
//
// - **A larger input.** At 32x32 the backbone's five 2x2 poolings leave a single 1x1 position
//   (512 numbers per image); at 64x64 (each 28x28 image resized like Keras does) 2x2 positions
//   remain, and the early filters see the clothes at a scale closer to ImageNet's objects. The cost:
//   4x the pixels, so 4x the work.
// - **Fine-tuning end to end.** Every block trains together with the head (which starts from its
//   trained state), with a small peak learning rate (1e-4, Adam, cosine schedule with 10% warm-up,
//   batches of 64, mirrored images), so the ImageNet filters adapt instead of being overwritten.
//   All 14.7 million backbone weights now get gradients: one epoch at 32x32 is about 45 trillion
//   multiply-adds, about 18-22 minutes on 2 AVX2 cores and 9-11 on 2 AVX-512 cores (4x that at 64x64).
//
// That is too slow to run inside a notebook cell, so `fashion-mnist report --extended` runs this
// grid (frozen at 32x32 and 64x64, block 5 at 32x32, end to end for 2 epochs at 32x32 and 5 at
// 64x64) and this notebook shows its results. In
// quick mode the new runs use 300 images and one epoch (the walkthrough's cells 1,000 images; each
// cell then says how many): the mechanics, not the answer.
// Each cell: test accuracy, validation accuracy in brackets, and the run's wall time.

// %%
let study = study_results().expect("the study's results");
study_vgg16_grid(&study)

// %%
println!("{}", study_vgg16_grid_text(&study));

// %% [markdown]
// ## 8. Every model of the study, by size and time
//
// Test accuracy of every model against its number of trainable parameters (left) and the time it
// took (right; transfer runs include computing the backbone's features). These numbers come from the
// whole study (`fashion-mnist report`, as in notebook 06).

// %%
comparison_table(&study)

// %%
study_cost_chart(&study).expect("chart")

// %% [markdown]
// ## What this shows
//
// The verdict, written from the numbers above (in quick mode they come from small subsets and a few
// epochs, and say little):

// %%
println!("{}", study_verdict(&study));

// %% [markdown]
// The full-data numbers (test accuracy, parameters, time on a 2-core CPU) are in the README's
// "Beyond the walkthrough" section. A study run without `--extended` has only the walkthrough's
// cells of the grid (frozen and block 5 at 32x32).
