//! `gemma-export` against hostile output folders, signals, kills, concurrent runs and a full disk. Every case
//! checks the exit code, a fragment of the message, that nothing panicked, that nothing the user did not ask to
//! replace changed, and that nothing is left behind (no OUT after a failure, no `.partial`/`.replaced` folder).

mod common;

use common::{assert_failed, command, export, stderr, Dims, TINY};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// ~20 MB of f32 weights: an int8 export takes long enough (a few hundred ms) to be interrupted at any stage.
const SLOW: Dims = Dims {
    hidden: 256,
    heads: 4,
    head_dim: 64,
    inter: 1024,
    vocab: 4096,
    layers: 3,
};

/// Writes a Gemma 3 checkpoint with dimensions `d` to `dir/name`.
fn checkpoint(dir: &Path, name: &str, d: Dims) -> PathBuf {
    common::checkpoint(dir, name, d, |_| {})
}

/// Every file under `dir` (recursively) with its contents: to show that a folder did not change.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let meta = fs::symlink_metadata(dir).unwrap();
    if meta.is_file() {
        files.insert(dir.to_path_buf(), fs::read(dir).unwrap());
        return files;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p);
            } else {
                files.insert(p.clone(), fs::read(&p).unwrap_or_default());
            }
        }
    }
    files
}

/// Names in `dir` that an interrupted or failed export would leave: `.partial-` and `.replaced-` folders.
fn debris(dir: &Path) -> Vec<String> {
    common::names_in(dir, |n| n.contains(".partial-") || n.contains(".replaced-"))
}

/// Asserts a clean refusal: exit 1, `needle` in stderr, no panic, no debris in `parent`.
fn assert_refused(out: &Output, parent: &Path, needle: &str) {
    assert_failed(out, needle);
    assert!(
        debris(parent).is_empty(),
        "left behind: {:?}",
        debris(parent)
    );
}

fn assert_complete_export(out: &Path) {
    for f in [
        "gemma-onnx.json",
        "model.onnx",
        "model.onnx_data",
        "config.json",
    ] {
        assert!(out.join(f).is_file(), "{} lacks {f}", out.display());
    }
    assert!(!out.join(gemma_exporter::output::LOCK_FILE).exists());
}

/// OUT values that must be refused, with and without --force, leaving everything as it was.
#[test]
fn output_folders_that_must_not_be_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let src = checkpoint(root, "ckpt", TINY);
    fs::create_dir(src.join("sub")).unwrap();
    let file = root.join("notes.txt");
    fs::write(&file, "keep me").unwrap();
    let other = root.join("photos");
    fs::create_dir(&other).unwrap();
    fs::write(other.join("a.jpg"), "keep me").unwrap();
    let link = root.join("link");
    std::os::unix::fs::symlink(&src, &link).unwrap();

    let cases: Vec<(PathBuf, &[&str], &str)> = vec![
        (src.clone(), &["--force"], "is the source checkpoint"),
        (src.clone(), &[], "is the source checkpoint"),
        (src.join("sub/.."), &["--force"], "is the source checkpoint"),
        (link.clone(), &["--force"], "is the source checkpoint"),
        (
            root.to_path_buf(),
            &["--force"],
            "contains the source checkpoint",
        ),
        (src.join("onnx"), &[], "inside the source checkpoint"),
        (
            src.join("sub/onnx"),
            &["--force"],
            "inside the source checkpoint",
        ),
        (file.clone(), &["--force"], "is a file"),
        (file.clone(), &[], "already exists"),
        (other.clone(), &["--force"], "not a gemma-onnx export"),
        (other.clone(), &[], "already exists"),
        (PathBuf::from("/"), &["--force"], "root folder"),
    ];
    let before = snapshot(root);
    for (out, extra, needle) in &cases {
        let run = export(&src, out, extra);
        assert_refused(&run, root, needle);
        assert!(stderr(&run).contains(&out.display().to_string()) || needle.contains("root"));
        assert!(!src.join("onnx").exists() && !src.join("sub/onnx").exists());
        assert_eq!(
            snapshot(root),
            before,
            "{} {extra:?} changed files",
            out.display()
        );
    }
    // `-o .` and `-o ..` from inside a folder: the current folder is never replaced.
    let export_dir = root.join("exp");
    fs::create_dir(&export_dir).unwrap();
    fs::write(export_dir.join("gemma-onnx.json"), "{}").unwrap();
    for out in [".", "..", "./"] {
        let run = command(&src, Path::new(out), &["--force"])
            .current_dir(&export_dir)
            .output()
            .unwrap();
        assert_refused(&run, &export_dir, "current folder");
        assert!(debris(root).is_empty());
        assert!(export_dir.join("gemma-onnx.json").is_file());
    }
    assert_eq!(cases.len() + 3, 15);
}

