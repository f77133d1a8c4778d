//! Helpers for the Gemma 3 image tests: the image references of `make_fixtures.py vision`, and a minimal driver
//! of the three image graphs of an export (`vision_encoder.onnx`, `embed_tokens.onnx`,
//! `decoder_model_merged.onnx`) straight through `ort`, doing what a runtime does: encode, embed, scatter the
//! features into the image-token rows, and step the decoder with `token_type_ids` and a KV cache.

use anyhow::{bail, Context, Result};
use gemma_exporter::onnx::{tensor_proto::DataLocation, ModelProto};
use gemma_runtime::ort_env::create_session;
use gemma_runtime::RuntimeOptions;
use ndarray::{s, Array2, Array3, ArrayD, ArrayView2, ArrayView3, ArrayView4, Axis, IxDyn};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use prost::Message;
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Largest |a − b| over two arrays of the same shape.
/// A committed image as RGB uint8 `[h, w, 3]`.
pub fn load_rgb(path: &Path) -> Result<Array3<u8>> {
    let img = image::open(path)
        .with_context(|| path.display().to_string())?
        .to_rgb8();
    let (w, h) = img.dimensions();
    Ok(Array3::from_shape_vec(
        (h as usize, w as usize, 3),
        img.into_raw(),
    )?)
}

pub fn max_abs_diff<D: ndarray::Dimension>(
    a: ndarray::ArrayView<f32, D>,
    b: ndarray::ArrayView<f32, D>,
) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The KV cache of [`ImageModel::step`]: one `[B, nkv, T, hd]` key and value per layer.
pub struct Cache {
    pub keys: Vec<ArrayD<f32>>,
    pub values: Vec<ArrayD<f32>>,
    pub len: usize,
}

/// The image graphs of one export folder.
pub struct ImageModel {
    encoder: Session,
    embed: Session,
    decoder: Session,
    num_layers: usize,
    num_kv_heads: usize,
    head_dim: usize,
    /// `<image_soft_token>`, from the manifest.
    pub image_token_id: i64,
    /// The position id of the first token (1 for PaliGemma, from the manifest's `vision.system`).
    pub first_position: i64,
}

fn run_err(what: &str) -> impl Fn(ort::Error) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("running {what}: {e}")
}

