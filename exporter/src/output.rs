//! The output folder of an export: where it may go, the temporary folder the export is written into, and the swap
//! that puts it in place. The rules (docs/reliability.md):
//!
//! - OUT is resolved (symlinks, `.`, `..`) before anything is written, and refused when it is the source, contains
//!   the source, lies inside the source, is `/`, or is (or contains) the current folder.
//! - An existing OUT is replaced only with `--force`, and only when it is a gemma-onnx export (it holds
//!   `gemma-onnx.json`) or an empty folder. A file, a symlink or any other folder is left alone with an error.
//! - The export is written to `.NAME.partial-PID` beside OUT. That folder holds a lock file with the PID, `flock`ed
//!   while the export runs, so a later export can tell a stale folder (its process is gone) from a live one.
//! - The new folder replaces OUT atomically where the OS allows (`renameat2(RENAME_EXCHANGE)` on Linux); elsewhere
//!   OUT is moved to `.NAME.replaced-PID` first and the new folder renamed after it. A later export puts an old
//!   export left in `.NAME.replaced-PID` back when OUT is missing, and removes stale folders otherwise.
//! - [`remove_partial_on_signals`] removes the temporary folder on SIGINT, SIGTERM and SIGHUP; SIGKILL leaves it to
//!   the next export's clean-up.

use crate::manifest::MANIFEST_FILE;
use crate::ExportError;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The lock file inside a temporary export folder: the PID of the exporting process, `flock`ed while it runs.
pub const LOCK_FILE: &str = ".gemma-export.lock";

/// Temporary folders of the exports running in this process, by staging id: what a signal removes. The swap runs
/// with this lock held, so a signal never sees a half-done swap.
static ACTIVE: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn active() -> MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    ACTIVE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A checked export destination.
#[derive(Debug, Clone)]
pub struct Destination {
    /// OUT as given, for messages.
    shown: PathBuf,
    /// The resolved folder OUT goes in, and OUT's name in it.
    parent: PathBuf,
    name: OsString,
    force: bool,
    /// What the clean-up of interrupted exports did.
    notes: Vec<String>,
}

fn refuse(out: &Path, reason: impl Into<String>) -> ExportError {
    ExportError::Output {
        out: out.to_path_buf(),
        reason: reason.into(),
    }
}

impl Destination {
    /// Checks OUT against SRC (a folder or a file) and `--force`, before anything is written.
    pub fn check(src: &Path, out: &Path, force: bool) -> Result<Destination, ExportError> {
        let resolved = resolve(out)?;
        let (Some(parent), Some(name)) = (resolved.parent(), resolved.file_name()) else {
            return Err(refuse(
                out,
                "is the root folder; choose a new folder for the export",
            ));
        };
        if let Ok(cwd) = std::env::current_dir().and_then(|d| d.canonicalize()) {
            if cwd.starts_with(&resolved) {
                return Err(refuse(
                    out,
                    "is the current folder or contains it; choose a new folder for the export",
                ));
            }
        }
        // A missing source is reported by the checkpoint checks; only an existing one can be overwritten.
        // OUT as named and, when it is a symlink, what it points to.
        let targets = [Some(resolved.clone()), out.canonicalize().ok()];
        for target in targets.iter().flatten() {
            let Ok(src_real) = src.canonicalize() else {
                break;
            };
            let resolved = target;
            let clash = if *resolved == src_real {
                Some("is the source checkpoint")
            } else if src_real.starts_with(&resolved) {
                Some("contains the source checkpoint")
            } else if resolved.starts_with(&src_real) {
                Some("lies inside the source checkpoint folder")
            } else {
                None
            };
            if let Some(clash) = clash {
                return Err(refuse(
                    out,
                    format!(
                        "{clash} {}; choose an output folder outside it",
                        src.display()
                    ),
                ));
            }
        }
        let mut dest = Destination {
            shown: out.to_path_buf(),
            parent: parent.to_path_buf(),
            name: name.to_os_string(),
            force,
            notes: Vec::new(),
        };
        // Before looking at OUT: an interrupted swap may have left the old export aside, to be put back.
        if parent.is_dir() {
            let _guard = lock_folder(parent);
            dest.notes = dest.clean_stale();
        }
        if let Err(e) = dest.check_existing() {
            if dest.notes.is_empty() {
                return Err(e);
            }
            // Say what the clean-up did too: the user should know an old export came back.
            return Err(refuse(
                out,
                format!("{e}; before that, {}", dest.notes.join("; ")),
            ));
        }
        Ok(dest)
    }

    /// OUT, resolved.
    pub fn path(&self) -> PathBuf {
        self.parent.join(&self.name)
    }

