//! Search spaces, random search, successive halving, resuming, and cross-validation.

mod common;
use std::sync::atomic::{AtomicUsize, Ordering};

use dfdx::prelude::Cpu;
use fashion_mnist::cross_validation::{cross_validate, CvConfig, CvResults};
use fashion_mnist::data::prepare::Prepared;
use fashion_mnist::models::LeNet5Config;
use fashion_mnist::progress::{Progress, Silent};
use fashion_mnist::resume::RunKey;
use fashion_mnist::training::{EpochRecord, History, TrainConfig};
use fashion_mnist::tuning::{
    random_search, successive_halving, HyperParams, SearchOptions, SearchSpace, TrialRunner,
    TuningResults,
};
use fashion_mnist::TrainError;
use rand::SeedableRng;

/// What a search found, without the timings.
fn found(results: &TuningResults) -> Vec<(usize, usize, HyperParams, f64)> {
    results
        .trials
        .iter()
        .map(|t| (t.rung, t.trial, t.hyperparams.clone(), t.score))
        .collect()
}

/// A stand-in for training: the score rises with units and epochs, counts its calls. Its
/// second field stands for a training setting (a batch size) that keys its results.
struct FakeRunner(AtomicUsize, usize);

impl TrialRunner for FakeRunner {
    fn key(&self) -> RunKey {
        RunKey::new().with("batch_size", self.1)
    }

    fn run(
        &self,
        _trial: usize,
        hp: &HyperParams,
        epochs: usize,
        _execution: usize,
    ) -> Result<History, TrainError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let units = hp["units"].as_f64().unwrap();
        let lr = hp["learning_rate"].as_f64().unwrap();
        let epochs = (1..=epochs)
            .map(|e| EpochRecord {
                epoch: e,
                loss: 1.0,
                accuracy: 0.5,
                val_loss: Some(1.0 / e as f64),
                val_accuracy: Some(0.5 + units / 1000.0 + e as f64 / 100.0 - lr),
                seconds: 0.0,
            })
            .collect();
        Ok(History {
            epochs,
            ..Default::default()
        })
    }
}

fn runner() -> FakeRunner {
    FakeRunner(AtomicUsize::new(0), 32)
}

#[test]
fn sampling_stays_inside_the_space() {
    let space = SearchSpace::walkthrough()
        .float("dropout", 0.1, 0.5, false)
        .float("decay", 1e-5, 1e-2, true);
    space.validate().unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let mut seen_units = std::collections::BTreeSet::new();
    for _ in 0..500 {
        let hp = space.sample(&mut rng);
        assert!(space.contains(&hp), "{hp:?}");
        seen_units.insert(hp["units"].as_i64().unwrap());
        let decay = hp["decay"].as_f64().unwrap();
        assert!((1e-5..=1e-2).contains(&decay));
    }
    assert_eq!(
        seen_units.into_iter().collect::<Vec<_>>(),
        vec![64, 80, 96, 112, 128]
    );
    let mut outside = HyperParams::new();
    outside.insert("units".into(), serde_json::json!(70));
    outside.insert("learning_rate".into(), serde_json::json!(1e-3));
    assert!(!SearchSpace::walkthrough().contains(&outside));
    assert!(SearchSpace::new().int("a", 5, 1, 1).validate().is_err());
    assert!(SearchSpace::new()
        .float("b", 0.0, 1.0, true)
        .validate()
        .is_err());
}

#[test]
fn spaces_read_from_toml_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("space.toml");
    std::fs::write(
        &toml_path,
        "[[param]]\ntype = \"int\"\nname = \"units\"\nmin = 64\nmax = 128\nstep = 16\n\n[[param]]\ntype = \"choice\"\nname = \"learning_rate\"\nvalues = [0.01, 0.001]\n",
    )
    .unwrap();
    assert_eq!(
        SearchSpace::from_file(&toml_path).unwrap(),
        SearchSpace::walkthrough()
    );
    let json_path = dir.path().join("space.json");
    std::fs::write(
        &json_path,
        serde_json::to_string(&SearchSpace::walkthrough()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        SearchSpace::from_file(&json_path).unwrap(),
        SearchSpace::walkthrough()
    );
    std::fs::write(
        &toml_path,
        "[[param]]\ntype = \"int\"\nname = \"units\"\nmin = 64\nmax = \"big\"\n",
    )
    .unwrap();
    let err = SearchSpace::from_file(&toml_path).unwrap_err().to_string();
    assert!(
        err.contains("space.toml: row") && err.contains("\"big\""),
        "{err}"
    );
}