/// `--force` over an export or an empty folder replaces it; the result is complete and nothing is left beside it.
#[test]
fn force_replaces_an_export_or_an_empty_folder() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), "ckpt", TINY);
    let out = dir.path().join("onnx");
    let first = export(&src, &out, &[]);
    assert!(first.status.success(), "{}", stderr(&first));
    let again = export(&src, &out, &["--precision", "int8", "--force"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_complete_export(&out);
    let manifest = fs::read_to_string(out.join("gemma-onnx.json")).unwrap();
    assert!(manifest.contains("int8"), "not replaced: {manifest}");
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let run = export(&src, &empty, &["--force"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_complete_export(&empty);
    assert!(debris(dir.path()).is_empty(), "{:?}", debris(dir.path()));
}

/// A PID above Linux's maximum (2^22): never a running process.
const DEAD_PID: u32 = 4_194_305;

/// Folders left by killed exports are removed by the next export to the same OUT, an old export moved aside by an
/// interrupted swap is put back, and a live export's folder is never touched.
#[test]
fn stale_folders_are_recovered_and_live_ones_kept() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), "ckpt", TINY);
    let out = dir.path().join("onnx");
    let stale = dir.path().join(format!(".onnx.partial-{DEAD_PID}"));
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join("model.onnx_data"), vec![0u8; 4096]).unwrap();
    fs::write(
        stale.join(gemma_exporter::output::LOCK_FILE),
        format!("{DEAD_PID}\n"),
    )
    .unwrap();
    let unlocked = dir.path().join(format!(".onnx.partial-{}", DEAD_PID + 2));
    fs::create_dir(&unlocked).unwrap();
    // The old export, moved aside by a swap that was killed before the new one was renamed in: OUT is missing.
    let replaced = dir.path().join(format!(".onnx.replaced-{}", DEAD_PID + 1));
    fs::create_dir(&replaced).unwrap();
    fs::write(replaced.join("gemma-onnx.json"), "{\"old\": true}").unwrap();
    // A live export by another process (a sleeping child holds the lock) must survive.
    let live = dir.path().join(".onnx.partial-1");
    fs::create_dir(&live).unwrap();
    let lock = live.join(gemma_exporter::output::LOCK_FILE);
    fs::write(&lock, "1\n").unwrap();
    // `-o`: the lock is held by flock itself, not the sleep it runs, so killing flock releases it.
    let mut holder = Command::new("flock")
        .arg("-o")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .expect("flock(1)");
    std::thread::sleep(Duration::from_millis(200));

    // Without --force the restored old export blocks the new one, and says so.
    let run = export(&src, &out, &[]);
    let err = stderr(&run);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("restored the previous export"), "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert!(fs::read_to_string(out.join("gemma-onnx.json"))
        .unwrap()
        .contains("old"));
    assert!(!stale.exists() && !unlocked.exists() && !replaced.exists());
    assert!(live.exists(), "a live export's folder was removed");

    let run = export(&src, &out, &["--force"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_complete_export(&out);
    assert!(live.exists(), "a live export's folder was removed");
    holder.kill().unwrap();
    holder.wait().unwrap();
    let run = export(&src, &out, &["--force"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(debris(dir.path()).is_empty(), "{:?}", debris(dir.path()));
}

/// Waits for `child` with a deadline; a hang is a failure.
fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("gemma-export still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// How long an uninterrupted int8 export of the SLOW checkpoint takes here.
fn slow_export_time(src: &Path, out: &Path) -> Duration {
    let start = Instant::now();
    let run = export(src, out, &["--precision", "int8", "--force"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let took = start.elapsed();
    eprintln!("an uninterrupted int8 export takes {took:?}");
    took
}

/// SIGINT, SIGTERM and SIGHUP at several points of a `--force` export: exit 128 + signal, the old export intact
/// or the new one complete, nothing left beside it.
#[test]
fn catchable_signals_leave_nothing_behind() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), "ckpt", SLOW);
    let out = dir.path().join("onnx");
    let full = slow_export_time(&src, &out);
    for (signal, name) in [
        (libc::SIGINT, "INT"),
        (libc::SIGTERM, "TERM"),
        (libc::SIGHUP, "HUP"),
    ] {
        let mut interrupted = 0;
        for step in 1..=4u32 {
            let delay = full * step / 5;
            let mut child = command(&src, &out, &["--precision", "int8", "--force"])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(delay);
            unsafe { libc::kill(child.id() as i32, signal) };
            let status = wait(&mut child, Duration::from_secs(60));
            let code = status.code();
            // 128 + signal: caught during the export; 0: it had finished. Killed by the signal itself only if it
            // came before the handler was installed (before anything was written; a very loaded machine).
            assert!(
                code == Some(128 + signal) || code == Some(0) || status.signal() == Some(signal),
                "SIG{name} after {delay:?}: {status:?} (signal {:?})",
                status.signal()
            );
            if code == Some(128 + signal) {
                interrupted += 1;
                let err =
                    String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
                assert!(err.contains("interrupted"), "SIG{name}: {err}");
            }
            assert_complete_export(&out);
            assert!(
                debris(dir.path()).is_empty(),
                "SIG{name} after {delay:?}: {:?}",
                debris(dir.path())
            );
        }
        // At least one signal must have landed during an export, or the case proves nothing.
        assert!(interrupted > 0, "no SIG{name} landed during an export");
    }
}

/// SIGKILL at varying times, then a normal export: it succeeds, OUT is complete, and no stale folder remains.
#[test]
fn kill_9_loop_then_a_clean_export() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), "ckpt", SLOW);
    let out = dir.path().join("onnx");
    let full = slow_export_time(&src, &out);
    let runs = 12u32;
    let mut killed_with_debris = 0;
    for k in 0..runs {
        let delay = full * k / runs;
        let mut child = command(&src, &out, &["--precision", "int8", "--force"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        wait(&mut child, Duration::from_secs(60));
        // OUT is the old export or the new one, never missing or half-written.
        assert_complete_export(&out);
        if !debris(dir.path()).is_empty() {
            killed_with_debris += 1;
        }
    }
    let run = export(&src, &out, &["--force"]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert_complete_export(&out);
    assert!(debris(dir.path()).is_empty(), "{:?}", debris(dir.path()));
    eprintln!("{killed_with_debris} of {runs} kills left a temporary folder for the next export to remove");
    // The loop must really have interrupted exports mid-way, or it proves nothing.
    assert!(killed_with_debris > 0, "no kill landed during an export");
}

/// Four `--force` exports to one OUT at once: each succeeds or fails clearly, OUT is complete, nothing is left.
#[test]
fn concurrent_forced_exports_to_one_folder() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), "ckpt", SLOW);
    let out = dir.path().join("onnx");
    for _ in 0..2 {
        let children: Vec<Child> = (0..4)
            .map(|_| {
                command(&src, &out, &["--force"])
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let run = child.wait_with_output().unwrap();
            let err = stderr(&run);
            assert!(!err.contains("panicked"), "{err}");
            assert!(run.status.success(), "{err}");
        }
        assert_complete_export(&out);
        assert!(debris(dir.path()).is_empty(), "{:?}", debris(dir.path()));
    }
}

/// A full disk (a 1 MiB tmpfs) fails with ENOSPC named, and leaves nothing on it. Needs root to mount; says so
/// and skips elsewhere.
#[test]
fn full_disk_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), "ckpt", SLOW);
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED full_disk_fails_cleanly: mounting a tmpfs is not permitted here");
        return;
    }
    let out = mnt.join("onnx");
    let run = export(&src, &out, &[]);
    let left = debris(&mnt);
    let out_exists = out.exists();
    let _ = Command::new("umount").arg(&mnt).status();
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    let err = stderr(&run);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(left.is_empty() && !out_exists, "left behind: {left:?}");
}

