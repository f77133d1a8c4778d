//! The four image graphs of an export, as ONNX Runtime sessions (see gemma-exporter's `vision` module for how they
//! are built): `preprocess.onnx` (decoded image → `pixel_values`, crop count), `vision_encoder.onnx`
//! (`pixel_values` → `image_features`), `embed_tokens.onnx` (ids → scaled embeddings) and
//! `decoder_model_merged.onnx` (embeddings + `token_type_ids` + KV cache → logits).
//!
//! The decoder on embeddings always has the portable I/O (whole past in, whole present out, logits for every
//! position), also when `model.onnx` is the CPU graph, so its cache is a portable [`KvCache`].

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use image::RgbImage;
use ndarray::{Array3, Array4, ArrayView2, ArrayView3, ArrayView4, Ix3, Ix4};
use ort::session::{Session, SessionInputValue, SessionOutputs};
use ort::value::{DynValue, Tensor, TensorRef};

use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::manifest::{DType, GraphKind, Manifest, MANIFEST_FILE};
use crate::ort_env::{create_session, RuntimeOptions};

/// `preprocess.onnx`, when the manifest does not name it.
pub use gemma_models::contract::files::PREPROCESS_FILE;
/// The manifest's `vision` section and its `preprocess` entry (`gemma_models::contract`): read with the rest of
/// the manifest by [`crate::manifest::load`].
pub use gemma_models::contract::{PreprocessConfig, PreprocessSection, VisionSection};

/// One image through `preprocess.onnx`: the full image then its crops, each `[3, S, S]`.
#[derive(Clone, Debug)]
pub struct Preprocessed {
    pub pixel_values: Array4<f32>,
    pub num_crops: usize,
}

/// `preprocess.onnx` on its own: a decoded RGB image → `pixel_values` (full image, then Pan & Scan crops).
pub struct Preprocessor {
    session: Session,
}

impl Preprocessor {
    pub fn open(path: &Path, options: &RuntimeOptions) -> Result<Preprocessor> {
        Ok(Preprocessor {
            session: create_session(path, options)?,
        })
    }

    /// Runs the graph on `image`; `pan_and_scan` sets its `do_pan_and_scan` input.
    pub fn run(&mut self, image: &RgbImage, pan_and_scan: bool) -> Result<Preprocessed> {
        let (w, h) = image.dimensions();
        let pixels = Tensor::from_array(([h as usize, w as usize, 3], image.as_raw().clone()))
            .map_err(ort_err("preprocess.onnx"))?;
        let flag =
            Tensor::from_array(((), vec![pan_and_scan])).map_err(ort_err("preprocess.onnx"))?;
        let out = self
            .session
            .run(ort::inputs!["image" => pixels, "do_pan_and_scan" => flag])
            .map_err(ort_err("preprocess.onnx"))?;
        let pixel_values = out["pixel_values"]
            .try_extract_array::<f32>()
            .map_err(ort_err("preprocess.onnx"))?
            .into_dimensionality::<Ix4>()
            .map_err(|e| Error::ort("running preprocess.onnx", e))?
            .to_owned();
        let (_, crops) = out["num_crops"]
            .try_extract_tensor::<i64>()
            .map_err(ort_err("preprocess.onnx"))?;
        let num_crops = crops.first().copied().unwrap_or(0).max(0) as usize;
        if pixel_values.shape()[0] != 1 + num_crops {
            return Err(Error::ort(
                "running preprocess.onnx",
                format!("{} images for {num_crops} crops", pixel_values.shape()[0]),
            ));
        }
        Ok(Preprocessed {
            pixel_values,
            num_crops,
        })
    }
}

pub struct ImageGraphs {
    dir: PathBuf,
    preprocess: Option<Preprocessor>,
    encoder: Session,
    embed: Session,
    decoder: Session,
    /// The text manifest with `graph` portable: what the decoder's cache must look like.
    cache_manifest: Manifest,
    has_position_ids: bool,
}

fn ort_err(what: &'static str) -> impl Fn(ort::Error) -> Error {
    move |e| Error::ort(format!("running {what}"), e)
}

