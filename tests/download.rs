//! The download path against a local HTTP server on 127.0.0.1: real files, a truncated file and
//! a corrupted file. Verified files appear under their final name; failed ones leave nothing.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use fashion_mnist::data::source::{self, IDX_FILES};

const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Serves `files` (URL path -> body) on a free local port until the test process ends.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let address = server.server_addr().to_ip().unwrap();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let response = match files.get(request.url()) {
                Some(body) => tiny_http::Response::from_data(body.clone()).boxed(),
                None => tiny_http::Response::empty(404).boxed(),
            };
            let _ = request.respond(response);
        }
    });
    format!("http://{address}/")
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn download_verifies_real_files_and_rejects_truncated_and_corrupted_ones() {
    if !Path::new(DEBIAN_DIR)
        .join("t10k-labels-idx1-ubyte.gz")
        .is_file()
    {
        eprintln!("skipped: {DEBIAN_DIR} not installed (the served files are the real ones)");
        return;
    }
    let real =
        |name: &str| std::fs::read(Path::new(DEBIAN_DIR).join(format!("{name}.gz"))).unwrap();
    let labels = real("t10k-labels-idx1-ubyte");
    let mut corrupted = real("train-labels-idx1-ubyte");
    let middle = corrupted.len() / 2;
    corrupted[middle] ^= 0x55;
    let truncated = real("t10k-images-idx3-ubyte")[..100_000].to_vec();

    let mut files = HashMap::new();
    for (name, _, _) in IDX_FILES {
        files.insert(format!("/good/{name}.gz"), real(name));
    }
    files.insert(
        "/bad/t10k-labels-idx1-ubyte.gz".into(),
        labels[..labels.len() - 7].to_vec(),
    );
    files.insert("/bad/train-labels-idx1-ubyte.gz".into(), corrupted);
    files.insert("/bad/t10k-images-idx3-ubyte.gz".into(), truncated);
    let mirror = serve(files);

    // All four real files, then load them: verified, 60,000 + 10,000 images.
    let good = tempfile::tempdir().unwrap();
    let paths = source::download_all(&format!("{mirror}good/"), good.path()).unwrap();
    assert_eq!(paths.len(), 4);
    let located = source::locate(Some(good.path())).unwrap();
    let loaded = source::load(&located).unwrap();
    assert_eq!(loaded.verification, source::Verification::Verified);
    assert_eq!(
        (loaded.train.len(), loaded.test.unwrap().len()),
        (60_000, 10_000)
    );
    assert_eq!(dir_entries(good.path()).len(), 4, "no temporary files left");

    let bad = tempfile::tempdir().unwrap();
    let bad_mirror = format!("{mirror}bad");
    for (name, expected) in [
        ("t10k-labels-idx1-ubyte", "not a complete gzip stream"),
        ("train-labels-idx1-ubyte", ""),
        ("t10k-images-idx3-ubyte", "not a complete gzip stream"),
    ] {
        let err = source::download_file(&bad_mirror, name, bad.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{err}");
        assert!(err.contains(expected), "{err}");
        // A flipped byte fails either the gzip CRC or the SHA-256 check.
        if expected.is_empty() {
            assert!(err.contains("SHA-256") || err.contains("gzip"), "{err}");
        }
    }
    assert!(
        dir_entries(bad.path()).is_empty(),
        "failed downloads leave nothing: {:?}",
        dir_entries(bad.path())
    );

    // A missing file is a clear HTTP error.
    let err = source::download_file(
        &format!("{mirror}none"),
        "t10k-labels-idx1-ubyte",
        bad.path(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("404"), "{err}");
}