impl ImageModel {
    /// Opens the graphs named by the manifest's `vision` section.
    pub fn open(dir: &Path) -> Result<ImageModel> {
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("gemma-onnx.json"))?)?;
        let vision = manifest
            .get("vision")
            .context("the manifest has no `vision` section")?;
        let options = RuntimeOptions::cpu().with_threads(Some(2));
        let session = |key: &str| -> Result<Session> {
            let file = vision[key]
                .as_str()
                .with_context(|| format!("vision.{key}"))?;
            Ok(create_session(&dir.join(file), &options)?)
        };
        let n = |key: &str| {
            manifest[key]
                .as_u64()
                .map(|v| v as usize)
                .context("manifest size")
        };
        let system: gemma_models::family::VisionSystem =
            serde_json::from_value(vision.get("system").cloned().unwrap_or("gemma3".into()))?;
        Ok(ImageModel {
            first_position: system.spec().first_position,
            encoder: session("encoder")?,
            embed: session("embed_tokens")?,
            decoder: session("decoder_with_embeds")?,
            num_layers: n("num_layers")?,
            num_kv_heads: n("num_kv_heads")?,
            head_dim: n("head_dim")?,
            image_token_id: vision["image_token_id"]
                .as_i64()
                .context("image_token_id")?,
        })
    }

    /// `pixel_values` `[N, 3, S, S]` → `image_features` `[N, tokens, hidden]`.
    pub fn encode(&mut self, pixels: ArrayView4<f32>) -> Result<Array3<f32>> {
        let pixels = pixels.as_standard_layout();
        let out = self
            .encoder
            .run(ort::inputs!["pixel_values" => TensorRef::from_array_view(&pixels)?])
            .map_err(run_err("vision_encoder.onnx"))?;
        Ok(out["image_features"]
            .try_extract_array::<f32>()?
            .into_dimensionality()?
            .to_owned())
    }

    /// `input_ids` `[B, S]` → scaled `inputs_embeds` `[B, S, hidden]`.
    pub fn embed(&mut self, ids: ArrayView2<i64>) -> Result<Array3<f32>> {
        let ids = ids.as_standard_layout();
        let out = self
            .embed
            .run(ort::inputs!["input_ids" => TensorRef::from_array_view(&ids)?])
            .map_err(run_err("embed_tokens.onnx"))?;
        Ok(out["inputs_embeds"]
            .try_extract_array::<f32>()?
            .into_dimensionality()?
            .to_owned())
    }

    /// The embeddings of `ids` with the image-token rows overwritten by `features` `[N, tokens, hidden]` in
    /// transformers' masked_scatter order (row-major over batch and sequence; images, then tokens, in order).
    pub fn embed_with_images(
        &mut self,
        ids: ArrayView2<i64>,
        features: ArrayView3<f32>,
    ) -> Result<Array3<f32>> {
        let mut embeds = self.embed(ids)?;
        let hidden = features.shape()[2];
        let flat = features.to_shape((features.len() / hidden, hidden))?;
        let mut next = 0;
        for ((b, j), &id) in ids.indexed_iter() {
            if id == self.image_token_id {
                if next == flat.nrows() {
                    bail!("more image tokens than image features ({})", flat.nrows());
                }
                embeds.slice_mut(s![b, j, ..]).assign(&flat.row(next));
                next += 1;
            }
        }
        if next != flat.nrows() {
            bail!("{next} image tokens for {} image features", flat.nrows());
        }
        Ok(embeds)
    }

    pub fn new_cache(&self, batch: usize) -> Cache {
        let empty = || ArrayD::zeros(IxDyn(&[batch, self.num_kv_heads, 0, self.head_dim]));
        Cache {
            keys: (0..self.num_layers).map(|_| empty()).collect(),
            values: (0..self.num_layers).map(|_| empty()).collect(),
            len: 0,
        }
    }

    /// One decoder step on `inputs_embeds` `[B, S, hidden]` with `token_type_ids` `[B, S]`, no padding (positions
    /// continue the cache); returns the logits `[B, S, vocab]` and appends to `cache`.
    pub fn step(
        &mut self,
        embeds: ArrayView3<f32>,
        token_type_ids: ArrayView2<i64>,
        cache: &mut Cache,
    ) -> Result<Array3<f32>> {
        let (batch, seq, _) = embeds.dim();
        let past = cache.len;
        let embeds = embeds.as_standard_layout();
        let tti = token_type_ids.as_standard_layout();
        let mask = Array2::<i64>::ones((batch, past + seq));
        let first = self.first_position;
        let pos = Array2::from_shape_fn((batch, seq), |(_, j)| first + (past + j) as i64);
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                "inputs_embeds".into(),
                TensorRef::from_array_view(&embeds)?.into(),
            ),
            (
                "token_type_ids".into(),
                TensorRef::from_array_view(&tti)?.into(),
            ),
            (
                "attention_mask".into(),
                TensorRef::from_array_view(&mask)?.into(),
            ),
            (
                "position_ids".into(),
                TensorRef::from_array_view(&pos)?.into(),
            ),
        ];
        for l in 0..self.num_layers {
            inputs.push((
                format!("past_key_values.{l}.key").into(),
                TensorRef::from_array_view(&cache.keys[l])?.into(),
            ));
            inputs.push((
                format!("past_key_values.{l}.value").into(),
                TensorRef::from_array_view(&cache.values[l])?.into(),
            ));
        }
        let out = self
            .decoder
            .run(inputs)
            .map_err(run_err("decoder_model_merged.onnx"))?;
        let mut keys = Vec::new();
        let mut values = Vec::new();
        for l in 0..self.num_layers {
            keys.push(
                out[format!("present.{l}.key").as_str()]
                    .try_extract_array::<f32>()?
                    .to_owned(),
            );
            values.push(
                out[format!("present.{l}.value").as_str()]
                    .try_extract_array::<f32>()?
                    .to_owned(),
            );
        }
        let logits = out["logits"]
            .try_extract_array::<f32>()?
            .into_dimensionality()?
            .to_owned();
        drop(out);
        if keys[0].len_of(Axis(2)) != past + seq {
            bail!(
                "present has {} positions, expected {}",
                keys[0].len_of(Axis(2)),
                past + seq
            );
        }
        cache.keys = keys;
        cache.values = values;
        cache.len = past + seq;
        Ok(logits)
    }
}

/// `(location, offset, length)` of every external initializer of an ONNX file, by name.
pub fn external_data(path: &Path) -> Result<HashMap<String, (String, String, String)>> {
    let bytes = std::fs::read(path).with_context(|| path.display().to_string())?;
    let proto = ModelProto::decode(bytes.as_slice())?;
    let mut out = HashMap::new();
    for t in proto.graph.context("no graph")?.initializer {
        if t.data_location != Some(DataLocation::External as i32) {
            continue;
        }
        let name = t.name.clone().context("unnamed initializer")?;
        let get = |k: &str| -> Result<String> {
            t.external_data
                .iter()
                .find(|e| e.key.as_deref() == Some(k))
                .and_then(|e| e.value.clone())
                .with_context(|| format!("{name}: no external_data `{k}`"))
        };
        let place = (get("location")?, get("offset")?, get("length")?);
        out.insert(name, place);
    }
    Ok(out)
}
