//! The export pipeline: validate the checkpoint, build the graphs while streaming weights into a temporary folder
//! beside the destination, copy the tokenizer and configs, write the manifest, then rename the folder into place.
//! A failed or interrupted export never leaves a folder that looks complete ([`crate::output`]).
//!
//! Gemma3ForConditionalGeneration checkpoints also get the image graphs of [`crate::vision`]; their tensors are
//! checked up front with the text ones. Portable exports keep their weights in the transformers.js layout of
//! [`crate::transformers_js`] (`onnx/`).

use crate::builder::{model, GraphBuilder};
use crate::decoder::DecoderInput;
use crate::gguf::SourceFiles;
use crate::half::HalfType;
use crate::layers::LinearKind;
use crate::manifest;
use crate::output;
use crate::quant::QuantConfig;
use crate::transformers_js::Layout;
use crate::triton::{TritonGraph, TritonOptions};
use crate::vision::preprocess::ReadPreprocessConfig;
use crate::vision::{self, VisionPlan};
use crate::weights::WeightWriter;
use crate::{decoder, ExportError};
use gemma_models::contract::{self, files, io, Manifest};
use gemma_models::{Checkpoint, ModelConfig};
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use std::fs;
use std::path::{Path, PathBuf};

pub use crate::output::temp_dir_path;

/// Weight precision of the export. Activations, norms, the residual stream and the KV cache are float32 in all
/// of them (semantics §9.2: Gemma's activations overflow fp16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Fp32,
    /// Weights stored as fp16, cast to fp32 in the graph ([`crate::half`]).
    Fp16,
    /// Weights stored as bf16, cast to fp32 in the graph.
    Bf16,
    /// Block-quantized weights, 8 bits by default ([`QuantConfig::int8`]).
    Int8(QuantConfig),
    /// Block-quantized weights, 4 bits by default ([`QuantConfig::int4`]).
    Int4(QuantConfig),
}

impl Precision {
    /// `--precision int4` with its default scheme.
    pub const INT4: Precision = Precision::Int4(QuantConfig::int4());
    /// `--precision int8` with its default scheme.
    pub const INT8: Precision = Precision::Int8(QuantConfig::int8());

    /// The manifest's `precision` (the scheme aside).
    pub fn kind(&self) -> contract::Precision {
        match self {
            Precision::Fp32 => contract::Precision::Fp32,
            Precision::Fp16 => contract::Precision::Fp16,
            Precision::Bf16 => contract::Precision::Bf16,
            Precision::Int8(_) => contract::Precision::Int8,
            Precision::Int4(_) => contract::Precision::Int4,
        }
    }

    /// `fp32`, `fp16`, `bf16`, `int8` or `int4`, as `--precision` takes it.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The quantization scheme, for int8/int4.
    pub fn quant(&self) -> Option<&QuantConfig> {
        match self {
            Precision::Int8(q) | Precision::Int4(q) => Some(q),
            _ => None,
        }
    }

    /// How linear layers and the embedding are expressed at this precision.
    pub fn linear_kind(&self) -> LinearKind {
        match *self {
            Precision::Fp32 => LinearKind::GemmF32,
            Precision::Fp16 => LinearKind::GemmHalf(HalfType::F16),
            Precision::Bf16 => LinearKind::GemmHalf(HalfType::Bf16),
            Precision::Int8(q) | Precision::Int4(q) => LinearKind::MatMulNBits(q),
        }
    }
}

/// Which text decoder graph an export holds: part of the contract with the runtime (manifest `graph`).
pub use gemma_models::contract::GraphKind;