#[test]
fn random_search_reproduces_with_a_seed_and_ranks_by_score() {
    let space = SearchSpace::walkthrough();
    let options = SearchOptions::default();
    let run = |seed| {
        let options = SearchOptions {
            seed,
            ..options.clone()
        };
        random_search(&space, 6, 3, &runner(), &options, None, &mut Silent).unwrap()
    };
    let first = run(42);
    assert_eq!(first.trials.len(), 6);
    assert!(first.trials.iter().all(|t| space.contains(&t.hyperparams)));
    assert_eq!(found(&first), found(&run(42)));
    assert_ne!(
        found(&first),
        found(&run(7)),
        "another seed draws other trials"
    );
    let ranked = first.ranked();
    assert!(ranked.windows(2).all(|w| w[0].score >= w[1].score));
    let summary = first.results_summary(3);
    assert_eq!(summary.rows.len(), 3);
    assert_eq!(summary.rows[0][0], "1");
    assert_eq!(first.epochs_spent(), 18);
    // No set of values is tried twice; the walkthrough's space has 10, so 20 trials stop at 10.
    let all = random_search(&space, 20, 1, &runner(), &options, None, &mut Silent).unwrap();
    assert_eq!(all.trials.len(), 10);
    for (i, t) in all.trials.iter().enumerate() {
        assert!(all.trials[..i]
            .iter()
            .all(|u| u.hyperparams != t.hyperparams));
    }
}

#[test]
fn an_interrupted_search_resumes_without_repeating_trials() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("random.jsonl");
    let space = SearchSpace::walkthrough();
    let options = SearchOptions::default();
    let counting = runner();
    let full = random_search(&space, 5, 2, &counting, &options, Some(&file), &mut Silent).unwrap();
    assert_eq!(counting.0.load(Ordering::SeqCst), 5);

    // Nothing to redo.
    let again = runner();
    assert_eq!(
        random_search(&space, 5, 2, &again, &options, Some(&file), &mut Silent).unwrap(),
        full,
        "read back exactly"
    );
    assert_eq!(again.0.load(Ordering::SeqCst), 0);

    // Interrupted after two trials (the file's first line is its run key): only the other
    // three run.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("{\"run_key\""), "{text}");
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&file, kept.join("\n") + "\n").unwrap();
    let resumed = runner();
    let results =
        random_search(&space, 5, 2, &resumed, &options, Some(&file), &mut Silent).unwrap();
    assert_eq!(resumed.0.load(Ordering::SeqCst), 3);
    assert_eq!(found(&results), found(&full));
    assert_eq!(TuningResults::load(&file).unwrap().len(), 5);

    // Other settings: the file is refused rather than mixed, naming what differs.
    let other = SearchOptions { seed: 9, ..options };
    let err = random_search(&space, 5, 2, &runner(), &other, Some(&file), &mut Silent).unwrap_err();
    assert!(
        err.to_string()
            .contains("seed: 42 in the stored results, 9 now"),
        "{err}"
    );
    let other_batch = FakeRunner(AtomicUsize::new(0), 64);
    let err = random_search(
        &space,
        5,
        2,
        &other_batch,
        &options,
        Some(&file),
        &mut Silent,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("batch_size: 32 in the stored results, 64 now"),
        "{err}"
    );
    assert_eq!(other_batch.0.load(Ordering::SeqCst), 0, "nothing trained");
    let err =
        random_search(&space, 5, 3, &runner(), &options, Some(&file), &mut Silent).unwrap_err();
    assert!(
        err.to_string()
            .contains("epochs: 2 in the stored results, 3 now"),
        "{err}"
    );
    let err = random_search(
        &SearchSpace::wide(),
        5,
        2,
        &runner(),
        &options,
        Some(&file),
        &mut Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains("space."), "{err}");
    assert!(err.to_string().contains("--fresh"), "{err}");
    assert_eq!(
        TuningResults::load(&file).unwrap().len(),
        5,
        "file unchanged"
    );
}

