#!/usr/bin/env node
// Greedy generation with transformers.js (`@huggingface/transformers`, Node, onnxruntime-node) on a gemma-onnx
// portable export folder, as a user of transformers.js would run it: `AutoModelForCausalLM.from_pretrained(OUT)`
// with local files only, the precision picked by `dtype` (default: the export's, from config.json's
// `transformers.js_config`). Prints one JSON object:
// {"token_ids": [...generated ids, the stop token included when one ended the run...], "prompt_tokens": N,
//  "prompt_ids": [...],
//  "dtype": ..., "transformers_js": VERSION}, plus "logits" (per step, the last position's logits the token was
// chosen from) with --logits.
//
// The prompt is token ids (--ids '[2, 17, 5]', the tiny fixtures have no tokenizer) or text (--prompt, encoded by
// `AutoTokenizer.from_pretrained(OUT)`, which adds <bos> as the tokenizer's config says). Run by
// tests/tests/stack_transformers_js.rs with NODE_PATH set to the node_modules of scripts/setup-stacks.
//
// usage: node transformers_js_generate.cjs OUT (--ids JSON | --prompt TEXT) [-n N] [--dtype D] [--logits]
'use strict';

const tjs = require('@huggingface/transformers');

function parseArgs(argv) {
  const args = { maxNew: 32, logits: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--ids') args.ids = JSON.parse(value()).map(Number);
    else if (a === '--prompt') args.prompt = value();
    else if (a === '-n' || a === '--max-new-tokens') args.maxNew = Number(value());
    else if (a === '--dtype') args.dtype = value();
    else if (a === '--logits') args.logits = true;
    else if (args.model === undefined && !a.startsWith('-')) args.model = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (args.model === undefined || (args.ids === undefined) === (args.prompt === undefined)) {
    throw new Error('usage: transformers_js_generate.cjs OUT (--ids JSON | --prompt TEXT) [-n N] [--dtype D] [--logits]');
  }
  return args;
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
  const options = { local_files_only: true, device: 'cpu' };
  if (args.dtype) options.dtype = args.dtype;
  const model = await tjs.AutoModelForCausalLM.from_pretrained(args.model, options);
  let ids = args.ids;
  if (ids === undefined) {
    const tokenizer = await tjs.AutoTokenizer.from_pretrained(args.model, { local_files_only: true });
    ids = tokenizer.encode(args.prompt);
  }
  if (ids.length === 0) throw new Error('empty prompt');
  const n = ids.length;
  const input_ids = new tjs.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, n]);
  const attention_mask = new tjs.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
  const recorder = new Recorder();
  const out = await model.generate({
    input_ids,
    attention_mask,
    max_new_tokens: args.maxNew,
    do_sample: false,
    logits_processor: args.logits ? [recorder] : null,
  });
  const all = Array.from(out.data, Number);
  const result = {
    token_ids: all.slice(n),
    prompt_tokens: n,
    prompt_ids: ids,
    dtype: model.sessions.model.config?.dtype ?? null,
    transformers_js: tjs.env.version,
  };
  if (args.logits) result.logits = recorder.steps;
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  process.stderr.write(`transformers_js_generate: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});