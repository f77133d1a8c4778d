#!/usr/bin/env node
// Greedy generation by transformers.js (`@huggingface/transformers`, Node, onnxruntime-node) on a gemma-onnx
// Gemma 3n portable export, as a user of transformers.js would run it, with local files only (the sessions in
// OUT/onnx/, the dtype per session from config.json's `transformers.js_config`):
//
// - with --image or --audio, `AutoModelForImageTextToText.from_pretrained(OUT)` (Gemma3nForConditionalGeneration:
//   the embed_tokens, decoder_model_merged, vision_encoder and audio_encoder sessions) and
//   `AutoProcessor.from_pretrained(OUT)` (Gemma3nProcessor: SiglipImageProcessor and Gemma3nAudioFeatureExtractor
//   from preprocessor_config.json, the soft-token counts from processor_config.json) make `pixel_values` and
//   `input_features` / `input_features_mask`;
// - without, `AutoModelForCausalLM.from_pretrained(OUT)` (Gemma3nForCausalLM in transformers.js's text-only mode:
//   embed_tokens and decoder_model_merged only), which is how a text-only (Gemma3nForCausalLM) export loads.
//
// The prompt is token ids (--ids JSON, with the image and audio tokens already expanded), so that the run can be
// compared with gemma-onnx's on the same ids. With --chat TEXT, the processor also makes the prompt as a
// transformers.js user would: `processor.apply_chat_template` on one user turn whose content is the image, the clip
// and TEXT (in that order, as `gemma generate --image --audio` orders them), then `processor(...)` expands the
// template's `<image_soft_token>` / `<audio_soft_token>` and tokenizes (without adding <bos>: the template writes
// it); those ids are printed as "processor_ids".
// The WAV file (16-bit PCM, mono, at the feature extractor's rate) is read here: transformers.js's `read_audio`
// needs an AudioContext, which Node lacks.
//
// Prints one JSON object: {"token_ids": [...generated ids, the stop token included when one ended the run...],
// "prompt_tokens": N, "pixel_values_dims": [...] | null, "input_features_dims": [...] | null,
// "processor_ids": [...] | null, "dtypes": {session: dtype}, "transformers_js": VERSION}, plus "logits" (per step,
// the last position's logits the token was chosen from) with --logits.
// Run by tests/tests/stack_transformers_js_gemma3n.rs with NODE_PATH set to the node_modules of
// scripts/setup-stacks.
//
// usage: node transformers_js_gemma3n.cjs OUT --ids JSON [--image PNG] [--audio WAV] [--chat TEXT] [-n N] [--logits]
'use strict';

const fs = require('fs');
const tjs = require('@huggingface/transformers');

function parseArgs(argv) {
  const args = { maxNew: 8, logits: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--ids') args.ids = JSON.parse(value()).map(Number);
    else if (a === '--image') args.image = value();
    else if (a === '--audio') args.audio = value();
    else if (a === '--chat') args.chat = value();
    else if (a === '-n' || a === '--max-new-tokens') args.maxNew = Number(value());
    else if (a === '--logits') args.logits = true;
    else if (args.model === undefined && !a.startsWith('-')) args.model = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (args.model === undefined || args.ids === undefined) {
    throw new Error(
      'usage: transformers_js_gemma3n.cjs OUT --ids JSON [--image PNG] [--audio WAV] [--chat TEXT] [-n N] [--logits]',
    );
  }
  return args;
}

// The samples of a 16-bit PCM mono WAV file as float32 in [-1, 1), checked against the extractor's rate.
function readWav(path, rate) {
  const b = fs.readFileSync(path);
  if (b.toString('ascii', 0, 4) !== 'RIFF' || b.toString('ascii', 8, 12) !== 'WAVE') throw new Error(`${path}: not a WAV file`);
  let fmt = null;
  for (let at = 12; at + 8 <= b.length; ) {
    const id = b.toString('ascii', at, at + 4);
    const size = b.readUInt32LE(at + 4);
    const body = at + 8;
    if (id === 'fmt ') {
      fmt = { format: b.readUInt16LE(body), channels: b.readUInt16LE(body + 2), rate: b.readUInt32LE(body + 4), bits: b.readUInt16LE(body + 14) };
    } else if (id === 'data') {
      if (!fmt || fmt.format !== 1 || fmt.channels !== 1 || fmt.bits !== 16 || fmt.rate !== rate) {
        throw new Error(`${path}: needs 16-bit PCM mono at ${rate} Hz, found ${JSON.stringify(fmt)}`);
      }
      const n = Math.floor(Math.min(size, b.length - body) / 2);
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) out[i] = b.readInt16LE(body + 2 * i) / 32768;
      return out;
    }
    at = body + size + (size % 2);
  }
  throw new Error(`${path}: no data chunk`);
}

// Records the last-position logits of every step; appended after transformers.js's own processors (none for
// greedy decoding with the exports' generation configs), it leaves them unchanged.
class Recorder extends tjs.LogitsProcessor {
  constructor() {
    super();
    this.steps = [];
  }
  _call(inputIds, logits) {
    this.steps.push(Array.from(logits[0].data, Number));
    return logits;
  }
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  tjs.env.allowRemoteModels = false;
  const local = { local_files_only: true };
  const multimodal = args.image !== undefined || args.audio !== undefined || args.chat !== undefined;
  const Auto = multimodal ? tjs.AutoModelForImageTextToText : tjs.AutoModelForCausalLM;
  const model = await Auto.from_pretrained(args.model, { ...local, device: 'cpu' });
  const n = args.ids.length;
  const inputs = {
    input_ids: new tjs.Tensor('int64', BigInt64Array.from(args.ids, BigInt), [1, n]),
    attention_mask: new tjs.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
  };
  let processorIds = null;
  if (multimodal) {
    const processor = await tjs.AutoProcessor.from_pretrained(args.model, local);
    const image = args.image === undefined ? null : await tjs.RawImage.read(args.image);
    const rate = processor.feature_extractor.config.sampling_rate;
    const audio = args.audio === undefined ? null : readWav(args.audio, rate);
    let text = '';
    if (args.chat !== undefined) {
      const content = [];
      if (image) content.push({ type: 'image' });
      if (audio) content.push({ type: 'audio' });
      content.push({ type: 'text', text: args.chat });
      text = processor.apply_chat_template([{ role: 'user', content }], { add_generation_prompt: true });
    }
    const processed = await processor(text, image, audio, { add_special_tokens: false });
    if (image) inputs.pixel_values = processed.pixel_values;
    if (audio) {
      inputs.input_features = processed.input_features;
      inputs.input_features_mask = processed.input_features_mask;
    }
    if (args.chat !== undefined) processorIds = Array.from(processed.input_ids.data, Number);
  }
  const recorder = new Recorder();
  const out = await model.generate({
    ...inputs,
    max_new_tokens: args.maxNew,
    do_sample: false,
    logits_processor: args.logits ? [recorder] : null,
  });
  const dtypes = Object.fromEntries(
    Object.entries(model.sessions).map(([name, s]) => [name, s.config?.dtype ?? null]),
  );
  const result = {
    token_ids: Array.from(out.data, Number).slice(n),
    prompt_tokens: n,
    pixel_values_dims: inputs.pixel_values?.dims ?? null,
    input_features_dims: inputs.input_features?.dims ?? null,
    processor_ids: processorIds,
    dtypes,
    transformers_js: tjs.env.version,
  };
  if (args.logits) result.logits = recorder.steps;
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stderr.write(`transformers_js_gemma3n: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