#[test]
fn a_torn_last_line_is_set_aside_and_its_trial_redone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("random.jsonl");
    let space = SearchSpace::walkthrough();
    let options = SearchOptions::default();
    let full = random_search(&space, 4, 2, &runner(), &options, Some(&file), &mut Silent).unwrap();
    // A run killed while writing its fourth trial: the line is cut and has no newline.
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let torn = &lines[4][..lines[4].len() / 2];
    std::fs::write(&file, format!("{}\n{torn}", lines[..4].join("\n"))).unwrap();

    let resumed = runner();
    let results =
        random_search(&space, 4, 2, &resumed, &options, Some(&file), &mut Silent).unwrap();
    assert_eq!(
        resumed.0.load(Ordering::SeqCst),
        1,
        "only the torn trial is redone"
    );
    assert_eq!(found(&results), found(&full));
    let torn_file = dir.path().join("random.jsonl.torn");
    assert_eq!(
        std::fs::read_to_string(&torn_file).unwrap(),
        format!("{torn}\n")
    );
    // The file is whole again: every later run reads it.
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 5);
    assert!(text.ends_with('\n'));
    let again = runner();
    random_search(&space, 4, 2, &again, &options, Some(&file), &mut Silent).unwrap();
    assert_eq!(again.0.load(Ordering::SeqCst), 0);

    // A file without a run key (an older version's) cannot be checked: refused.
    std::fs::write(&file, lines[1..].join("\n") + "\n").unwrap();
    let err =
        random_search(&space, 4, 2, &runner(), &options, Some(&file), &mut Silent).unwrap_err();
    assert!(err.to_string().contains("not a run key"), "{err}");
}

#[test]
fn searches_refuse_settings_that_train_nothing() {
    let space = SearchSpace::walkthrough();
    let options = SearchOptions::default();
    let counting = runner();
    for (trials, epochs) in [(0, 2), (3, 0)] {
        let err = random_search(
            &space,
            trials,
            epochs,
            &counting,
            &options,
            None,
            &mut Silent,
        )
        .unwrap_err();
        assert!(err.to_string().contains("must be at least 1"), "{err}");
    }
    for bad in [
        SearchOptions {
            executions_per_trial: 0,
            ..SearchOptions::default()
        },
        SearchOptions {
            parallel_trials: 0,
            ..SearchOptions::default()
        },
    ] {
        let err = random_search(&space, 3, 1, &counting, &bad, None, &mut Silent).unwrap_err();
        assert!(err.to_string().contains("must be at least 1"), "{err}");
    }
    let err =
        successive_halving(&space, 0, 1, 9, 3, &counting, &options, None, &mut Silent).unwrap_err();
    assert!(err.to_string().contains("at least 1 trial"), "{err}");
    assert_eq!(counting.0.load(Ordering::SeqCst), 0);
}

#[test]
fn successive_halving_spends_fewer_epochs_on_poor_trials() {
    let space = SearchSpace::walkthrough();
    let counting = runner();
    let results = successive_halving(
        &space,
        9,
        1,
        9,
        3,
        &counting,
        &SearchOptions::default(),
        None,
        &mut Silent,
    )
    .unwrap();
    let rungs: Vec<(usize, usize)> = (0..3)
        .map(|r| {
            let t: Vec<_> = results.trials.iter().filter(|t| t.rung == r).collect();
            (t.len(), t[0].epochs)
        })
        .collect();
    assert_eq!(rungs, vec![(9, 1), (3, 3), (1, 9)]);
    assert_eq!(results.epochs_spent(), 9 + 9 + 9);
    assert_eq!(counting.0.load(Ordering::SeqCst), 13);
    // The survivors of rung 0 are its three best.
    let mut rung0: Vec<_> = results.trials.iter().filter(|t| t.rung == 0).collect();
    rung0.sort_by(|a, b| b.score.total_cmp(&a.score));
    let survivors: Vec<usize> = results
        .trials
        .iter()
        .filter(|t| t.rung == 1)
        .map(|t| t.trial)
        .collect();
    for t in &rung0[..3] {
        assert!(survivors.contains(&t.trial));
    }
    assert_eq!(results.best().unwrap().rung, 2);
}

