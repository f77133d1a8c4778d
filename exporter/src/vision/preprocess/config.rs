//! The Gemma 3 image processor's settings that `preprocess.onnx` bakes in (semantics §6.1).
//!
//! transformers 5.x reads them from the `image_processor` object nested in `processor_config.json` when there is
//! one, else from `preprocessor_config.json` (`image_processing_base.py: get_image_processor_dict`), and we do the
//! same. JSON `null`s and absent keys take the values of `Gemma3Processor.images_kwargs` and of the image
//! processor class (`do_pan_and_scan` False, min crop 256, max 4 crops, ratio 1.2, bilinear, 1/255, mean/std 0.5).
//! Without either file the output size is the vision tower's `image_size` (the class default 224 would not fit
//! the encoder anyway).

use crate::ExportError;
use serde_json::{Map, Value};
use std::path::Path;

/// `processor_config.json`: the processor; in transformers 5.x it nests the image processor's settings.
pub const PROCESSOR_CONFIG_FILE: &str = "processor_config.json";
/// `preprocessor_config.json`: the image processor's settings (hub checkpoints, transformers 4.x).
pub const PREPROCESSOR_CONFIG_FILE: &str = "preprocessor_config.json";

use gemma_models::contract::PIL_BICUBIC;
use gemma_models::family::{VisionSpec, VisionSystem};
/// Largest output side accepted: far above any released model (896), small enough for int32 arithmetic.
const MAX_SIDE: usize = 16384;
/// The most Pan & Scan crops per image (Gemma 3 uses 4); each crop costs an encoder pass and 256 tokens.
const MAX_CROPS: usize = 64;

/// What the graph computes, with the processor's defaults applied: part of the manifest (`vision.preprocess`).
pub use gemma_models::contract::PreprocessConfig;

/// How gemma-export derives [`PreprocessConfig`] from a checkpoint's processor files, and the limits it checks.
pub trait ReadPreprocessConfig: Sized {
    /// Reads the settings of checkpoint folder `dir` (see the module docs for which file wins);
    /// `default_size` (the vision tower's `image_size`) is the output size when neither file gives one.
    fn from_dir(dir: &Path, default_size: usize) -> Result<Self, ExportError>;

    /// The settings of a Gemma3ForConditionalGeneration checkpoint folder, checked against its vision tower: the
    /// encoder takes `image_size`² images only.
    fn for_checkpoint(dir: &Path, vision: &gemma_models::VisionConfig)
        -> Result<Self, ExportError>;

    /// Parses one image-processor object; `path` names the file in error messages.
    fn from_json(
        v: &Value,
        default_size: usize,
        path: &Path,
        source: &str,
    ) -> Result<Self, ExportError>;

    /// Range checks, so that the graph never divides by zero or overflows its int32 sums.
    fn validate(&self) -> Result<(), String>;
}

/// What a processor file is checked against: the image processor class and its only resample filter.
pub struct ProcessorRules<'a> {
    /// The model in messages.
    pub display: &'a str,
    /// The `image_processor_type` prefix accepted.
    pub image_processor: &'a str,
    pub resample_default: i64,
}

impl<'a> From<&'a VisionSpec> for ProcessorRules<'a> {
    fn from(spec: &'a VisionSpec) -> Self {
        ProcessorRules {
            display: spec.display,
            image_processor: spec.image_processor,
            resample_default: spec.resample_default,
        }
    }
}

/// Gemma 3n's image processor (docs/gemma3n-vision.md): SiglipImageProcessor, which is Gemma 3's without Pan &
/// Scan, bilinear in the released checkpoints. Read as [`ReadPreprocessConfig::from_dir`] does, defaults
/// `default_size` and Gemma 3's.
pub fn gemma3n_from_dir(dir: &Path, default_size: usize) -> Result<PreprocessConfig, ExportError> {
    let rules = ProcessorRules {
        display: "Gemma 3n",
        image_processor: "SiglipImageProcessor",
        resample_default: 2,
    };
    let base = PreprocessConfig::gemma3_defaults(default_size);
    Ok(from_dir_over(dir, &base, &rules)?.unwrap_or(base))
}

