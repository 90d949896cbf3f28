//! Repository tidiness checks that run with the test suite: every Rust file opens with a `//!`
//! module doc saying what it is for, and no file keeps a stray insta `.snap.new`.

use std::path::Path;
use std::path::PathBuf;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    files_under(&workspace_root().join("crates"), &mut files);
    let rust_files: Vec<&PathBuf> = files
        .iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .collect();
    assert!(
        rust_files.len() > 10,
        "found only {} files",
        rust_files.len()
    );
    let missing: Vec<String> = rust_files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.starts_with("//!")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! doc: {missing:#?}"
    );
}

#[test]
fn no_pending_snapshots() {
    let mut files = Vec::new();
    files_under(&workspace_root().join("crates"), &mut files);
    let pending: Vec<String> = files
        .iter()
        .filter(|path| path.to_string_lossy().ends_with(".snap.new"))
        .map(|path| path.display().to_string())
        .collect();
    assert!(pending.is_empty(), "review or delete: {pending:#?}");
}