impl ImageGraphs {
    pub fn open(
        dir: &Path,
        manifest: &Manifest,
        section: &VisionSection,
        options: &RuntimeOptions,
    ) -> Result<Self> {
        let file = |name: &str| -> Result<PathBuf> {
            let path = crate::integrity::inside(dir, &dir.join(MANIFEST_FILE), "vision", name)?;
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::invalid_file(
                    &dir.join(MANIFEST_FILE),
                    format!("section `vision` names {name}, which does not exist in the folder"),
                ))
            }
        };
        let preprocess = match &section.preprocess {
            Some(entry) => Some(Preprocessor::open(&file(&entry.file)?, options)?),
            None if dir.join(PREPROCESS_FILE).is_file() => {
                Some(Preprocessor::open(&dir.join(PREPROCESS_FILE), options)?)
            }
            None => None,
        };
        let encoder = create_session(&file(&section.encoder)?, options)?;
        let embed = create_session(&file(&section.embed_tokens)?, options)?;
        let decoder_path = file(&section.decoder_with_embeds)?;
        let decoder = create_session(&decoder_path, options)?;
        let names: Vec<String> = decoder
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        for needed in [
            "inputs_embeds",
            "token_type_ids",
            "attention_mask",
            "past_key_values.0.key",
        ] {
            if !names.iter().any(|n| n == needed) {
                return Err(Error::invalid_file(
                    &decoder_path,
                    format!(
                        "the graph has no input `{needed}` (is it the decoder on inputs_embeds?)"
                    ),
                ));
            }
        }
        crate::integrity::check_graph_shapes(&decoder, manifest, &decoder_path)?;
        crate::integrity::check_graph_shapes(&embed, manifest, &file(&section.embed_tokens)?)?;
        let mut cache_manifest = manifest.clone();
        cache_manifest.graph = GraphKind::Portable;
        cache_manifest.cpu = None;
        Ok(ImageGraphs {
            dir: dir.to_path_buf(),
            preprocess,
            encoder,
            embed,
            decoder,
            cache_manifest,
            has_position_ids: names.iter().any(|n| n == "position_ids"),
        })
    }

    /// An empty batch-1 cache for [`step`](Self::step).
    pub fn new_cache(&self) -> Result<KvCache> {
        KvCache::new(&self.cache_manifest, 1)
    }

    /// `preprocess.onnx` on one RGB image.
    pub fn preprocess(&mut self, image: &RgbImage, pan_and_scan: bool) -> Result<Preprocessed> {
        let pre = self.preprocess.as_mut().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{} has no {PREPROCESS_FILE} (exported by an older gemma-export): export the checkpoint again",
                self.dir.display()
            ))
        })?;
        pre.run(image, pan_and_scan)
    }

    /// `vision_encoder.onnx`: `[N, 3, S, S]` → `[N, mm_tokens_per_image, hidden]`. Runs one image at a time: the
    /// encoder's attention over 4096 patches takes about 1 GB per image, so batching only adds memory.
    pub fn encode(&mut self, pixels: ArrayView4<f32>) -> Result<Array3<f32>> {
        let mut parts = Vec::with_capacity(pixels.shape()[0]);
        for i in 0..pixels.shape()[0] {
            let one = pixels.slice(ndarray::s![i..i + 1, .., .., ..]);
            let one = one.as_standard_layout();
            let out = self
                .encoder
                .run(ort::inputs!["pixel_values" => TensorRef::from_array_view(&one).map_err(ort_err("vision_encoder.onnx"))?])
                .map_err(ort_err("vision_encoder.onnx"))?;
            let f = out["image_features"]
                .try_extract_array::<f32>()
                .map_err(ort_err("vision_encoder.onnx"))?
                .into_dimensionality::<Ix3>()
                .map_err(|e| Error::ort("running vision_encoder.onnx", e))?
                .to_owned();
            parts.push(f);
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(ndarray::Axis(0), &views)
            .map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// `embed_tokens.onnx`: ids → `[1, n, hidden]`, scaled like the decoder's own embedding.
    pub fn embed(&mut self, ids: &[u32]) -> Result<Array3<f32>> {
        let ids = ndarray::Array2::from_shape_vec(
            (1, ids.len()),
            ids.iter().map(|&t| t as i64).collect(),
        )
        .expect("shape matches");
        let out = self
            .embed
            .run(ort::inputs!["input_ids" => TensorRef::from_array_view(&ids).map_err(ort_err("embed_tokens.onnx"))?])
            .map_err(ort_err("embed_tokens.onnx"))?;
        out["inputs_embeds"]
            .try_extract_array::<f32>()
            .map_err(ort_err("embed_tokens.onnx"))?
            .into_dimensionality::<Ix3>()
            .map_err(|e| Error::ort("running embed_tokens.onnx", e))
            .map(|a| a.to_owned())
    }

    /// One text token after the cache (`token_type_ids` 0); returns its logits.
    pub fn decode_step(&mut self, cache: &mut KvCache, token: u32) -> Result<Vec<f32>> {
        let embeds = self.embed(&[token])?;
        let zero = ndarray::Array2::<i64>::zeros((1, 1));
        self.step(embeds.view(), zero.view(), cache, true, |l| {
            l.slice(ndarray::s![0, -1, ..]).to_vec()
        })
    }

    /// One step of `decoder_model_merged.onnx` on `embeds` `[1, s, hidden]` after the cache's positions, with
    /// `token_type_ids` `[1, s]`; hands `f` the logits `[1, s, vocab]` and appends the step to `cache`. With
    /// `last_only`, `f` may get the last position's logits only (`[1, 1, vocab]`): exports that have the optional
    /// `num_logits_to_keep` input skip the lm_head everywhere else.
    pub fn step<R>(
        &mut self,
        embeds: ArrayView3<f32>,
        token_types: ArrayView2<i64>,
        cache: &mut KvCache,
        last_only: bool,
        f: impl FnOnce(ArrayView3<f32>) -> R,
    ) -> Result<R> {
        let ctx = "running decoder_model_merged.onnx";
        let seq = embeds.shape()[1];
        let past = cache.len();
        let layers = self.cache_manifest.num_layers;
        let embeds = embeds.as_standard_layout();
        let types = token_types.as_standard_layout();
        let mask = ndarray::Array2::<i64>::ones((1, past + seq));
        let pos = ndarray::Array2::from_shape_fn((1, seq), |(_, j)| (past + j) as i64);
        let e = |err| Error::ort(ctx, err);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                "inputs_embeds".into(),
                TensorRef::from_array_view(&embeds).map_err(e)?.into(),
            ),
            (
                "token_type_ids".into(),
                TensorRef::from_array_view(&types).map_err(e)?.into(),
            ),
            (
                "attention_mask".into(),
                TensorRef::from_array_view(&mask).map_err(e)?.into(),
            ),
        ];
        if self.has_position_ids {
            inputs.push((
                "position_ids".into(),
                TensorRef::from_array_view(&pos).map_err(e)?.into(),
            ));
        }
        let keep_input = self
            .cache_manifest
            .portable_logits_to_keep_input
            .as_deref()
            .filter(|_| last_only);
        let keep = ndarray::arr0(1i64);
        if let Some(name) = keep_input {
            inputs.push((
                name.into(),
                TensorRef::from_array_view(&keep).map_err(e)?.into(),
            ));
        }
        for l in 0..layers {
            let (k, v) = cache.past(l).ok_or_else(|| {
                Error::InvalidArgument("the image decoder needs a portable KV cache".into())
            })?;
            inputs.push((format!("past_key_values.{l}.key").into(), k.into()));
            inputs.push((format!("past_key_values.{l}.value").into(), v.into()));
        }
        let mut outputs = self.decoder.run(inputs).map_err(e)?;
        let mut keys = Vec::with_capacity(layers);
        let mut values = Vec::with_capacity(layers);
        for l in 0..layers {
            for (kind, out) in [("key", &mut keys), ("value", &mut values)] {
                let name = format!("present.{l}.{kind}");
                let v: DynValue = outputs
                    .remove(name.as_str())
                    .ok_or_else(|| Error::ort(ctx, format!("the graph produced no `{name}`")))?;
                out.push(v);
            }
        }
        let vocab = self.cache_manifest.vocab_size;
        let kept = if keep_input.is_some() { 1 } else { seq };
        let result = with_logits(
            &outputs,
            self.cache_manifest.logits_dtype,
            (1, kept, vocab),
            f,
        )?;
        drop(outputs);
        cache.replace(keys, values, past + seq);
        Ok(result)
    }
}

fn with_logits<R>(
    outputs: &SessionOutputs<'_>,
    dtype: DType,
    dim: (usize, usize, usize),
    f: impl FnOnce(ArrayView3<f32>) -> R,
) -> Result<R> {
    crate::decoder::run::logits_view("running decoder_model_merged.onnx", outputs, dtype, dim, f)
}