    fn sibling(&self, kind: &str, pid: u32) -> PathBuf {
        let mut n = OsString::from(".");
        n.push(&self.name);
        n.push(format!(".{kind}-{pid}"));
        self.parent.join(n)
    }

    /// What is at OUT now: nothing, or something `--force` may replace; anything else is an error.
    fn check_existing(&self) -> Result<bool, ExportError> {
        let out = self.path();
        let meta = match fs::symlink_metadata(&out) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(ExportError::io(&self.shown, e)),
        };
        if !self.force {
            return Err(ExportError::OutputExists(self.shown.clone()));
        }
        let only = "--force replaces only a gemma-onnx export folder (with gemma-onnx.json) or an empty folder";
        if meta.file_type().is_symlink() {
            return Err(refuse(&self.shown, format!("is a symbolic link; {only}")));
        }
        if !meta.is_dir() {
            return Err(refuse(
                &self.shown,
                format!("is a file, not a folder; {only}"),
            ));
        }
        let mut entries = fs::read_dir(&out).map_err(|e| ExportError::io(&self.shown, e))?;
        if entries.next().is_none() || out.join(MANIFEST_FILE).is_file() {
            return Ok(true);
        }
        Err(refuse(
            &self.shown,
            format!("is a folder that is not a gemma-onnx export (no {MANIFEST_FILE}); {only}; remove it yourself or choose another folder"),
        ))
    }

    /// Creates the parent folder, cleans up what earlier interrupted exports to OUT left, and creates the locked
    /// temporary folder. The notes say what was cleaned up.
    pub fn stage(&self) -> Result<Staging, ExportError> {
        fs::create_dir_all(&self.parent).map_err(|e| ExportError::io(&self.parent, e))?;
        let mut notes = self.notes.clone();
        if notes.is_empty() {
            // The parent folder is new, or nothing was cleaned when OUT was checked: look again.
            let _guard = lock_folder(&self.parent);
            notes = self.clean_stale();
        }
        let pid = std::process::id();
        let tmp = self.sibling("partial", pid);
        if fs::symlink_metadata(&tmp).is_ok() {
            // Our PID, left by an earlier process (PIDs are reused) or by another export in this process.
            if !is_stale(&tmp, pid, true) {
                return Err(refuse(
                    &self.shown,
                    "another export to this folder is running in this process",
                ));
            }
            fs::remove_dir_all(&tmp).map_err(|e| ExportError::io(&tmp, e))?;
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        active().insert(id, tmp.clone());
        let mut staging = Staging {
            dest: self.clone(),
            tmp: tmp.clone(),
            id,
            lock: None,
            notes,
            done: false,
        };
        fs::create_dir(&tmp).map_err(|e| ExportError::io(&tmp, e))?;
        staging.lock = Some(create_lock(&tmp.join(LOCK_FILE), pid)?);
        Ok(staging)
    }

    /// Removes `.NAME.partial-PID` and `.NAME.replaced-PID` folders whose process is gone (never a live one), and
    /// puts an old export back when an interrupted swap left OUT missing.
    fn clean_stale(&self) -> Vec<String> {
        let mut notes = Vec::new();
        let Ok(entries) = fs::read_dir(&self.parent) else {
            return notes;
        };
        let mut prefix = OsString::from(".");
        prefix.push(&self.name);
        let prefix = prefix.to_string_lossy().into_owned();
        let own = std::process::id();
        for entry in entries.filter_map(|e| e.ok()) {
            let file_name = entry.file_name();
            let Some(rest) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .map(str::to_owned)
            else {
                continue;
            };
            let (kind, pid) = match rest.rsplit_once('-') {
                Some((".partial", pid)) => ("partial", pid),
                Some((".replaced", pid)) => ("replaced", pid),
                _ => continue,
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            let path = entry.path();
            if pid == own || !is_stale(&path, pid, kind == "partial") {
                continue;
            }
            let out = self.path();
            if kind == "replaced" && fs::symlink_metadata(&out).is_err() {
                match fs::rename(&path, &out) {
                    Ok(()) => notes.push(format!(
                        "restored the previous export {} from {} (an export by process {pid} was interrupted while replacing it)",
                        self.shown.display(),
                        path.display()
                    )),
                    Err(e) => notes.push(format!(
                        "{} holds the previous export of {} (process {pid} was interrupted while replacing it), and it could not be put back: {e}",
                        path.display(),
                        self.shown.display()
                    )),
                }
                continue;
            }
            match remove_dir_all_quiet(&path) {
                Ok(()) => notes.push(format!(
                    "removed {}, left by an interrupted export (process {pid})",
                    path.display()
                )),
                Err(e) => notes.push(format!(
                    "could not remove {}, left by an interrupted export (process {pid}): {e}",
                    path.display()
                )),
            }
        }
        notes
    }
}

/// OUT made absolute with symlinks, `.` and `..` resolved as far as it exists (the rest is applied lexically). A
/// symlink at OUT itself is kept, not followed, so that [`Destination::check_existing`] sees it.
fn resolve(out: &Path) -> Result<PathBuf, ExportError> {
    let abs = std::path::absolute(out).map_err(|e| ExportError::io(out, e))?;
    let out_is_link = fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink());
    for ancestor in abs.ancestors() {
        let existing = if out_is_link && ancestor == abs {
            false
        } else {
            fs::symlink_metadata(ancestor).is_ok()
        };
        if !existing {
            continue;
        }
        let mut path = ancestor
            .canonicalize()
            .map_err(|e| ExportError::io(out, e))?;
        let rest = abs.strip_prefix(ancestor).expect("an ancestor is a prefix");
        for component in rest.components() {
            match component {
                Component::Normal(c) => path.push(c),
                Component::ParentDir => {
                    path.pop();
                }
                _ => {}
            }
        }
        return Ok(path);
    }
    Ok(abs)
}

