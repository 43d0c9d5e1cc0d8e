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
// # 2. LeNet-5 from scratch
//
// The second part of the walkthrough trains LeNet-5, Yann LeCun's small convolutional network from
// 1998, on the prepared images. This notebook builds the same network, trains it with the same
// settings, shows the learning curves, answers the question of how many epochs to train, and then does
// what the walkthrough did not: it measures the model on the 10,000 test images and looks at the
// mistakes.

// %% [markdown]
// ## Setup
//
// The first cell makes the project's library available to the Rust kernel. The first time, this
// compiles the library and its dependencies (several minutes); later runs reuse the build and take
// seconds. Everything after it is short calls into the library: the code that does the work lives in
// `src/`, under the same names the text uses.
//
// Training runs on the CPU unless the kernel was started with `FASHION_MNIST_DEVICE=cuda` or a cell
// calls `use_device("cuda")`: then LeNet-5 trains on an NVIDIA GPU and the trained weights come back
// to the CPU for the cells that inspect them. That needs the library built with CUDA support: start
// Jupyter from a shell prepared with `eval "$(scripts/build-cuda.sh env)"` and write
// `:dep fashion-mnist = { path = "..", features = ["cuda"] }` in the first cell (README, "GPU").

// %%
// :dep fashion-mnist = { path = ".." }
use fashion_mnist::models::ImageClassifier;
use fashion_mnist::notebook::*;
use fashion_mnist::training::{EarlyStopping, TrainConfig};

let settings = settings();

// %%
let data = load_data().expect("Fashion-MNIST loads (see the README)");
let split = prepare_split(&data, 0.2, 42, settings.train_limit);
split_table(&split)

// %% [markdown]
// ## The network
//
// Two convolution + pooling stages extract local patterns (edges, then parts of garments), and three
// dense layers turn them into a decision among the 10 classes:
//
// - Conv 6 filters 5x5, ReLU → 24x24x6; max-pooling 2x2 → 12x12x6
// - Conv 16 filters 5x5, ReLU → 8x8x16; max-pooling 2x2 → 4x4x16
// - Flatten → 256; Dense 120 ReLU; Dense 84 ReLU; Dense 10 softmax
//
// 44,426 weights in all — tiny by today's standards, which is why it trains in seconds per epoch on a
// laptop CPU. The table matches the walkthrough's Keras summary (shapes in Keras' channels-last
// notation).

// %%
let mut model = lenet5(42);
model.summary()

// %% [markdown]
// ## Training: the walkthrough's 8 epochs
//
// Adam (learning rate 0.001), categorical cross-entropy, batches of 32 images, the training images
// reshuffled every epoch from the seed. After each epoch we measure loss and accuracy on the
// validation images. The walkthrough trained longer first, saw the validation loss turn up while the
// training loss kept falling (overfitting), and settled on 8 epochs by eye.

// %%
let config = TrainConfig { epochs: settings.epochs, ..TrainConfig::default() };
let history = train_lenet5(&mut model, &split, &config).expect("training");

// %%
let title = format!("LeNet-5, {} epochs", history.epochs.len());
fashion_mnist::plots::training_curves(&history, &title).expect("chart")

// %% [markdown]
// The curves tell the usual story: training accuracy keeps rising, validation accuracy flattens
// after a few epochs, and the gap between them is overfitting — the network starts to memorize the
// training images instead of learning what generalizes.

// %% [markdown]
// ## Choosing the number of epochs: early stopping
//
// Instead of picking the epoch count by eye, early stopping watches the validation loss, stops when it
// has not improved for `patience` epochs (here 3), and restores the weights of the best epoch. It needs
// no second run and cannot pick a worse epoch than the best one it saw. We train a fresh network the
// same way, with up to 30 epochs.

// %%
let mut stopped = lenet5(42);
let config = TrainConfig {
    epochs: settings.max_epochs,
    early_stopping: Some(EarlyStopping::new(3)),
    ..TrainConfig::default()
};
let stopped_history = train_lenet5(&mut stopped, &split, &config).expect("training");
println!("best epoch: {:?}, weights restored: {}", stopped_history.best_epoch, stopped_history.restored_best);

// %%
stopped_history

// %% [markdown]
// Both runs start from the same weights and see the images in the same order, so their first epochs
// are identical and the two lines coincide there (the fixed run is drawn wider, underneath); the
// early-stopping run then goes on until the validation loss stops improving.

// %%
let fixed = format!("{} epochs (the walkthrough's choice)", history.epochs.len());
compare_runs_chart(&[(fixed.as_str(), &history), ("early stopping", &stopped_history)]).expect("chart")

// %% [markdown]
// ## On the test set
//
// The validation images helped choose the model, so their score is slightly optimistic. The 10,000
// test images have played no part so far: this is the honest estimate of how the model does on new
// pictures. The walkthrough reported validation accuracy 0.8947 for its LeNet-5.

// %%
let test = evaluate_lenet5(&stopped, &split.test).expect("evaluation");
let best = stopped_history.final_record().cloned().expect("at least one epoch");
println!("validation accuracy {:.4} (epoch {}), test accuracy {:.4}, test loss {:.4}",
    best.val_accuracy.unwrap_or(f64::NAN), best.epoch, test.accuracy, test.loss);

// %% [markdown]
// ## Where it goes wrong
//
// The confusion matrix counts, for every true class (rows), what the model predicted (columns). The
// diagonal holds the correct answers. Most errors sit among the upper-body garments: shirts taken for
// T-shirts, pullovers or coats, and the other way round. Trousers, bags and footwear are nearly
// always right.

// %%
confusion_chart(&test, &split.test).expect("chart")

// %%
test.confusion_matrix(&split.test.labels).report()

// %% [markdown]
// Some of the misclassified pictures, with the true class first. Many are hard even for a person at
// 28x28 pixels: a shirt without visible buttons is a T-shirt or a pullover to anyone.

// %%
misclassified_grid(&test, &split.test, 18).expect("chart")

// %% [markdown]
// **Summary.** Trained on all 60,000 images, LeNet-5 reaches about 0.90 validation accuracy (the
// walkthrough: 0.8947; our full run: 0.8992, test 0.8909), with early stopping choosing the epoch
// instead of the eye, and a slightly lower test accuracy, as expected of an estimate that was not
// used for any choice. (In quick mode, 3,000 images and a few epochs, the numbers above are lower:
// that mode is for trying the notebook, not for conclusions.) The next notebooks tune the network
// and cross-validate it.
