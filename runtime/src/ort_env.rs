//! Finding and loading the ONNX Runtime shared library (ort's `load-dynamic`), the process-wide ort environment,
//! execution providers and session creation.
//!
//! Where the library is looked for, in order:
//! 1. `$ORT_DYLIB_PATH`, when set and not empty. It is then the only candidate: an explicit choice that points at
//!    nothing is an error, not a reason to silently load another library.
//! 2. `${GEMMA_ONNX_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/gemma-onnx}/onnxruntime/libonnxruntime.so`, where
//!    `scripts/setup-ort` installs it.
//! 3. Beside the current executable.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
#[allow(unused_imports)]
use ort::ep::{self, ExecutionProvider as _, ExecutionProviderDispatch};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;

use crate::error::{Error, Result};

/// File name of the library on this platform (`libonnxruntime.so`, `libonnxruntime.dylib`, `onnxruntime.dll`).
pub fn library_file_name() -> String {
    format!(
        "{}onnxruntime{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// `${GEMMA_ONNX_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/gemma-onnx}` (empty variables count as unset, like the
/// shell's `:-`). `None` when none of these variables is set.
pub fn gemma_onnx_home() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = var("GEMMA_ONNX_HOME") {
        return Some(home);
    }
    let data =
        var("XDG_DATA_HOME").or_else(|| var("HOME").map(|h| h.join(".local").join("share")))?;
    Some(data.join("gemma-onnx"))
}

/// The places looked at, in order (see the module docs).
pub fn library_candidates() -> Vec<PathBuf> {
    if let Some(explicit) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(explicit);
        return vec![std::path::absolute(&p).unwrap_or(p)];
    }
    let mut out = Vec::new();
    if let Some(home) = gemma_onnx_home() {
        out.push(home.join("onnxruntime").join(library_file_name()));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(library_file_name()));
    }
    out
}

/// The first candidate that exists, or [`Error::OrtNotFound`] listing every path tried.
pub fn find_library() -> Result<PathBuf> {
    let tried = library_candidates();
    tried
        .iter()
        .find(|p| p.exists())
        .cloned()
        .ok_or(Error::OrtNotFound { tried })
}

#[derive(Clone)]
enum InitFailure {
    NotFound(Vec<PathBuf>),
    Load(PathBuf, String),
}

struct Loaded {
    env: Environment,
    path: PathBuf,
}

static ENV: OnceLock<Result<Loaded, InitFailure>> = OnceLock::new();

/// Loads the library (once per process) and returns the ort environment every session is created in.
/// Later calls return the same environment, or the same error.
pub fn environment() -> Result<&'static Environment> {
    loaded().map(|l| &l.env)
}

/// The path the library was loaded from (after a successful [`environment`]).
pub fn library_path() -> Result<&'static Path> {
    loaded().map(|l| l.path.as_path())
}

fn loaded() -> Result<&'static Loaded> {
    match ENV.get_or_init(init) {
        Ok(l) => Ok(l),
        Err(InitFailure::NotFound(tried)) => Err(Error::OrtNotFound {
            tried: tried.clone(),
        }),
        Err(InitFailure::Load(path, reason)) => Err(Error::OrtLoad {
            path: path.clone(),
            reason: reason.clone(),
        }),
    }
}

fn init() -> Result<Loaded, InitFailure> {
    let path = match find_library() {
        Ok(p) => p,
        Err(Error::OrtNotFound { tried }) => return Err(InitFailure::NotFound(tried)),
        Err(e) => return Err(InitFailure::Load(PathBuf::new(), e.to_string())),
    };
    if path.is_dir() {
        return Err(InitFailure::Load(
            path,
            "this is a folder, not the library file".into(),
        ));
    }
    // ort reports a bad dylib as an error from `init_from`, but some paths (a library whose API table is missing)
    // assert instead: turn any panic into the same error.
    let result = quietly_catch_unwind(|| -> Result<Environment, String> {
        let builder = ort::init_from(&path).map_err(|e| describe_load_error(&e))?;
        builder
            .with_name("gemma-onnx")
            .build()
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(Ok(env)) => Ok(Loaded { env, path }),
        Ok(Err(reason)) => Err(InitFailure::Load(path, reason)),
        Err(panic_msg) => Err(InitFailure::Load(path, panic_msg)),
    }
}

/// ort's load error, with the dynamic loader's own message (`invalid ELF header`...) when there is one.
fn describe_load_error(e: &ort::LoadDynamicError) -> String {
    match e {
        ort::LoadDynamicError::Dlopen { error, .. } => {
            let mut s = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
        other => other.to_string(),
    }
}

/// Runs `f`, turning a panic into `Err(message)` without printing the default panic report.
fn quietly_catch_unwind<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static HOOK_LOCK: Mutex<()> = Mutex::new(());
    let _guard = HOOK_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let previous = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    panic::set_hook(previous);
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "ONNX Runtime panicked while loading".into())
    })
}