/// Runs an export with a deadline (a hang is a failure) and returns its output.
fn export_with_deadline(src: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut child = command(src, out, extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait(&mut child, Duration::from_secs(60));
    child.wait_with_output().unwrap()
}

fn mkfifo(path: &Path) {
    let _ = fs::remove_file(path);
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

fn set_config(src: &Path, key: &str, value: serde_json::Value) {
    let path = src.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    cfg[key] = value;
    fs::write(path, cfg.to_string()).unwrap();
}

/// Hostile checkpoints: each is refused quickly with exit 1, a message naming the problem, and nothing left.
#[test]
fn hostile_checkpoints_are_refused_cleanly() {
    type Edit = fn(&Path);
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "FIFO as config.json",
            |s| mkfifo(&s.join("config.json")),
            "FIFO",
        ),
        (
            "FIFO as the shard",
            |s| mkfifo(&s.join("model.safetensors")),
            "FIFO",
        ),
        (
            "FIFO as tokenizer.json",
            |s| mkfifo(&s.join("tokenizer.json")),
            "FIFO",
        ),
        (
            "/dev/zero as config.json",
            |s| {
                fs::remove_file(s.join("config.json")).unwrap();
                std::os::unix::fs::symlink("/dev/zero", s.join("config.json")).unwrap();
            },
            // Refused before it is opened: checkpoint files may not be symlinks leading out of the folder.
            "a symlink to /dev/zero, outside the checkpoint folder",
        ),
        (
            "/dev/zero as the shard",
            |s| {
                fs::remove_file(s.join("model.safetensors")).unwrap();
                std::os::unix::fs::symlink("/dev/zero", s.join("model.safetensors")).unwrap();
            },
            "a symlink to /dev/zero, outside the checkpoint folder",
        ),
        (
            "a folder as the shard",
            |s| {
                fs::remove_file(s.join("model.safetensors")).unwrap();
                fs::create_dir(s.join("model.safetensors")).unwrap();
            },
            "folder",
        ),
        (
            "10^9 layers",
            |s| set_config(s, "num_hidden_layers", 1_000_000_000.into()),
            "num_hidden_layers",
        ),
        (
            "2^62 window",
            |s| set_config(s, "sliding_window", (1u64 << 62).into()),
            "sliding_window",
        ),
        (
            "huge vocab",
            |s| set_config(s, "vocab_size", (1u64 << 40).into()),
            "vocab_size",
        ),
        (
            "header naming a tensor twice",
            |s| {
                let path = s.join("model.safetensors");
                let bytes = fs::read(&path).unwrap();
                let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
                let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
                // Repeat the first entry at the end of the object, same length so offsets stay valid.
                let v: serde_json::Value = serde_json::from_str(&header).unwrap();
                let (name, entry) = v
                    .as_object()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| *k != "__metadata__")
                    .unwrap();
                let dup = format!(",{}:{}}}", serde_json::json!(name), entry);
                let new_header = format!("{}{}", header.trim_end().strip_suffix('}').unwrap(), dup);
                let mut out = (new_header.len() as u64).to_le_bytes().to_vec();
                out.extend_from_slice(new_header.as_bytes());
                out.extend_from_slice(&bytes[8 + n..]);
                fs::write(&path, out).unwrap();
            },
            "twice",
        ),
    ];
    for (what, edit, needle) in &cases {
        let dir = tempfile::tempdir().unwrap();
        let src = checkpoint(dir.path(), "ckpt", TINY);
        edit(&src);
        let out = dir.path().join("onnx");
        let start = Instant::now();
        let run = export_with_deadline(&src, &out, &[]);
        let err = stderr(&run);
        assert_eq!(run.status.code(), Some(1), "{what}: {err}");
        assert!(
            err.contains(needle),
            "{what}: stderr should mention {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(!out.exists(), "{what}: OUT exists");
        assert!(
            debris(dir.path()).is_empty(),
            "{what}: {:?}",
            debris(dir.path())
        );
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{what}: took {:?}",
            start.elapsed()
        );
    }
    assert_eq!(cases.len(), 10);
}