/// [`ReadPreprocessConfig::from_dir`] over `base` (the defaults of absent keys); `None` without either file.
fn from_dir_over(
    dir: &Path,
    base: &PreprocessConfig,
    spec: &ProcessorRules<'_>,
) -> Result<Option<PreprocessConfig>, ExportError> {
    let processor = dir.join(PROCESSOR_CONFIG_FILE);
    if processor.is_file() {
        let v = read_json(&processor)?;
        if let Some(nested) = v.get("image_processor") {
            let source = format!("{PROCESSOR_CONFIG_FILE}#image_processor");
            return from_json_over(nested, base.clone(), spec, &processor, &source).map(Some);
        }
    }
    let preprocessor = dir.join(PREPROCESSOR_CONFIG_FILE);
    if preprocessor.is_file() {
        let v = read_json(&preprocessor)?;
        let source = PREPROCESSOR_CONFIG_FILE;
        return from_json_over(&v, base.clone(), spec, &preprocessor, source).map(Some);
    }
    Ok(None)
}

impl ReadPreprocessConfig for PreprocessConfig {
    fn from_dir(dir: &Path, default_size: usize) -> Result<PreprocessConfig, ExportError> {
        let base = PreprocessConfig::gemma3_defaults(default_size);
        Ok(from_dir_over(dir, &base, &VisionSystem::Gemma3.spec().into())?.unwrap_or(base))
    }

    /// The vision system decides the resample filter of a file that names none (SigLIP's is bicubic), and whether
    /// the files may be absent (PaliGemma's may not: the error names the file looked for).
    fn for_checkpoint(
        dir: &Path,
        vision: &gemma_models::VisionConfig,
    ) -> Result<PreprocessConfig, ExportError> {
        let spec = vision.system.spec();
        let base = PreprocessConfig {
            resample: spec.resample_default,
            ..PreprocessConfig::gemma3_defaults(vision.image_size)
        };
        let c = match from_dir_over(dir, &base, &spec.into())? {
            Some(c) => c,
            None if spec.processor_files_required => {
                return Err(ExportError::ProcessorConfig {
                    path: dir.join(PREPROCESSOR_CONFIG_FILE),
                    reason: format!(
                        "not found (nor {PROCESSOR_CONFIG_FILE}): a {} checkpoint needs its processor files \
                         (save the processor with save_pretrained beside the model)",
                        spec.display
                    ),
                })
            }
            None => base,
        };
        let s = vision.image_size;
        if (c.height, c.width) != (s, s) {
            // `source` is "processor_config.json#image_processor" or "preprocessor_config.json" here (without
            // either file the size is the tower's).
            let file = c.source.as_deref().unwrap_or_default();
            return Err(ExportError::ProcessorConfig {
                path: dir.join(file.split('#').next().unwrap_or(file)),
                reason: format!(
                    "size is {}x{} but the vision tower takes {s}x{s} images (config.json vision_config.image_size)",
                    c.height, c.width
                ),
            });
        }
        Ok(c)
    }

    fn from_json(
        v: &Value,
        default_size: usize,
        path: &Path,
        source: &str,
    ) -> Result<PreprocessConfig, ExportError> {
        let base = PreprocessConfig::gemma3_defaults(default_size);
        from_json_over(v, base, &VisionSystem::Gemma3.spec().into(), path, source)
    }

    fn validate(&self) -> Result<(), String> {
        validate(self)
    }
}

