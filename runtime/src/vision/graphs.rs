//! The four image graphs of an export, as ONNX Runtime sessions (see gemma-exporter's `vision` module for how they
//! are built): `preprocess.onnx` (decoded image → `pixel_values`, crop count), `vision_encoder.onnx`
//! (`pixel_values` → `image_features`), `embed_tokens.onnx` (ids → scaled embeddings) and
//! `decoder_model_merged.onnx` (embeddings + `token_type_ids` + KV cache → logits).
//!
//! The decoder on embeddings is a [`Decoder`] opened with [`Decoder::open_on_embeds`]: its steps go through the same
//! step function as the text decoder's. It always has the portable I/O (whole past in, whole present out), also
//! when `model.onnx` is the CPU graph, so its cache is a portable [`KvCache`].

use gemma_models::contract::io;
use std::path::{Path, PathBuf};

use image::RgbImage;
use ndarray::{Array3, Array4, ArrayView4, Ix3, Ix4};
use ort::session::Session;
use ort::value::{Tensor, TensorRef};

use crate::decoder::{ids_row, Decoder};
use crate::error::{Error, Result};
use crate::kv_cache::KvCache;
use crate::manifest::{Manifest, MANIFEST_FILE};
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
            .run(ort::inputs![io::IMAGE => pixels, io::DO_PAN_AND_SCAN => flag])
            .map_err(ort_err("preprocess.onnx"))?;
        let pixel_values = out[io::PIXEL_VALUES]
            .try_extract_array::<f32>()
            .map_err(ort_err("preprocess.onnx"))?
            .into_dimensionality::<Ix4>()
            .map_err(|e| Error::ort("running preprocess.onnx", e))?
            .to_owned();
        let (_, crops) = out[io::NUM_CROPS]
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
    /// `decoder_model_merged.onnx`, stepped with [`TokenInput::Embeds`](crate::decoder::TokenInput).
    pub(crate) decoder: Decoder,
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
        let decoder = Decoder::open_on_embeds(dir, &decoder_path, manifest, options)?;
        crate::integrity::check_graph_shapes(&embed, manifest, &file(&section.embed_tokens)?)?;
        Ok(ImageGraphs {
            dir: dir.to_path_buf(),
            preprocess,
            encoder,
            embed,
            decoder,
        })
    }

    /// An empty batch-1 cache for the decoder on embeddings.
    pub fn new_cache(&self) -> Result<KvCache> {
        self.decoder.new_cache(1)
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
                .run(ort::inputs![io::PIXEL_VALUES => TensorRef::from_array_view(&one).map_err(ort_err("vision_encoder.onnx"))?])
                .map_err(ort_err("vision_encoder.onnx"))?;
            let f = out[io::IMAGE_FEATURES]
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
        let ids = ids_row(ids);
        let out = self
            .embed
            .run(ort::inputs![io::INPUT_IDS => TensorRef::from_array_view(&ids).map_err(ort_err("embed_tokens.onnx"))?])
            .map_err(ort_err("embed_tokens.onnx"))?;
        out[io::INPUTS_EMBEDS]
            .try_extract_array::<f32>()
            .map_err(ort_err("embed_tokens.onnx"))?
            .into_dimensionality::<Ix3>()
            .map_err(|e| Error::ort("running embed_tokens.onnx", e))
            .map(|a| a.to_owned())
    }
}
