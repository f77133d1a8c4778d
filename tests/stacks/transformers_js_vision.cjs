#!/usr/bin/env node
// Greedy generation with an image by transformers.js (`@huggingface/transformers`, Node, onnxruntime-node) on a
// gemma-onnx Gemma 3 vision export, as a user of transformers.js would run it:
// `AutoModelForImageTextToText.from_pretrained(OUT)` with local files only (the sessions in OUT/onnx/, the dtype from
// config.json's `transformers.js_config`). Prints one JSON object:
// {"token_ids": [...generated ids...], "prompt_tokens": N, "prompt_ids": [...], "pixel_values_dims": [...], "dtype": ...,
//  "transformers_js": VERSION}.
//
// With --prompt TEXT (an export with the checkpoint's tokenizer and chat template), `AutoProcessor.from_pretrained(OUT)`
// expands TEXT's `<start_of_image>` into the image tokens and makes `pixel_values`, as transformers.js users do.
// With --ids JSON, the ids must already hold the image tokens, and `AutoImageProcessor.from_pretrained(OUT)` (the
// same preprocessor_config.json) makes `pixel_values`.
// Run by tests/tests/stack_transformers_js_vision.rs with NODE_PATH set to the node_modules of scripts/setup-stacks.
//
// Without --image the same sessions generate from text alone (no image tokens: all positions are text).
//
// usage: node transformers_js_vision.cjs OUT [--image PNG] (--ids JSON | --prompt TEXT) [-n N]
'use strict';

const tjs = require('@huggingface/transformers');

function parseArgs(argv) {
  const args = { maxNew: 16 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--ids') args.ids = JSON.parse(value()).map(Number);
    else if (a === '--prompt') args.prompt = value();
    else if (a === '--image') args.image = value();
    else if (a === '-n' || a === '--max-new-tokens') args.maxNew = Number(value());
    else if (args.model === undefined && !a.startsWith('-')) args.model = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (args.model === undefined || (args.ids === undefined) === (args.prompt === undefined)) {
    throw new Error('usage: transformers_js_vision.cjs OUT [--image PNG] (--ids JSON | --prompt TEXT) [-n N]');
  }
  return args;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  tjs.env.allowRemoteModels = false;
  const local = { local_files_only: true };
  const model = await tjs.AutoModelForImageTextToText.from_pretrained(args.model, { ...local, device: 'cpu' });
  const image = args.image === undefined ? null : await tjs.RawImage.read(args.image);
  let inputs;
  if (args.prompt !== undefined) {
    const processor = await tjs.AutoProcessor.from_pretrained(args.model, local);
    inputs = await processor(args.prompt, image);
  } else {
    const n = args.ids.length;
    inputs = {
      input_ids: new tjs.Tensor('int64', BigInt64Array.from(args.ids, BigInt), [1, n]),
      attention_mask: new tjs.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
    };
    if (image) {
      const imageProcessor = await tjs.AutoImageProcessor.from_pretrained(args.model, local);
      inputs.pixel_values = (await imageProcessor(image)).pixel_values;
    }
  }
  const n = inputs.input_ids.dims[1];
  const out = await model.generate({ ...inputs, max_new_tokens: args.maxNew, do_sample: false });
  const result = {
    token_ids: Array.from(out.data, Number).slice(n),
    prompt_tokens: n,
    prompt_ids: Array.from(inputs.input_ids.data, Number),
    pixel_values_dims: inputs.pixel_values?.dims ?? null,
    dtype: model.sessions.decoder_model_merged.config?.dtype ?? null,
    transformers_js: tjs.env.version,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stderr.write(`transformers_js_vision: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