/// [`ReadPreprocessConfig::from_json`] with `base` for absent keys, for the image processor class of `spec`.
fn from_json_over(
    v: &Value,
    base: PreprocessConfig,
    spec: &ProcessorRules<'_>,
    path: &Path,
    source: &str,
) -> Result<PreprocessConfig, ExportError> {
    let err = |reason: String| ExportError::ProcessorConfig {
        path: path.to_path_buf(),
        reason,
    };
    let obj = v
        .as_object()
        .ok_or_else(|| err("expected a JSON object".into()))?;
    let f = Fields { obj, err: &err };
    let mut c = base;
    c.source = Some(source.to_string());

    if let Some(t) = f.str("image_processor_type")? {
        if !t.starts_with(spec.image_processor) {
            return Err(err(format!(
                "image_processor_type is {t}; preprocess.onnx implements {} only ({} checkpoints)",
                spec.image_processor, spec.display
            )));
        }
    }
    if f.bool("do_resize")? == Some(false) {
        return Err(err(
            "do_resize is false: Gemma 3 images must be resized to the encoder's size".into(),
        ));
    }
    if f.bool("do_rescale")? == Some(false) {
        return Err(err(
            "do_rescale is false: unsupported (Gemma 3 rescales by 1/255)".into(),
        ));
    }
    if let Some(r) = f.int("resample")? {
        let want = spec.resample_default;
        if r != want {
            let name = if want == PIL_BICUBIC {
                "BICUBIC"
            } else {
                "BILINEAR"
            };
            return Err(err(format!(
                "resample is {r}; only {want} (PIL {name}, {}'s filter) is implemented",
                spec.display
            )));
        }
        c.resample = r;
    }
    if let Some(size) = obj.get("size").filter(|s| !s.is_null()) {
        let (h, w) = parse_size(size).map_err(err)?;
        c.height = h;
        c.width = w;
    }
    if let Some(r) = f.num("rescale_factor")? {
        c.rescale_factor = r;
    }
    if let Some(b) = f.bool("do_normalize")? {
        c.do_normalize = b;
    }
    if let Some(m) = f.triple("image_mean")? {
        c.image_mean = m;
    }
    if let Some(s) = f.triple("image_std")? {
        c.image_std = s;
    }
    if let Some(b) = f.bool("do_pan_and_scan")? {
        c.do_pan_and_scan = b;
    }
    if let Some(n) = f.int("pan_and_scan_min_crop_size")? {
        c.pan_and_scan_min_crop_size = positive(n, "pan_and_scan_min_crop_size").map_err(err)?;
    }
    if let Some(n) = f.int("pan_and_scan_max_num_crops")? {
        c.pan_and_scan_max_num_crops = positive(n, "pan_and_scan_max_num_crops").map_err(err)?;
    }
    if let Some(r) = f.num("pan_and_scan_min_ratio_to_activate")? {
        c.pan_and_scan_min_ratio_to_activate = r;
    }
    validate(&c).map_err(err)?;
    Ok(c)
}