/// What to export and where. [`ExportOptions::new`] gives the defaults of `gemma-export SRC -o OUT` (fp32, the cpu
/// graph, no `--force`, no progress bar, no adapter); the setters change one option each, so that a new option
/// needs no edit where the defaults do:
///
/// ```no_run
/// # use gemma_exporter::{ExportOptions, GraphKind, Precision};
/// let opts = ExportOptions::new("gemma-3-270m", "onnx/gemma-3-270m")
///     .precision(Precision::INT8)
///     .graph(GraphKind::Portable);
/// ```
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub src: PathBuf,
    pub out: PathBuf,
    pub precision: Precision,
    /// The text decoder graph. The image graphs of Gemma3ForConditionalGeneration are portable, except that int8/int4
    /// exports of the cpu graph write the vision encoder with ONNX Runtime's CPU kernels ([`crate::vision::kernels`]).
    pub graph: GraphKind,
    /// Replace `out` if it exists.
    pub force: bool,
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Export NaN/±inf weights instead of refusing them ([`crate::finite`]); recorded in the manifest.
    pub allow_nonfinite: bool,
    /// A PEFT LoRA adapter merged into the weights ([`gemma_models::lora`]).
    pub lora: Option<LoraOptions>,
    /// Also write a Triton model repository for the export ([`crate::triton`]).
    pub triton: Option<TritonOptions>,
    /// Export this MatFormer slice of a Gemma 3n checkpoint instead of the whole model ([`crate::matformer`]).
    pub matformer: Option<gemma_models::matformer::Spec>,
}

impl ExportOptions {
    /// Export `src` (a checkpoint folder or a GGUF file) to `out` with the defaults of `gemma-export SRC -o OUT`.
    pub fn new(src: impl Into<PathBuf>, out: impl Into<PathBuf>) -> ExportOptions {
        ExportOptions {
            src: src.into(),
            out: out.into(),
            precision: Precision::Fp32,
            graph: GraphKind::default(),
            force: false,
            progress: false,
            allow_nonfinite: false,
            lora: None,
            triton: None,
            matformer: None,
        }
    }

    /// `--precision`.
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// `--graph`.
    pub fn graph(mut self, graph: GraphKind) -> Self {
        self.graph = graph;
        self
    }

    /// `--force`: replace `out` if it exists.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Show a progress bar (the opposite of `--quiet`).
    pub fn progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// `--allow-nonfinite`.
    pub fn allow_nonfinite(mut self, allow: bool) -> Self {
        self.allow_nonfinite = allow;
        self
    }

    /// `--triton REPO [--triton-name NAME]`, or no repository.
    pub fn triton(mut self, triton: Option<TritonOptions>) -> Self {
        self.triton = triton;
        self
    }

    /// `--matformer SPEC`, or the whole model.
    pub fn matformer(mut self, spec: Option<gemma_models::matformer::Spec>) -> Self {
        self.matformer = spec;
        self
    }

    /// `--lora DIR --lora-scale S`, or no adapter.
    pub fn lora(mut self, lora: Option<LoraOptions>) -> Self {
        self.lora = lora;
        self
    }
}

/// `--lora ADAPTER_DIR [--lora-scale S]`.
#[derive(Debug, Clone)]
pub struct LoraOptions {
    /// The folder with `adapter_config.json` and `adapter_model.safetensors`.
    pub dir: PathBuf,
    /// Multiplies the adapter's own scale (lora_alpha / r); 1 merges it as trained.
    pub scale: f64,
}

/// What an export produced.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub out: PathBuf,
    pub manifest: Manifest,
    pub weight_bytes: u64,
    pub nodes: usize,
    /// int8/int4: relative RMS error of the quantized weights per tensor class, one line each.
    pub quantization: Vec<String>,
    /// Things the user should know, one line each (e.g. a GGUF exported without tokenizer files).
    pub warnings: Vec<String>,
    /// What the export cleaned up beside OUT (folders of interrupted exports) or could not: one line each.
    pub notes: Vec<String>,
}

/// Files copied verbatim from the checkpoint folder when present.
const COPIED_FILES: &[&str] = &[
    files::CONFIG_FILE,
    files::GENERATION_CONFIG_FILE,
    files::TOKENIZER_FILE,
    files::TOKENIZER_CONFIG_FILE,
    "special_tokens_map.json",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "processor_config.json",
];