/// The shard is truncated while the export reads it: exit 1 with a message (never SIGBUS), nothing left behind.
#[test]
fn shard_truncated_during_the_export_is_an_error() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), "ckpt", SLOW);
    let scratch = dir.path().join("scratch");
    let full = slow_export_time(&src, &scratch);
    let shard = src.join("model.safetensors");
    let original = fs::read(&shard).unwrap();
    let mut errors = 0;
    for step in 1..=6u32 {
        fs::write(&shard, &original).unwrap();
        let out = dir.path().join("onnx");
        let mut child = command(&src, &out, &["--precision", "int8"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(full * step / 8);
        fs::OpenOptions::new()
            .write(true)
            .open(&shard)
            .unwrap()
            .set_len(original.len() as u64 / 3)
            .unwrap();
        let status = wait(&mut child, Duration::from_secs(60));
        let err = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
        assert_eq!(status.signal(), None, "killed by a signal: {err}");
        if status.code() == Some(0) {
            // The export had finished reading before the truncation.
            fs::remove_dir_all(&out).unwrap();
        } else {
            errors += 1;
            eprintln!("truncated after {:?}: {}", full * step / 8, err.trim());
            assert_eq!(status.code(), Some(1), "{err}");
            assert!(
                err.contains("changed while it was being read")
                    || err.contains("shrank while it was being read")
                    || err.contains("truncated"),
                "{err}"
            );
            assert!(!out.exists());
        }
        assert!(debris(dir.path()).is_empty(), "{:?}", debris(dir.path()));
    }
    assert!(errors > 0, "no truncation landed during an export");
}

/// stderr on a full device or closed: exit 1 or 141, never a panic (101).
#[test]
fn unwritable_stderr_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let src = checkpoint(dir.path(), "ckpt", TINY);
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let run = command(&dir.path().join("missing"), &dir.path().join("onnx"), &[])
        .stderr(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    // A successful export whose summary cannot be written: still exit 1, and OUT complete (written before).
    let full = fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = dir.path().join("onnx");
    let run = Command::new(env!("CARGO_BIN_EXE_gemma-export"))
        .arg(&src)
        .arg("-o")
        .arg(&out)
        .stderr(Stdio::from(full))
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    assert_complete_export(&out);
    let mut child = command(&dir.path().join("missing"), &dir.path().join("x"), &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let status = wait(&mut child, Duration::from_secs(60));
    assert_eq!(status.code(), Some(141));
}