/// Range checks, so that the graph never divides by zero or overflows its int32 sums.
fn validate(c: &PreprocessConfig) -> Result<(), String> {
    for (name, side) in [("size.height", c.height), ("size.width", c.width)] {
        if side == 0 || side > MAX_SIDE {
            return Err(format!("{name} is {side}; expected 1..={MAX_SIDE}"));
        }
    }
    if !(c.rescale_factor.is_finite() && c.rescale_factor > 0.0) {
        return Err(format!(
            "rescale_factor is {}; expected a positive number",
            c.rescale_factor
        ));
    }
    if c.image_std.iter().any(|s| !s.is_finite() || *s == 0.0) {
        return Err(format!(
            "image_std is {:?}; expected non-zero numbers",
            c.image_std
        ));
    }
    if c.image_mean.iter().any(|m| !m.is_finite()) {
        return Err(format!(
            "image_mean is {:?}; expected numbers",
            c.image_mean
        ));
    }
    let r = c.pan_and_scan_min_ratio_to_activate;
    if !(r.is_finite() && r > 0.0) {
        return Err(format!(
            "pan_and_scan_min_ratio_to_activate is {r}; expected a positive number"
        ));
    }
    if c.pan_and_scan_max_num_crops > MAX_CROPS || c.pan_and_scan_min_crop_size > MAX_SIDE {
        return Err(format!(
                "pan_and_scan_max_num_crops is {} and pan_and_scan_min_crop_size {}; the limits are {MAX_CROPS} \
                 crops and {MAX_SIDE} pixels",
                c.pan_and_scan_max_num_crops, c.pan_and_scan_min_crop_size
            ));
    }
    if c.pan_and_scan_min_crop_size == 0 || c.pan_and_scan_max_num_crops == 0 {
        return Err("pan_and_scan_min_crop_size and pan_and_scan_max_num_crops must be ≥ 1".into());
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value, ExportError> {
    let text =
        gemma_models::files::read_regular_to_string(path, gemma_models::files::MAX_JSON_BYTES)
            .map_err(|e| ExportError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ExportError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// `{"height": h, "width": w}` (Gemma 3), or a plain number for a square.
fn parse_size(v: &Value) -> Result<(usize, usize), String> {
    let side = |x: Option<&Value>, key: &str| -> Result<usize, String> {
        x.and_then(Value::as_u64)
            .map(|n| n as usize)
            .ok_or_else(|| format!("size.{key} must be a positive integer, got {v}"))
    };
    match v {
        Value::Number(n) => {
            let s = n.as_u64().ok_or_else(|| format!("size must be a positive integer, got {v}"))?;
            Ok((s as usize, s as usize))
        }
        Value::Object(o) if o.contains_key("height") || o.contains_key("width") => {
            Ok((side(o.get("height"), "height")?, side(o.get("width"), "width")?))
        }
        _ => Err(format!(
            "size is {v}; preprocess.onnx needs {{\"height\": H, \"width\": W}} (Gemma 3 resizes without keeping \
             the aspect ratio)"
        )),
    }
}

fn positive(n: i64, key: &str) -> Result<usize, String> {
    if n >= 1 {
        Ok(n as usize)
    } else {
        Err(format!("{key} is {n}; expected ≥ 1"))
    }
}

/// Typed access to optional keys; `null` counts as absent (the processor then uses its default).
struct Fields<'a, E: Fn(String) -> ExportError> {
    obj: &'a Map<String, Value>,
    err: &'a E,
}

impl<E: Fn(String) -> ExportError> Fields<'_, E> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    fn bad(&self, key: &str, what: &str) -> ExportError {
        (self.err)(format!("{key} must be {what}, got {}", self.obj[key]))
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ExportError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.bad(key, "true or false")))
            .transpose()
    }

    fn num(&self, key: &str) -> Result<Option<f64>, ExportError> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.bad(key, "a number")))
            .transpose()
    }

    /// An integer; `256.0` is accepted too (JSON written from Python floats).
    fn int(&self, key: &str) -> Result<Option<i64>, ExportError> {
        self.get(key)
            .map(|v| match (v.as_i64(), v.as_f64()) {
                (Some(i), _) => Ok(i),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(f as i64),
                _ => Err(self.bad(key, "an integer")),
            })
            .transpose()
    }

    fn str(&self, key: &str) -> Result<Option<&str>, ExportError> {
        self.get(key)
            .map(|v| v.as_str().ok_or_else(|| self.bad(key, "a string")))
            .transpose()
    }

    /// One number for all three channels, or a list of three.
    fn triple(&self, key: &str) -> Result<Option<[f64; 3]>, ExportError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let Some(x) = v.as_f64() {
            return Ok(Some([x; 3]));
        }
        match v
            .as_array()
            .map(|a| a.iter().map(Value::as_f64).collect::<Option<Vec<f64>>>())
        {
            Some(Some(a)) if a.len() == 3 => Ok(Some([a[0], a[1], a[2]])),
            _ => Err(self.bad(key, "a number or a list of 3 numbers")),
        }
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