/// Where a session runs. Non-CPU providers need the matching cargo feature (`cuda`, `tensorrt`, `coreml`) and an
/// ONNX Runtime library built with them (`scripts/setup-ort --gpu` for CUDA/TensorRT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
    CoreMl,
}

impl ExecutionProvider {
    pub const ALL: [ExecutionProvider; 4] = [Self::Cpu, Self::Cuda, Self::TensorRt, Self::CoreMl];

    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::CoreMl => "coreml",
        }
    }

    /// Whether this build of gemma-runtime was compiled with the cargo feature for this provider.
    pub fn compiled_in(self) -> bool {
        match self {
            Self::Cpu => true,
            Self::Cuda => cfg!(feature = "cuda"),
            Self::TensorRt => cfg!(feature = "tensorrt"),
            Self::CoreMl => cfg!(feature = "coreml"),
        }
    }

    fn error(self, reason: impl Into<String>) -> Error {
        Error::ExecutionProvider {
            provider: self.name().into(),
            reason: reason.into(),
        }
    }

    /// The ort dispatch list for this provider (empty for CPU, which is always there). Checks that the loaded ONNX
    /// Runtime library has the provider, so a CPU-only library gives a clear error rather than a silent fallback.
    fn dispatch(self) -> Result<Vec<ExecutionProviderDispatch>> {
        if !self.compiled_in() {
            return Err(self.error(format!(
                "this build of gemma-runtime has no `{0}` support; rebuild with `--features {0}`",
                self.name()
            )));
        }
        match self {
            Self::Cpu => Ok(Vec::new()),
            #[cfg(feature = "cuda")]
            Self::Cuda => {
                self.check_available(ep::CUDA::is_available(), "CUDAExecutionProvider")?;
                Ok(vec![ep::CUDA::default().build().error_on_failure()])
            }
            #[cfg(feature = "tensorrt")]
            Self::TensorRt => {
                self.check_available(ep::TensorRT::is_available(), "TensorrtExecutionProvider")?;
                // Nodes TensorRT cannot take go to the CPU (or to CUDA, when that feature is on too).
                #[allow(unused_mut)]
                let mut eps = vec![ep::TensorRT::default().build().error_on_failure()];
                #[cfg(feature = "cuda")]
                eps.push(ep::CUDA::default().build());
                Ok(eps)
            }
            #[cfg(feature = "coreml")]
            Self::CoreMl => {
                self.check_available(ep::CoreML::is_available(), "CoreMLExecutionProvider")?;
                Ok(vec![ep::CoreML::default().build().error_on_failure()])
            }
            #[allow(unreachable_patterns)]
            _ => Err(self.error("not compiled into this build")),
        }
    }

    #[allow(dead_code)]
    fn check_available(self, available: ort::Result<bool>, ort_name: &str) -> Result<()> {
        match available {
            Ok(true) => Ok(()),
            Ok(false) => Err(self.error(format!(
                "the ONNX Runtime library at {} was built without {ort_name}; install a build that has it \
                 (`scripts/setup-ort --gpu` for CUDA/TensorRT) or set ORT_DYLIB_PATH",
                library_path().map(|p| p.display().to_string()).unwrap_or_default()
            ))),
            Err(e) => Err(self.error(e.to_string())),
        }
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ExecutionProvider {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "tensorrt" | "trt" => Ok(Self::TensorRt),
            "coreml" => Ok(Self::CoreMl),
            _ => Err(Error::InvalidArgument(format!(
                "unknown execution provider `{s}` (expected one of: cpu, cuda, tensorrt, coreml)"
            ))),
        }
    }
}

/// How sessions are created.
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    pub execution_provider: ExecutionProvider,
    /// Threads used inside one operator. `None`: all logical cores.
    pub intra_threads: Option<usize>,
    /// Let ONNX Runtime run on the CPU the nodes a non-CPU provider cannot take (`--allow-fallback`). Off by
    /// default: [`create_session`] then refuses such an export ([`crate::ep_support`]).
    pub allow_fallback: bool,
}

impl RuntimeOptions {
    pub fn cpu() -> Self {
        Self::default()
    }

    pub fn with_threads(mut self, threads: Option<usize>) -> Self {
        self.intra_threads = threads;
        self
    }