/// A temporary export folder. Dropped without [`Staging::commit`], it is removed.
#[derive(Debug)]
pub struct Staging {
    dest: Destination,
    tmp: PathBuf,
    id: u64,
    /// The open, `flock`ed lock file (the lock goes with the process).
    lock: Option<File>,
    notes: Vec<String>,
    done: bool,
}

impl Staging {
    /// The folder to write the export into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Puts the finished export in place of OUT. OUT is checked again (it may have changed while the export ran).
    /// Returns notes on what was cleaned up or could not be.
    pub fn commit(mut self) -> Result<Vec<String>, ExportError> {
        let lock_path = self.tmp.join(LOCK_FILE);
        fs::remove_file(&lock_path).map_err(|e| ExportError::io(&lock_path, e))?;
        let out = self.dest.path();
        let mut notes = std::mem::take(&mut self.notes);
        // Concurrent exports to the same OUT swap one at a time; a signal waits until the swap is over.
        let result = {
            let _folder = lock_folder(&self.dest.parent);
            let mut registry = active();
            let result = self.swap(&out, &mut notes);
            if result.is_ok() {
                self.done = true;
                registry.remove(&self.id);
            }
            result
        };
        result.map(|()| notes)
    }

    fn swap(&self, out: &Path, notes: &mut Vec<String>) -> Result<(), ExportError> {
        if !self.dest.check_existing()? {
            return rename_noreplace(&self.tmp, out)
                .map_err(|e| ExportError::io(&self.dest.shown, e));
        }
        match exchange(&self.tmp, out) {
            Ok(()) => {
                // The old export now sits at the temporary path.
                if let Err(e) = remove_dir_all_quiet(&self.tmp) {
                    notes.push(format!(
                        "could not remove the previous export, now in {}: {e}",
                        self.tmp.display()
                    ));
                }
                Ok(())
            }
            Err(_) => self.swap_by_renames(out, notes),
        }
    }

    /// The swap where the OS cannot exchange two folders atomically: OUT → `.NAME.replaced-PID`, the new folder →
    /// OUT, then the old one removed. A failure in between puts the old export back; a kill in between is repaired
    /// by the next export ([`Destination::clean_stale`]).
    fn swap_by_renames(&self, out: &Path, notes: &mut Vec<String>) -> Result<(), ExportError> {
        let old = self.dest.sibling("replaced", std::process::id());
        fs::rename(out, &old).map_err(|e| ExportError::io(&self.dest.shown, e))?;
        if let Err(e) = fs::rename(&self.tmp, out) {
            let _ = fs::rename(&old, out);
            return Err(ExportError::io(&self.dest.shown, e));
        }
        if let Err(e) = remove_dir_all_quiet(&old) {
            notes.push(format!(
                "could not remove the previous export, now in {}: {e}",
                old.display()
            ));
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let mut registry = active();
        if !self.done {
            let _ = remove_dir_all_quiet(&self.tmp);
        }
        registry.remove(&self.id);
        drop(self.lock.take());
    }
}

/// `.NAME.partial-PID` beside OUT: the temporary folder this process writes an export to OUT into.
pub fn temp_dir_path(out: &Path) -> PathBuf {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    parent.join(format!(".{name}.partial-{}", std::process::id()))
}

/// Removes the temporary folders of this process's running exports: what a signal handler calls before exiting.
/// Waits for a swap in progress to finish. Returns how many folders it removed.
pub fn remove_partial_folders() -> usize {
    let mut registry = active();
    let mut removed = 0;
    for tmp in registry.values() {
        if fs::symlink_metadata(tmp).is_ok() && remove_dir_all_quiet(tmp).is_ok() {
            removed += 1;
        }
    }
    registry.clear();
    removed
}

/// Set by the SIGBUS handler: the signal thread then exits with status 1 instead of 128 + signal.
#[cfg(unix)]
static SOURCE_CHANGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// SIGBUS: a memory-mapped source file was truncated under us, between the size check of
/// `gemma_models::Checkpoint::tensor` and the read. Returning would fault again, and the clean-up is not
/// async-signal-safe, so the handler says what happened, hands the clean-up to the signal thread by raising
/// SIGTERM, and waits for it to end the process.
#[cfg(unix)]
extern "C" fn on_sigbus(_: libc::c_int) {
    const MSG: &[u8] = b"\nerror: a source file shrank while it was being read (SIGBUS); let the download or copy \
finish, then export again\n";
    SOURCE_CHANGED.store(true, Ordering::SeqCst);
    // SAFETY: write, raise and pause are async-signal-safe.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::raise(libc::SIGTERM);
        loop {
            libc::pause();
        }
    }
}

