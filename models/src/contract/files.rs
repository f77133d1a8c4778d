//! The file names of an export folder. The manifest names the graph files it uses (`decoder`, the `vision`
//! section), so a reader takes them from there; these are the names the exporter gives them.

/// The manifest.
pub const MANIFEST_FILE: &str = "gemma-onnx.json";
/// The text decoder graph (manifest `decoder`).
pub const DECODER_FILE: &str = "model.onnx";
/// The external data of the text graphs in cpu-graph and bf16 exports: the decoder's weights, shared by
/// `embed_tokens.onnx` and `decoder_model_merged.onnx`. Portable exports keep them in [`TRANSFORMERS_JS_DIR`]
/// instead, as `model{suffix}.onnx_data` (`decoder_model_merged{suffix}.onnx_data` with images); the graphs name
/// their data file themselves, and the manifest's `files` lists it.
pub const DECODER_DATA_FILE: &str = "model.onnx_data";

/// Image path: SigLIP encoder + projector (manifest `vision.encoder`).
pub const ENCODER_FILE: &str = "vision_encoder.onnx";
/// The encoder's external data (manifest `vision.encoder_data`) in cpu-graph and bf16 exports; portable exports keep
/// it in [`TRANSFORMERS_JS_DIR`] as `vision_encoder{suffix}.onnx_data`.
pub const ENCODER_DATA_FILE: &str = "vision_encoder.onnx_data";
/// Image path: token ids → scaled embeddings (manifest `vision.embed_tokens`).
pub const EMBED_FILE: &str = "embed_tokens.onnx";
/// Image path: the decoder on embeddings (manifest `vision.decoder_with_embeds`).
pub const DECODER_WITH_EMBEDS_FILE: &str = "decoder_model_merged.onnx";
/// Image path: the image processor as a graph (manifest `vision.preprocess.file`).
pub const PREPROCESS_FILE: &str = "preprocess.onnx";
/// Gemma 3n audio path: the feature extractor as a graph (manifest `gemma3n.audio.preprocess`).
pub const PREPROCESS_AUDIO_FILE: &str = "preprocess_audio.onnx";
/// Gemma 3n audio path: the audio tower and embedder (manifest `gemma3n.audio.encoder`), beside its
/// `audio_encoder.onnx_data`.
pub const AUDIO_ENCODER_FILE: &str = "audio_encoder.onnx";

/// transformers.js's folder of ONNX files (its `from_pretrained` default `subfolder`). Portable exports (but bf16)
/// keep their weights there, once: the top-level graphs reference them as `onnx/NAME.onnx_data` (a subfolder path,
/// no `..`, no link). Text exports also hold the decoder there, as `model{suffix}.onnx` by transformers.js's `dtype`
/// convention; vision exports hold transformers.js's image-text-to-text sessions there instead (`vision_encoder`,
/// `embed_tokens`, `decoder_model_merged`). The runtime reads only the data files, through the top-level graphs;
/// the manifest's `files` names everything in it `onnx/NAME`.
pub const TRANSFORMERS_JS_DIR: &str = "onnx";

/// ONNX Runtime GenAI's configuration (`--graph cpu` exports).
pub const GENAI_CONFIG_FILE: &str = "genai_config.json";
/// The checkpoint's config, copied (generated from the metadata for a GGUF source).
pub const CONFIG_FILE: &str = "config.json";
/// The checkpoint's generation config, copied, or written from config.json when absent.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";
/// The tokenizer, copied (rebuilt from the metadata for a GGUF source).
pub const TOKENIZER_FILE: &str = "tokenizer.json";
/// The tokenizer's settings and chat template, copied.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