pub fn export(opts: &ExportOptions) -> Result<ExportReport, ExportError> {
    let (mut cfg, mut ckpt, mut source) = if crate::gguf::is_gguf(&opts.src) {
        let opened = crate::gguf::open(&opts.src)?;
        opened.0.check_ids_and_window(&opts.src)?;
        opened
    } else {
        let config_path = opts.src.join("config.json");
        if !config_path.exists() {
            return Err(ExportError::NotACheckpoint(opts.src.clone()));
        }
        // Every file read or copied from SRC must stay inside it once symlinks are resolved (as index shards must).
        for name in COPIED_FILES {
            gemma_models::checkpoint::check_inside(&opts.src, &opts.src.join(name))?;
        }
        let cfg = ModelConfig::from_file(&config_path)?;
        cfg.check_ids_and_window(&config_path)?;
        let mut ckpt = Checkpoint::open(&opts.src)?;
        unwrap_classifier(&cfg, &mut ckpt)?;
        (cfg, ckpt, SourceFiles::folder())
    };
    // A MatFormer slice: from here on the config is the sliced one and the checkpoint reads as the sliced model
    // (before the LoRA adapter, whose tensor names are the sliced model's).
    if let Some(spec) = &opts.matformer {
        cfg = crate::matformer::slice(spec, &opts.src, &cfg, &mut ckpt, &mut source)?;
    }
    let lora = match &opts.lora {
        Some(l) => Some(gemma_models::lora::apply(&mut ckpt, &cfg, &l.dir, l.scale)?),
        None => None,
    };
    // Check every tensor (presence, shape, dtype) before writing anything, and that the checkpoint has no layer
    // tensors of another Gemma generation than config.json says (config and weights must describe one model).
    gemma_models::names::check_layer_tensors(&cfg, &ckpt)?;
    for (name, shape) in decoder::required_tensors(&cfg) {
        ckpt.tensor_with_shape(&name, &shape)?;
    }
    let vision = VisionPlan::check(&cfg, &ckpt)?;
    if let Some(plan) = &vision {
        vision::preprocess::PreprocessConfig::for_checkpoint(&opts.src, &plan.config)?;
    }
    if let Some(ids) = &cfg.classifier {
        crate::classifier::section(&opts.src, ids)?;
    }
    if let Some(q) = opts.precision.quant() {
        q.validate().map_err(ExportError::Unsupported)?;
    }
    if cfg.text.gemma3n.is_some() {
        crate::gemma3n::check(opts, &cfg)?;
    }
    // OUT is checked (never the source, --force only over an export) before anything is written.
    let destination = output::Destination::check(&opts.src, &opts.out, opts.force)?;
    if let Some(t) = &opts.triton {
        crate::triton::check(t, opts.force)?;
    }
    let staging = destination.stage()?;
    let (mut report, triton_graph) = write_export(
        opts,
        &cfg,
        &ckpt,
        vision.as_ref(),
        &source,
        staging.path(),
        lora.as_ref(),
    )?;
    report.notes = staging.commit()?;
    report.out = opts.out.clone();
    if let (Some(t), Some(graph)) = (&opts.triton, &triton_graph) {
        let manifest = &report.manifest;
        let notes = crate::triton::write(t, &opts.out, manifest, graph, opts.force)?;
        report.notes.extend(notes);
    }
    Ok(report)
}

