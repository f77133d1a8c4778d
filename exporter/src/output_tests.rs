//! Unit tests of `output.rs`.

use super::*;

fn export_folder(path: &Path, marker: &str) {
    fs::create_dir_all(path).unwrap();
    fs::write(path.join(MANIFEST_FILE), "{}").unwrap();
    fs::write(path.join("marker"), marker).unwrap();
}

#[test]
fn refuses_source_and_its_relatives() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ckpt");
    fs::create_dir_all(src.join("sub")).unwrap();
    for (out, needle) in [
        (src.clone(), "is the source checkpoint"),
        (src.join("sub/../"), "is the source checkpoint"),
        (dir.path().to_path_buf(), "contains the source"),
        (src.join("onnx"), "inside the source"),
        (src.join("sub/new/deeper"), "inside the source"),
    ] {
        for force in [false, true] {
            let err = Destination::check(&src, &out, force)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{}: {err}", out.display());
        }
    }
    // A file source (GGUF): OUT equal to it is refused.
    let file = dir.path().join("model.gguf");
    fs::write(&file, b"GGUF").unwrap();
    let err = Destination::check(&file, &file, true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is the source checkpoint"), "{err}");
    assert!(Destination::check(&file, &dir.path().join("out"), false).is_ok());
}

#[test]
fn force_replaces_only_exports_and_empty_folders() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ckpt");
    fs::create_dir(&src).unwrap();
    let file = dir.path().join("notes.txt");
    fs::write(&file, "keep").unwrap();
    let other = dir.path().join("photos");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("a.jpg"), "keep").unwrap();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let export = dir.path().join("export");
    export_folder(&export, "old");

    let err = Destination::check(&src, &file, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("notes.txt") && err.contains("is a file"),
        "{err}"
    );
    let err = Destination::check(&src, &other, true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("photos") && err.contains("not a gemma-onnx export"),
        "{err}"
    );
    let err = Destination::check(&src, &export, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already exists"), "{err}");
    assert!(Destination::check(&src, &empty, true).is_ok());
    assert!(Destination::check(&src, &export, true).is_ok());
    let err = Destination::check(&src, Path::new("/"), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("root"), "{err}");
    #[cfg(unix)]
    {
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&export, &link).unwrap();
        let err = Destination::check(&src, &link, true)
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }
    assert_eq!(fs::read_to_string(file).unwrap(), "keep");
    assert_eq!(fs::read_to_string(other.join("a.jpg")).unwrap(), "keep");
}

#[test]
fn commit_replaces_an_export_and_leaves_nothing_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("ckpt");
    fs::create_dir(&src).unwrap();
    let out = dir.path().join("out");
    export_folder(&out, "old");
    let dest = Destination::check(&src, &out, true).unwrap();
    let staging = dest.stage().unwrap();
    assert!(staging.path().join(LOCK_FILE).is_file());
    export_folder(staging.path(), "new");
    assert!(staging.commit().unwrap().is_empty());
    assert_eq!(fs::read_to_string(out.join("marker")).unwrap(), "new");
    assert!(!out.join(LOCK_FILE).exists());
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn dropped_staging_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let dest = Destination::check(&dir.path().join("ckpt"), &out, false).unwrap();
    let staging = dest.stage().unwrap();
    let tmp = staging.path().to_path_buf();
    assert!(tmp.is_dir());
    drop(staging);
    assert!(!tmp.exists() && !out.exists());
}

/// A PID that is not running: the highest a Linux kernel hands out is below 2^22.
const DEAD_PID: u32 = 4_194_305;

#[test]
fn stale_folders_are_cleaned_and_an_interrupted_swap_restored() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A killed export's partial folder (with a lock nobody holds), and an old export moved aside by a swap
    // that was killed before the new folder was renamed in.
    let stale = dir.path().join(format!(".out.partial-{DEAD_PID}"));
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join(LOCK_FILE), format!("{DEAD_PID}\n")).unwrap();
    let replaced = dir.path().join(format!(".out.replaced-{}", DEAD_PID + 1));
    export_folder(&replaced, "old");
    // Someone else's folder with a similar name is left alone.
    let unrelated = dir.path().join(".other.partial-1");
    fs::create_dir(&unrelated).unwrap();

    let dest = Destination::check(&dir.path().join("ckpt"), &out, true).unwrap();
    let staging = dest.stage().unwrap();
    assert!(!stale.exists());
    assert!(!replaced.exists());
    assert_eq!(fs::read_to_string(out.join("marker")).unwrap(), "old");
    assert!(unrelated.exists());
    assert_eq!(staging.notes.len(), 2, "{:?}", staging.notes);
}

#[test]
fn a_live_export_is_never_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let dest = Destination::check(&dir.path().join("ckpt"), &out, false).unwrap();
    // A live export (this process holds the lock) under another PID's name, as another process would have.
    let live = dir.path().join(format!(".out.partial-{DEAD_PID}"));
    fs::create_dir(&live).unwrap();
    let _lock = create_lock(&live.join(LOCK_FILE), DEAD_PID).unwrap();
    // A folder without a lock whose process runs (PID 1 always does).
    let running = dir.path().join(".out.replaced-1");
    fs::create_dir(&running).unwrap();
    let staging = dest.stage().unwrap();
    assert!(live.exists() && running.exists());
    assert!(staging.notes.is_empty(), "{:?}", staging.notes);
    // A second export to the same OUT in this process is refused without touching the first.
    let err = dest.stage().unwrap_err().to_string();
    assert!(err.contains("another export"), "{err}");
    assert!(staging.path().join(LOCK_FILE).is_file());
}

/// The swap used where the OS cannot exchange two folders: the new export ends in OUT, the old one is gone.
#[test]
fn swap_by_renames_replaces_an_export() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    export_folder(&out, "old");
    let dest = Destination::check(&dir.path().join("ckpt"), &out, true).unwrap();
    let mut staging = dest.stage().unwrap();
    export_folder(staging.path(), "new");
    let mut notes = Vec::new();
    staging.swap_by_renames(&out, &mut notes).unwrap();
    staging.done = true;
    drop(staging);
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(fs::read_to_string(out.join("marker")).unwrap(), "new");
    let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);
}