/// Removes the temporary folder on SIGINT, SIGTERM and SIGHUP, says so on stderr, and exits with 128 + the signal
/// number; a SIGBUS (a source file truncated while mapped) removes it too and exits with 1. For binaries; call
/// once at start.
#[cfg(unix)]
pub fn remove_partial_on_signals() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    // SAFETY: installs a handler that only calls async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    std::thread::Builder::new()
        .name("export-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let removed = remove_partial_folders();
                if SOURCE_CHANGED.load(Ordering::SeqCst) {
                    std::process::exit(1);
                }
                let what = if removed > 0 {
                    "the partial export was removed"
                } else {
                    "nothing was left behind"
                };
                let _ = writeln!(io::stderr(), "\ninterrupted: {what}");
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// Elsewhere Ctrl-C is all there is.
#[cfg(not(unix))]
pub fn remove_partial_on_signals() -> io::Result<()> {
    ctrlc::set_handler(|| {
        remove_partial_folders();
        let _ = writeln!(io::stderr(), "\ninterrupted: nothing was written");
        std::process::exit(130);
    })
    .map_err(io::Error::other)
}

/// `remove_dir_all` that treats an already-missing folder as removed (another exporter may be cleaning it too) and
/// retries while files appear in it (a writer thread still running when a signal arrives).
fn remove_dir_all_quiet(path: &Path) -> io::Result<()> {
    let mut last = Ok(());
    for _ in 0..5 {
        last = match fs::remove_dir_all(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other,
        };
        if last.is_ok() {
            return Ok(());
        }
    }
    last
}

/// Writes the PID to `path` and takes an exclusive `flock` on it, held until the file is closed or the process
/// ends (so a killed exporter releases it).
fn create_lock(path: &Path, pid: u32) -> Result<File, ExportError> {
    let mut file = File::create(path).map_err(|e| ExportError::io(path, e))?;
    writeln!(file, "{pid}").map_err(|e| ExportError::io(path, e))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(ExportError::io(path, io::Error::last_os_error()));
        }
    }
    Ok(file)
}

/// Whether the temporary folder `dir` of process `pid` is stale. A folder with our lock file is stale when nobody
/// holds its lock; one without (an old export moved aside, or a process killed before it wrote the lock) when the
/// process is gone. Anything unknown counts as live: never remove a live export's folder.
fn is_stale(dir: &Path, pid: u32, may_have_lock: bool) -> bool {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let lock = dir.join(LOCK_FILE);
        if may_have_lock {
            if let Ok(file) = File::open(&lock) {
                // SAFETY: flock on a file descriptor we own; closing it releases the probe lock.
                return unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }
                    == 0;
            }
        }
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        !alive
    }
    #[cfg(not(unix))]
    {
        let _ = (dir, pid, may_have_lock);
        false
    }
}

/// An exclusive `flock` on a folder, released when dropped; exports to the same folder clean up and swap one at a
/// time. Best effort: where folders cannot be locked, the exports go on unlocked.
fn lock_folder(dir: &Path) -> Option<File> {
    let file = File::open(dir).ok()?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a file descriptor we own; blocks only while another export swaps or cleans up.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return None;
        }
    }
    Some(file)
}

/// Swaps two paths atomically (`renameat2(RENAME_EXCHANGE)`); an error where the OS or file system cannot.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        renameat2(a, b, libc::RENAME_EXCHANGE)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (a, b);
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
}

/// Renames `from` to `to`, failing if `to` appeared meanwhile (`RENAME_NOREPLACE` where available; a plain rename,
/// which still refuses a non-empty folder, elsewhere).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        match renameat2(from, to, libc::RENAME_NOREPLACE) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                fs::rename(from, to)
            }
            other => other,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        fs::rename(from, to)
    }
}

#[cfg(target_os = "linux")]
fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: two valid NUL-terminated paths, relative to the current folder.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