fn write_export(
    opts: &ExportOptions,
    cfg: &ModelConfig,
    ckpt: &Checkpoint,
    vision: Option<&VisionPlan>,
    source: &SourceFiles,
    dir: &Path,
    lora: Option<&gemma_models::LoraSummary>,
) -> Result<(ExportReport, Option<TritonGraph>), ExportError> {
    let total = decoder::weight_bytes(cfg) + vision.map_or(0, |v| v.weight_bytes);
    let progress = if opts.progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    // Portable exports keep their weights in `onnx/` (the transformers.js layout), the others beside the graphs.
    // transformers.js's PaliGemma sessions are not verified against ours (positions, token types): a PaliGemma
    // export keeps the plain layout. Gemma 3n's text weights are named for transformers.js's `decoder_model_merged`
    // session, as with images.
    let sessions = vision.is_some() || cfg.text.gemma3n.is_some();
    let layout = Layout::of(opts.graph, opts.precision.kind(), sessions)
        .filter(|_| vision.as_ref().is_none_or(|p| p.config.system.is_default()));
    if layout.is_some() {
        let sub = dir.join(files::TRANSFORMERS_JS_DIR);
        fs::create_dir(&sub).map_err(|e| ExportError::io(&sub, e))?;
    }
    let text_data = layout.map_or(files::DECODER_DATA_FILE.into(), |l| l.text_data());
    let encoder_data = layout.map_or(files::ENCODER_DATA_FILE.into(), |l| l.encoder_data());
    progress.set_message(format!("writing {text_data}"));
    let mut w = WeightWriter::create_in(dir, &text_data, progress.clone())?;
    w.allow_nonfinite = opts.allow_nonfinite;
    let mut g = GraphBuilder::new();
    let linear = opts.precision.linear_kind();
    let mut backend: Box<dyn decoder::Backend> = match opts.graph {
        GraphKind::Portable => Box::new(decoder::portable::Portable::new(cfg)),
        GraphKind::Cpu => Box::new(decoder::cpu::OrtCpu::new(cfg)),
    };
    let ids = DecoderInput::InputIds;
    // The image graphs (file, graph name, graph). The two text ones reuse the weights model.onnx just wrote.
    let mut image_graphs = Vec::new();
    let gemma3n = cfg.text.gemma3n.is_some();
    if gemma3n {
        // Gemma 3n: the decoder on embeddings is the manifest's `decoder`, beside its embedding graph.
        let mut e = GraphBuilder::new();
        crate::gemma3n::build((&mut g, &mut e), &mut w, ckpt, cfg, (linear, opts.graph))?;
        image_graphs.push((crate::gemma3n::EMBED_FILE, "gemma3n_embed_tokens", e));
    } else {
        decoder::build(&mut g, &mut w, ckpt, linear, ids, backend.as_mut())?;
    }
    let mut vision_bytes = 0;
    if let Some(plan) = vision {
        let mut e = GraphBuilder::new();
        vision::build_embed_tokens(&mut e, &mut w, ckpt, cfg, linear)?;
        image_graphs.push((vision::EMBED_FILE, "gemma_embed_tokens", e));
        let mut d = GraphBuilder::new();
        let input = DecoderInput::InputsEmbeds {
            with_token_type_ids: true,
        };
        let mut portable = decoder::portable::Portable::new(cfg);
        decoder::build(&mut d, &mut w, ckpt, linear, input, &mut portable)?;
        image_graphs.push((
            vision::DECODER_WITH_EMBEDS_FILE,
            "gemma_decoder_with_embeds",
            d,
        ));

        progress.set_message(format!("writing {encoder_data}"));
        let mut vw = WeightWriter::create_in(dir, &encoder_data, progress.clone())?;
        vw.allow_nonfinite = opts.allow_nonfinite;
        let mut v = GraphBuilder::new();
        let kernels = vision::VisionKernels::choose(&opts.precision, opts.graph);
        vision::build_encoder(&mut v, &mut vw, ckpt, cfg, plan, &kernels)?;
        vision_bytes = vw.finish()?;
        image_graphs.push((vision::ENCODER_FILE, "gemma_vision_encoder", v));
    }
    let quantization = opts
        .precision
        .quant()
        .map(|q| w.quant_stats.summary(q))
        .unwrap_or_default();
    let kept_source_blocks = std::mem::take(&mut w.quant_stats.kept);
    // --triton over a cpu graph: the portable decoder for Triton's ONNX Runtime, after every other tensor, so the
    // export's own graphs keep their offsets ([`crate::triton`]).
    let triton_graph = match (&opts.triton, opts.graph) {
        (Some(_), GraphKind::Cpu) => {
            let mut t = GraphBuilder::new();
            let mut portable = decoder::portable::Portable::new(cfg);
            decoder::build(&mut t, &mut w, ckpt, linear, ids, &mut portable)?;
            Some(t)
        }
        _ => None,
    };
    let weight_bytes = w.finish()? + vision_bytes;
    progress.finish_and_clear();
    // Gemma 3n's audio graphs (semantics §13), in the staging folder like every other file.
    let audio = match gemma3n && crate::gemma3n::exports_audio(&opts.src, cfg) {
        true => {
            let (a, features) = crate::gemma3n::write_audio_graphs(&opts.src, ckpt, dir)?;
            Some(crate::gemma3n::audio_section(&a, &features))
        }
        false => None,
    };
    let images = match gemma3n && crate::gemma3n::exports_vision(&opts.src, cfg) {
        true => {
            let (v, pre) = crate::gemma3n::write_vision_graphs(&opts.src, ckpt, dir)?;
            Some(crate::gemma3n::vision_section(&v, &pre))
        }
        false => None,
    };

    let nodes = g.node_count();
    // Generated source files (GGUF) go in first, so the manifest reads their generation_config.json.
    for (name, text) in &source.files {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| ExportError::io(&path, e))?;
    }
    let gen_dir = if source.files.is_empty() {
        &opts.src
    } else {
        dir
    };
    let quant_spec = opts.precision.quant().map(|q| q.spec());
    let decoder_file = match gemma3n {
        true => files::DECODER_WITH_EMBEDS_FILE,
        false => files::DECODER_FILE,
    };
    let mut manifest = manifest::new(
        cfg,
        gen_dir,
        opts.precision.kind(),
        quant_spec,
        decoder_file,
    )?;
    manifest.source_format = Some(source.format.to_string());
    manifest.kept_source_blocks = kept_source_blocks;
    manifest.lora = lora.map(contract::LoraSection::new);
    manifest.matformer = source.matformer.clone();
    // The policies and prompt template of a classifier (checked in `export`).
    if let Some(ids) = &cfg.classifier {
        manifest.classifier = Some(crate::classifier::section(&opts.src, ids)?);
    }
    manifest.allow_nonfinite = opts.allow_nonfinite;
    if gemma3n {
        crate::gemma3n::fill_manifest(&mut manifest, (&opts.src, opts.graph), cfg, (audio, images));
    } else if opts.graph == GraphKind::Cpu {
        manifest.graph = GraphKind::Cpu;
        manifest.cpu = Some(contract::CpuSection::current());
    }
    if let (Some(plan), Some(v)) = (vision, manifest.vision.as_mut()) {
        v.encoder_data = encoder_data;
        // The image processor as a graph, with the checkpoint's processor settings (checked in `export`).
        let pre = vision::preprocess::PreprocessConfig::for_checkpoint(&opts.src, &plan.config)?;
        vision::preprocess::write_preprocess(dir, &pre)?;
        v.preprocess = Some(contract::PreprocessSection::new(&pre));
    }
    let stamp = graph_metadata(&manifest);
    let opsets = opset_imports(&g);
    let proto = model(g.finish("gemma_decoder"), &opsets, &stamp);
    let model_path = dir.join(&manifest.decoder);
    fs::write(&model_path, proto.encode_to_vec()).map_err(|e| ExportError::io(&model_path, e))?;
    let triton_graph = triton_graph.map(|t| {
        let opsets = opset_imports(&t);
        model(t.finish("gemma_decoder"), &opsets, &stamp)
    });
    for (file, name, graph) in image_graphs {
        let opsets = opset_imports(&graph);
        let proto = model(graph.finish(name), &opsets, &stamp);
        let path = dir.join(file);
        fs::write(&path, proto.encode_to_vec()).map_err(|e| ExportError::io(&path, e))?;
    }

    if let Some(text) = &source.config {
        let path = dir.join(files::CONFIG_FILE);
        fs::write(&path, text).map_err(|e| ExportError::io(&path, e))?;
    }
    for name in COPIED_FILES {
        let src = opts.src.join(name);
        if *name == files::CONFIG_FILE && source.config.is_some() {
            continue;
        }
        if src.exists() {
            // Only regular files: a FIFO or device here is refused, not waited on or read forever.
            let mut from =
                gemma_models::files::open_regular(&src).map_err(|e| ExportError::io(&src, e))?;
            let dst = dir.join(name);
            let mut to = fs::File::create(&dst).map_err(|e| ExportError::io(&dst, e))?;
            std::io::copy(&mut from, &mut to).map_err(|e| ExportError::io(&dst, e))?;
        }
    }
    if !opts.src.join(files::GENERATION_CONFIG_FILE).is_file()
        && !dir.join(files::GENERATION_CONFIG_FILE).is_file()
    {
        let gen = serde_json::json!({
            "bos_token_id": cfg.bos_token_id,
            "eos_token_id": manifest.eos_token_ids,
            "pad_token_id": cfg.pad_token_id,
        });
        let path = dir.join(files::GENERATION_CONFIG_FILE);
        fs::write(&path, serde_json::to_string_pretty(&gen).expect("json"))
            .map_err(|e| ExportError::io(&path, e))?;
    }
    let mut warnings = source.warnings.clone();
    if gemma3n {
        warnings.extend(crate::gemma3n::warnings(opts, cfg));
    }
    if let Some(layout) = &layout {
        crate::transformers_js::write(dir, layout, &manifest, &proto)?;
    }
    manifest::fingerprint_files(&mut manifest, dir)?;
    manifest::write(&manifest, dir)?;
    if !gemma3n {
        crate::genai::write(opts.graph, cfg, &manifest, dir)?;
    }
    let report = ExportReport {
        out: dir.to_path_buf(),
        manifest,
        weight_bytes,
        nodes,
        quantization,
        warnings,
        notes: Vec::new(),
    };
    // Triton's graph (the portable decoder: this export's own, or the one built beside the cpu graph), its data
    // named as the copy in the Triton repository will be.
    let triton_graph = opts.triton.as_ref().map(|_| {
        let mut graph = triton_graph.unwrap_or(proto);
        crate::transformers_js::relocate(&mut graph, |_| files::DECODER_DATA_FILE.into());
        TritonGraph {
            graph: graph.encode_to_vec(),
            data: text_data,
        }
    });
    Ok((report, triton_graph))
}