    pub fn with_execution_provider(mut self, ep: ExecutionProvider) -> Self {
        self.execution_provider = ep;
        self
    }

    pub fn with_allow_fallback(mut self, allow: bool) -> Self {
        self.allow_fallback = allow;
        self
    }

    /// The thread count actually used.
    pub fn resolved_threads(&self) -> usize {
        self.intra_threads.filter(|&n| n > 0).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
}

/// Environment variable: when set to a path prefix, every session records an ONNX Runtime profile (per-node kernel
/// times, chrome://tracing JSON) written as `<prefix>_<date>.json` when the session closes. For finding which ops
/// take the time, e.g. `GEMMA_ORT_PROFILE=/tmp/prof gemma bench -m DIR --repeat 1`.
pub const PROFILE_ENV: &str = "GEMMA_ORT_PROFILE";

/// Environment variable: `key=value` session config entries of ONNX Runtime, separated by `;`, added to every
/// session, for measuring session options without a rebuild (docs/benchmarks.md), e.g.
/// `GEMMA_ORT_CONFIG="session.intra_op.allow_spinning=0" gemma bench -m DIR`.
pub const CONFIG_ENV: &str = "GEMMA_ORT_CONFIG";

/// The entries of [`CONFIG_ENV`]; an entry without `=` is an error (a typo would otherwise measure nothing).
fn config_entries(value: &str) -> Result<Vec<(&str, &str)>> {
    value
        .split(';')
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("{CONFIG_ENV}: `{e}` is not key=value"))
                })
        })
        .collect()
}

/// Creates an ONNX Runtime session for `model` (loading the library first if needed). With a non-CPU provider and
/// without [`RuntimeOptions::allow_fallback`], the graph is first checked against the provider
/// ([`crate::ep_support::check`]) and ONNX Runtime is told not to place any node on the CPU
/// (`session.disable_cpu_ep_fallback`), so the session either runs wholly on the provider or is not created.
pub fn create_session(model: &Path, options: &RuntimeOptions) -> Result<Session> {
    let env = environment()?;
    let provider = options.execution_provider;
    let eps = provider.dispatch()?;
    let strict = provider != ExecutionProvider::Cpu && !options.allow_fallback;
    if strict {
        crate::ep_support::check(model, provider)?;
    }
    let ctx = || format!("creating an ONNX Runtime session for {}", model.display());
    let builder = Session::builder(env)
        .map_err(|e| Error::ort(ctx(), e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| Error::ort(ctx(), e))?
        .with_intra_threads(options.resolved_threads())
        .map_err(|e| Error::ort(ctx(), e))?
        // ONNX Runtime's memory patterns are cached per set of input shapes, forever. A decoder's shapes change at
        // every step (the mask grows by one), so the cache grew by a plan per token (~22 KiB on Gemma 3 270M) and a
        // plan was never reused. The arena still recycles the buffers.
        .with_memory_pattern(false)
        .map_err(|e| Error::ort(ctx(), e))?;
    let builder = match std::env::var_os(PROFILE_ENV).filter(|v| !v.is_empty()) {
        Some(prefix) => builder
            .with_profiling(PathBuf::from(prefix))
            .map_err(|e| Error::ort(ctx(), e))?,
        None => builder,
    };
    let mut builder = builder;
    if let Some(config) = std::env::var(CONFIG_ENV).ok().filter(|v| !v.is_empty()) {
        for (key, value) in config_entries(&config)? {
            builder = builder
                .with_config_entry(key, value)
                .map_err(|e| Error::ort(ctx(), e))?;
        }
    }
    let builder = if strict {
        builder
            .with_disable_cpu_fallback()
            .map_err(|e| Error::ort(ctx(), e))?
    } else {
        builder
    };
    let mut builder = if eps.is_empty() {
        builder
    } else {
        builder
            .with_execution_providers(eps)
            .map_err(|e| options.execution_provider.error(e.to_string()))?
    };
    let session = builder
        .commit_from_file(model)
        .map_err(|e| Error::ort(ctx(), e))?;
    // Loading has pre-packed the weights: the file pages it touched need not stay resident.
    crate::resident::trim_weight_mappings();
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_entries_are_key_value_pairs() {
        let got = config_entries("session.intra_op.allow_spinning=0; a.b = 1;").unwrap();
        assert_eq!(
            got,
            vec![("session.intra_op.allow_spinning", "0"), ("a.b", "1")]
        );
        assert!(config_entries("allow_spinning").is_err());
        assert!(config_entries("").unwrap().is_empty());
    }
}