#[test]
fn cross_validation_on_real_images_gives_sensible_numbers_and_resumes() {
    let data = Prepared::from_dataset(&common::real_images(1500, 0).0);
    let config = CvConfig {
        folds: 3,
        seed: 42,
        stratified: true,
        model: LeNet5Config::default(),
        train: TrainConfig {
            epochs: if data.len() >= 1500 { 3 } else { 8 },
            ..TrainConfig::default()
        },
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("folds.jsonl");
    let results =
        cross_validate(&Cpu::default(), &data, &config, Some(&file), &mut Silent).unwrap();
    assert_eq!(results.folds.len(), 3);
    let validated: usize = results.folds.iter().map(|f| f.validation_images).sum();
    assert_eq!(validated, data.len());
    let (mean, std) = results.accuracy_mean_std();
    eprintln!("3-fold accuracy {mean:.3} +/- {std:.3}");
    assert!(mean > 0.55 && mean < 1.0, "mean accuracy {mean}");
    assert!(std < 0.15, "std {std}");
    assert!(results.best_fold().unwrap().val_accuracy >= mean);
    assert_eq!(results.table().rows.len(), 4);

    // Resuming reads the folds back instead of training again.
    let again: CvResults = cross_validate(
        &Cpu::default(),
        &data,
        &config,
        Some(&file),
        &mut PanicsIfTrained,
    )
    .unwrap();
    assert_eq!(again, results);

    // Other images or settings: refused, naming what differs, before any training.
    let fewer = data.subset(&(0..data.len() - 3).collect::<Vec<_>>());
    let err = cross_validate(
        &Cpu::default(),
        &fewer,
        &config,
        Some(&file),
        &mut PanicsIfTrained,
    )
    .unwrap_err();
    assert!(err.to_string().contains("data: "), "{err}");
    let mut other = config.clone();
    other.train.batch_size = 64;
    let err = cross_validate(
        &Cpu::default(),
        &data,
        &other,
        Some(&file),
        &mut PanicsIfTrained,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("cv.train.batch_size: 32 in the stored results, 64 now"),
        "{err}"
    );
}

/// Fails the test when anything starts training.
struct PanicsIfTrained;
impl Progress for PanicsIfTrained {
    fn on_epoch_start(&mut self, _epoch: usize, _epochs: usize, _steps: usize) {
        panic!("trained");
    }
}

#[test]
fn lenet5_hyperparameters_are_typed_and_checked_against_the_space() {
    use fashion_mnist::tuning::{HyperParams, LeNet5Hyperparameters};
    LeNet5Hyperparameters::check_space(&SearchSpace::walkthrough()).unwrap();
    LeNet5Hyperparameters::check_space(&SearchSpace::wide()).unwrap();
    let typo = SearchSpace::new()
        .int("unit", 64, 128, 16)
        .choice("learning_rate", &[serde_json::json!(0.01)]);
    let err = LeNet5Hyperparameters::check_space(&typo)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown hyperparameter(s) unit"), "{err}");
    assert!(err.contains("missing units"), "{err}");
    let extra = SearchSpace::walkthrough().float("dropout", 0.0, 0.5, false);
    let err = LeNet5Hyperparameters::check_space(&extra)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown hyperparameter(s) dropout"), "{err}");

    let mut values = HyperParams::new();
    values.insert("units".into(), serde_json::json!(96));
    values.insert("learning_rate".into(), serde_json::json!(0.01));
    let typed = LeNet5Hyperparameters::from_values(&values).unwrap();
    assert_eq!((typed.units, typed.learning_rate), (96, 0.01));
    values.insert("units".into(), serde_json::json!(96.5));
    let err = LeNet5Hyperparameters::from_values(&values)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("units must be a whole number >= 1, got 96.5"),
        "{err}"
    );
}