/// A classifier class's checkpoint (ShieldGemma 2) read as the class it wraps: the first of its
/// [`checkpoint_prefixes`](gemma_models::family::ClassifierSpec) that some tensor has is removed.
fn unwrap_classifier(cfg: &ModelConfig, ckpt: &mut Checkpoint) -> Result<(), ExportError> {
    let spec = gemma_models::family::ModelClass::by_architecture(&cfg.architecture)
        .and_then(|(_, class)| class.classifier());
    if let Some(spec) = spec {
        let names = ckpt.names();
        let prefix = spec
            .checkpoint_prefixes
            .iter()
            .find(|p| names.iter().any(|n| n.starts_with(**p)));
        if let Some(prefix) = prefix {
            ckpt.strip_prefix(prefix)?;
        }
    }
    Ok(())
}

/// The metadata every graph of the export carries, so a runtime can tell a graph from another export.
fn graph_metadata(manifest: &Manifest) -> [(&'static str, String); 2] {
    [
        (
            io::META_FAMILY,
            contract::family_name(manifest.family).into(),
        ),
        (io::META_PRECISION, manifest.precision.name().into()),
    ]
}

/// The operator sets a graph imports: ONNX (at the opset its nodes need), plus ONNX Runtime's contrib domain when it
/// uses one of its ops (quantized MatMuls, fused attention).
fn opset_imports(g: &GraphBuilder) -> Vec<(&'static str, i64)> {
    let mut opsets = vec![("", g.onnx_opset())];
    if g.uses_domain(crate::ops::MS_DOMAIN) {
        opsets.push((crate::ops::MS_DOMAIN, 1));
    }
    opsets
}
