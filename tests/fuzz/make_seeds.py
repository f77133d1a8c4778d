#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target: tests/fuzz/corpus/<target>/<case>.

Seeds are small valid inputs (so the fuzzers start deep inside the readers) and the hostile cases of issue 15 and
the hostile-input tests (duplicate names, overlapping offsets, escaping shard paths, huge counts, truncations...).
Needs only the Python standard library.
Inputs copied from the repository: the tiny checkpoints' config.json files (tests/fixtures/tiny/), the chat
templates of tests/fixtures/chat/templates.json and the small images of tests/fixtures/images/.

Run from the repository root: python3 tests/fuzz/make_seeds.py. Findings of the fuzzers are added by hand as
corpus/<target>/regress-<what> (they are never overwritten here).
"""
import json
import os
import struct
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def put_variant(target, name, base, changes):
    """`base` (a JSON object) with top-level `changes` applied (None removes the key), as a seed."""
    c = json.loads(json.dumps(base))
    for k, v in changes.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    put(target, name, json.dumps(c))


# --- safetensors --------------------------------------------------------------------------------------------------

SIZES = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8, "BOOL": 1, "U8": 1, "F64": 8, "F8_E4M3": 1}


def st(tensors, metadata=None, raw_header=None, pad=0, length=None):
    """A safetensors file: tensors = [(name, dtype, shape)] laid out in order with a ramp of bytes."""
    header, offset = {}, 0
    for name, dtype, shape in tensors:
        n = SIZES[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    if metadata is not None:
        header["__metadata__"] = metadata
    text = raw_header if raw_header is not None else json.dumps(header)
    body = bytes(i % 251 for i in range(offset + pad))
    hl = len(text.encode()) if length is None else length
    return struct.pack("<Q", hl) + text.encode() + body


def safetensors_seeds():
    t = "safetensors_file"
    put(t, "f32-vector", st([("w", "F32", [4])]))
    put(t, "bf16-matrix", st([("model.embed_tokens.weight", "BF16", [4, 3])]))
    put(t, "f16-and-f32", st([("a", "F16", [2, 2]), ("b", "F32", [3])], {"format": "pt"}))
    put(t, "scalar", st([("s", "F32", [])]))
    put(t, "empty-tensor", st([("e", "BF16", [0, 4]), ("x", "F32", [1])]))
    put(t, "no-tensors", st([]))
    put(t, "other-dtype-i64", st([("ids", "I64", [2]), ("w", "F32", [1])]))
    put(t, "bool-and-f8", st([("m", "BOOL", [3]), ("q", "F8_E4M3", [2])]))
    put(t, "metadata-only", st([], {"a": "b"}))
    put(t, "too-short", b"\x05\x00\x00")
    put(t, "header-length-huge", struct.pack("<Q", 2**63) + b"{}")
    put(t, "header-past-end", st([("w", "F32", [1])], length=4096))
    put(t, "not-json", st([], raw_header="not json at all"))
    put(t, "json-array", st([], raw_header="[1, 2, 3]"))
    put(t, "duplicate-name", st([], raw_header='{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
                                             '"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', pad=4))
    put(t, "overlap", st([], raw_header='{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, '
                                      '"b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}', pad=12))
    put(t, "end-before-begin", st([], raw_header='{"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}}',
                                  pad=8))
    put(t, "span-mismatch", st([], raw_header='{"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}',
                               pad=8))
    put(t, "unknown-dtype", st([], raw_header='{"a": {"dtype": "F17", "shape": [1], "data_offsets": [0, 4]}}',
                               pad=4))
    put(t, "shape-overflow", st([], raw_header='{"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], '
                                               '"data_offsets": [0, 0]}}'))
    put(t, "data-past-end", st([], raw_header='{"a": {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}}',
                               pad=16))
    put(t, "offsets-not-numbers", st([], raw_header='{"a": {"dtype": "F32", "shape": [1], "data_offsets": '
                                                    '["0", 4]}}', pad=4))
    put(t, "negative-shape", st([], raw_header='{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}',
                                pad=4))
    put(t, "deep-nesting", st([], raw_header='{"__metadata__": ' + "[" * 200 + "]" * 200 + "}"))
    put(t, "header-not-utf8", struct.pack("<Q", 4) + b'{"\xff"')
    put(t, "unicode-name", st([("gewicht.\u00e9\u4e2d", "F16", [2])]))


# --- safetensors index (next to the harness's two shards: a, b in 00001 and c in 00002) -------------------------

S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def index_seeds():
    t = "safetensors_index"
    good = {"metadata": {"total_size": 30}, "weight_map": {"a": S1, "b": S1, "c": S2}}
    put(t, "valid", json.dumps(good))
    put(t, "valid-one-shard", json.dumps({"weight_map": {"a": S1}}))
    put(t, "valid-dot-slash", json.dumps({"weight_map": {"c": "./" + S2}}))
    put(t, "tensor-in-wrong-shard", json.dumps({"weight_map": {"a": S2}}))
    put(t, "missing-shard", json.dumps({"weight_map": {"a": "model-00003-of-00003.safetensors"}}))
    put(t, "absolute-path", json.dumps({"weight_map": {"a": "/etc/passwd"}}))
    put(t, "parent-dir", json.dumps({"weight_map": {"a": "../" + S1}}))
    put(t, "empty-file-name", json.dumps({"weight_map": {"a": ""}}))
    put(t, "folder-as-shard", json.dumps({"weight_map": {"a": "."}}))
    put(t, "index-as-shard", json.dumps({"weight_map": {"a": "model.safetensors.index.json"}}))
    put(t, "entry-not-string", json.dumps({"weight_map": {"a": 1}}))
    put(t, "weight-map-array", json.dumps({"weight_map": [S1]}))
    put(t, "no-weight-map", json.dumps({"metadata": {}}))
    put(t, "empty-weight-map", json.dumps({"weight_map": {}}))
    put(t, "not-json", "weight_map: a")
    put(t, "top-level-array", "[]")
    put(t, "duplicate-key", '{"weight_map": {"a": "%s", "a": "%s"}}' % (S1, S2))
    put(t, "empty", b"")


# --- config.json --------------------------------------------------------------------------------------------------

def config_seeds():
    t = "config_json"
    tiny = os.path.join(FIXTURES, "tiny")
    base = None
    for name in sorted(os.listdir(tiny)):
        with open(os.path.join(tiny, name, "config.json"), "rb") as f:
            data = f.read()
        put(t, "tiny-" + name, data)
        if name == "gqa-f16-hf5":
            base = json.loads(data)
    mm = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
          "text_config": {"model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 2,
                          "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 32,
                          "intermediate_size": 128, "vocab_size": 300},
          "vision_config": {"hidden_size": 32, "image_size": 56, "patch_size": 14, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "intermediate_size": 64},
          "mm_tokens_per_image": 4, "boi_token_index": 255, "eoi_token_index": 256, "image_token_index": 257}
    put(t, "multimodal", json.dumps(mm))

    def variant(name, **changes):
        put_variant(t, name, base, changes)

    variant("layers-huge", num_hidden_layers=1000000000)
    variant("heads-zero", num_attention_heads=0)
    variant("kv-heads-zero", num_key_value_heads=0)
    variant("kv-heads-not-dividing", num_key_value_heads=3)
    variant("head-dim-zero", head_dim=0)
    variant("vocab-zero", vocab_size=0)
    variant("eos-outside-vocab", eos_token_id=[1, 999999])
    variant("window-too-wide", sliding_window=4611686018427387904)
    variant("layer-types-short", layer_types=["full_attention"])
    variant("layer-types-unknown", layer_types=["weird"] * base.get("num_hidden_layers", 1))
    variant("rope-scaling-odd", rope_scaling={"rope_type": "yarn", "factor": -1})
    variant("eps-string", rms_norm_eps="1e-6")
    variant("no-architectures", architectures=None, model_type=None)
    variant("unknown-architecture", architectures=["LlamaForCausalLM"], model_type="llama")
    mm2 = json.loads(json.dumps(mm))
    mm2["vision_config"]["patch_size"] = 0
    put(t, "vision-patch-zero", json.dumps(mm2))
    mm3 = json.loads(json.dumps(mm))
    mm3["mm_tokens_per_image"] = 0
    put(t, "mm-tokens-zero", json.dumps(mm3))
    mm4 = json.loads(json.dumps(mm))
    mm4["vision_config"]["image_size"] = 50
    put(t, "vision-size-not-multiple", json.dumps(mm4))
    put(t, "top-level-array", "[1]")
    put(t, "not-json", "{")
    put(t, "deep-nesting", "[" * 300 + "]" * 300)


# --- GGUF ---------------------------------------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32T, BOOL, STR, ARR, U64, I64, F64 = range(13)


def gstr(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gval(kind, v):
    if kind == STR:
        return gstr(v)
    if kind == ARR:
        inner, items = v
        out = struct.pack("<IQ", inner, len(items))
        return out + b"".join(gval(inner, x) for x in items)
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32T: "<f", BOOL: "<?", U64: "<Q",
           I64: "<q", F64: "<d"}[kind]
    return struct.pack(fmt, v)


GGML = {"F32": (0, 4, 1), "F16": (1, 2, 1), "Q8_0": (8, 34, 32), "Q4_0": (2, 18, 32), "BF16": (30, 2, 1)}


def gguf_file(kv, tensors, version=3, alignment=32, magic=b"GGUF"):
    """kv = [(key, kind, value)]; tensors = [(name, dims fastest first, ggml type name)]."""
    out = magic + struct.pack("<IQQ", version, len(tensors), len(kv))
    for key, kind, value in kv:
        out += gstr(key) + struct.pack("<I", kind) + gval(kind, value)
    offset, datas = 0, []
    for name, dims, tname in tensors:
        tid, bsize, belems = GGML[tname]
        n = 1
        for d in dims:
            n *= d
        size = n // belems * bsize
        out += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", tid, offset)
        data = bytes((i * 7 + 3) % 256 for i in range(size))
        if tname in ("F32",):
            data = b"".join(struct.pack("<f", 1.0 + (i % 5) * 0.25) for i in range(n))
        if tname in ("F16", "BF16"):
            data = b"\x00\x3c" * n
        if tname == "Q8_0":
            data = b"".join(b"\x00\x3c" + bytes(range(32)) for _ in range(n // 32))
        if tname == "Q4_0":
            data = b"".join(b"\x00\x3c" + bytes(range(16)) for _ in range(n // 32))
        datas.append(data)
        offset += (size + alignment - 1) // alignment * alignment
    out += b"\x00" * ((-len(out)) % alignment)
    for d in datas:
        out += d + b"\x00" * ((-len(d)) % alignment)
    return out


def gguf_model(arch="gemma3", layers=1, hidden=32, ff=64, heads=2, kv_heads=1, head_dim=16, vocab=True,
               dtype2d="F16", extra=()):
    kv = [("general.architecture", STR, arch), ("general.name", STR, "tiny"),
          (f"{arch}.context_length", U32, 64), (f"{arch}.embedding_length", U32, hidden),
          (f"{arch}.block_count", U32, layers), (f"{arch}.feed_forward_length", U32, ff),
          (f"{arch}.attention.head_count", U32, heads), (f"{arch}.attention.head_count_kv", U32, kv_heads),
          (f"{arch}.attention.layer_norm_rms_epsilon", F32T, 1e-6),
          (f"{arch}.attention.key_length", U32, head_dim), (f"{arch}.attention.value_length", U32, head_dim)]
    if arch in ("gemma2", "gemma3"):
        kv.append((f"{arch}.attention.sliding_window", U32, 16))
    if arch == "gemma2":
        kv += [(f"{arch}.attn_logit_softcapping", F32T, 50.0), (f"{arch}.final_logit_softcapping", F32T, 30.0)]
    if arch == "gemma3":
        kv.append((f"{arch}.rope.freq_base", F32T, 10000.0))
    n_vocab = 64
    if vocab:
        tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "\u2581", "\n"]
        tokens += [chr(ord("a") + i) for i in range(26)] + ["\u2581" + chr(ord("a") + i) for i in range(26)]
        tokens += ["<0x%02X>" % i for i in range(4)]
        n_vocab = len(tokens)
        types = [3, 3, 3, 2, 3, 3] + [1] * (n_vocab - 10) + [6] * 4
        kv += [("tokenizer.ggml.model", STR, "llama"), ("tokenizer.ggml.pre", STR, "default"),
               ("tokenizer.ggml.tokens", ARR, (STR, tokens)),
               ("tokenizer.ggml.scores", ARR, (F32T, [float(-i) for i in range(n_vocab)])),
               ("tokenizer.ggml.token_type", ARR, (I32, types)),
               ("tokenizer.ggml.bos_token_id", U32, 2), ("tokenizer.ggml.eos_token_id", U32, 1),
               ("tokenizer.ggml.unknown_token_id", U32, 3), ("tokenizer.ggml.padding_token_id", U32, 0),
               ("tokenizer.ggml.add_bos_token", BOOL, True), ("tokenizer.ggml.add_space_prefix", BOOL, False),
               ("tokenizer.chat_template", STR, "{{ bos_token }}{% for m in messages %}{{ m['content'] }}"
                                                "{% endfor %}")]
    kv += list(extra)
    q, k = heads * head_dim, kv_heads * head_dim
    tensors = [("token_embd.weight", [hidden, n_vocab], dtype2d), ("output_norm.weight", [hidden], "F32")]
    for i in range(layers):
        b = f"blk.{i}."
        tensors += [(b + "attn_norm.weight", [hidden], "F32"), (b + "attn_q.weight", [hidden, q], dtype2d),
                    (b + "attn_k.weight", [hidden, k], dtype2d), (b + "attn_v.weight", [hidden, k], dtype2d),
                    (b + "attn_output.weight", [q, hidden], dtype2d), (b + "ffn_gate.weight", [hidden, ff], dtype2d),
                    (b + "ffn_up.weight", [hidden, ff], dtype2d), (b + "ffn_down.weight", [ff, hidden], dtype2d),
                    (b + "ffn_norm.weight", [hidden], "F32")]
        if arch != "gemma":
            tensors += [(b + "post_attention_norm.weight", [hidden], "F32"),
                        (b + "post_ffw_norm.weight", [hidden], "F32")]
        if arch == "gemma3":
            tensors += [(b + "attn_q_norm.weight", [head_dim], "F32"), (b + "attn_k_norm.weight", [head_dim], "F32")]
    return kv, tensors


def gguf_seeds():
    t = "gguf"
    for arch in ("gemma", "gemma2", "gemma3"):
        put(t, f"tiny-{arch}", gguf_file(*gguf_model(arch)))
    put(t, "tiny-gemma3-q8_0", gguf_file(*gguf_model("gemma3", dtype2d="Q8_0")))
    put(t, "tiny-gemma3-q4_0", gguf_file(*gguf_model("gemma3", dtype2d="Q4_0")))
    put(t, "tiny-gemma3-bf16-no-vocab", gguf_file(*gguf_model("gemma3", dtype2d="BF16", vocab=False)))
    put(t, "version-2", gguf_file(*gguf_model("gemma"), version=2))
    put(t, "version-1", gguf_file(*gguf_model("gemma"), version=1))
    put(t, "bad-magic", gguf_file(*gguf_model("gemma"), magic=b"GGML"))
    put(t, "arch-llama", gguf_file(*gguf_model("gemma"), magic=b"GGUF").replace(b"gemma", b"llama", 1))
    kv, tensors = gguf_model("gemma3")
    put(t, "truncated-data", gguf_file(kv, tensors)[:-100])
    put(t, "truncated-metadata", gguf_file(kv, tensors)[:200])
    put(t, "metadata-only", gguf_file(kv, []))
    put(t, "duplicate-key", gguf_file(kv + [kv[0]], tensors))
    put(t, "alignment-odd", gguf_file(kv + [("general.alignment", U32, 3)], tensors))
    put(t, "alignment-zero", gguf_file(kv + [("general.alignment", U32, 0)], tensors))
    put(t, "huge-counts", b"GGUF" + struct.pack("<IQQ", 3, 2**62, 2**62))
    put(t, "huge-string", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**60) + b"abc")
    put(t, "unknown-value-type", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("k") + struct.pack("<I", 99))
    put(t, "nested-array", b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("k") + struct.pack("<I", ARR)
        + struct.pack("<IQ", ARR, 1) + struct.pack("<IQ", ARR, 2**40))
    put(t, "layers-huge", gguf_file(*gguf_model("gemma3", extra=[("gemma3.block_count", U32, 1000000000)])))
    put(t, "heads-zero", gguf_file(*gguf_model("gemma3", heads=0)))
    put(t, "unknown-tensor", gguf_file(kv, tensors + [("blk.9.attn_q.weight", [32, 32], "F16")]))
    overflow = gguf_file(kv, [("token_embd.weight", [4, 4], "F32")])
    put(t, "tensor-dims-overflow", overflow.replace(struct.pack("<QQ", 4, 4), struct.pack("<QQ", 2**32, 2**32), 1))
    put(t, "empty", b"")


# --- gemma-onnx.json ----------------------------------------------------------------------------------------------

def manifest_seeds():
    t = "manifest"
    m = {"format": "gemma-onnx", "format_version": 1, "family": "gemma3", "architecture": "Gemma3ForCausalLM",
         "precision": "fp32", "source_format": "safetensors", "graph": "cpu", "decoder": "model.onnx",
         "num_layers": 2, "num_attention_heads": 4, "num_kv_heads": 2, "head_dim": 32, "hidden_size": 64,
         "vocab_size": 256, "sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"],
         "max_position_embeddings": 128, "bos_token_id": 2, "pad_token_id": 0, "eos_token_ids": [1],
         "kv_dtype": "float32", "logits_dtype": "float32", "exporter_version": "0.1.0",
         "files": {"model.onnx": {"size": 65953, "sampled_crc32": "0890075a"},
                   "model.onnx_data": {"size": 2785280, "sampled_crc32": "dec97c99"}},
         "portable_logits_to_keep_input": "num_logits_to_keep",
         "cpu": {"logits_to_keep_input": "num_logits_to_keep", "kv_shared_buffer": True,
                 "global_cache_dim": "global_cache_length", "sliding_cache_dim": "sliding_cache_length",
                 "multi_token_steps_need_batch_1": True}}
    put(t, "cpu-fp32", json.dumps(m, indent=2))
    portable = {k: v for k, v in m.items() if k != "cpu"}
    portable.update(graph="portable", precision="fp16", kv_dtype="float16", logits_dtype="float16")
    put(t, "portable-fp16", json.dumps(portable))
    vision = json.loads(json.dumps(portable))
    vision["architecture"] = "Gemma3ForConditionalGeneration"
    vision["vision"] = {"encoder": "vision_encoder.onnx", "encoder_data": "vision_encoder.onnx_data",
                        "embed_tokens": "embed_tokens.onnx", "decoder_with_embeds": "decoder_model_merged.onnx",
                        "image_size": 56, "patch_size": 14, "num_channels": 3, "mm_tokens_per_image": 4,
                        "boi_token_id": 250, "eoi_token_id": 251, "image_token_id": 252,
                        "preprocess": {"file": "preprocess.onnx", "config": {
                            "height": 56, "width": 56, "rescale_factor": 1 / 255, "do_normalize": True,
                            "image_mean": [0.5] * 3, "image_std": [0.5] * 3, "do_pan_and_scan": False,
                            "pan_and_scan_min_crop_size": 256, "pan_and_scan_max_num_crops": 4,
                            "pan_and_scan_min_ratio_to_activate": 1.2, "source": None}}}
    put(t, "vision", json.dumps(vision))

    def variant(name, base=m, **changes):
        put_variant(t, name, base, changes)

    variant("format-other", format="onnx")
    variant("format-version-future", format_version=99)
    variant("no-format-version", format_version=None)
    variant("hidden-size-one", hidden_size=1)
    variant("heads-zero", num_attention_heads=0)
    variant("kv-heads-zero", num_kv_heads=0)
    variant("layer-types-short", layer_types=["full_attention"])
    variant("decoder-absolute", decoder="/etc/passwd")
    variant("decoder-parent", decoder="../model.onnx")
    variant("files-escape", files={"../x": {"size": 1, "sampled_crc32": "00000000"}})
    variant("crc-not-hex", files={"model.onnx": {"size": 1, "sampled_crc32": "zz"}})
    variant("eos-outside-vocab", eos_token_ids=[4000000000])
    variant("window-huge", sliding_window=2**62)
    variant("precision-odd", precision="int3")
    variant("graph-odd", graph="gpu")
    variant("mm-tokens-zero", base=vision, vision=dict(vision["vision"], mm_tokens_per_image=0))
    variant("vision-patch-zero", base=vision, vision=dict(vision["vision"], patch_size=0))
    variant("vision-file-escapes", base=vision, vision=dict(vision["vision"], encoder="../../etc/passwd"))
    put(t, "not-json", "{format")
    put(t, "top-level-string", '"gemma-onnx"')
    put(t, "empty", b"")


# --- chat templates -----------------------------------------------------------------------------------------------

def template_seeds():
    t = "chat_template"
    with open(os.path.join(FIXTURES, "chat", "templates.json")) as f:
        templates = json.load(f)["templates"]
    items = templates.items() if isinstance(templates, dict) else enumerate(templates)
    for name, source in items:
        if isinstance(source, dict):
            source = source.get("template") or source.get("source") or json.dumps(source)
        put(t, f"fixture-{name}", source)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    simple = "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    put(t, "simple-with-parts", simple.encode() + b"\x00" + json.dumps(msgs).encode())
    put(t, "raise-exception", "{{ raise_exception('Conversation roles must alternate') }}")
    put(t, "strftime", "{{ strftime_now('%Y-%m-%d %H:%M') }}")
    put(t, "syntax-error", "{% for m in messages %}{{ m.content }")
    put(t, "loop-limited", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    put(t, "pycompat-methods", "{{ messages[0]['content'].strip().upper().split(' ') | join('-') }}"
                               "{{ 'a,b'.startswith('a') }}{{ {'k': 1}.items() | list }}")
    put(t, "namespace-and-macros", "{% set ns = namespace(n=0) %}{% macro m(x) %}[{{ x }}]{% endmacro %}"
                                   "{% for x in messages %}{% set ns.n = ns.n + 1 %}{{ m(x.role) }}{% endfor %}"
                                   "{{ ns.n }}{{ messages | tojson }}")
    put(t, "messages-not-list", simple.encode() + b"\x00" + b'{"role": "user"}')
    put(t, "empty", b"")


# --- images -------------------------------------------------------------------------------------------------------

def png(width, height, color_type, depth, rows, plte=None):
    """A PNG built by hand: rows are raw scanlines without the filter byte."""
    chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + r for r in rows)
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))
    if plte:
        out += chunk(b"PLTE", plte)
    return out + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def bmp(width, height):
    """A 24-bit BMP built by hand (rows bottom-up, padded to 4 bytes)."""
    stride = (width * 3 + 3) // 4 * 4
    pixels = b"".join(bytes((x * 40 % 256, y * 60 % 256, 128) * 1)[:3] for y in range(height) for x in range(width))
    rows = b"".join(pixels[y * width * 3:(y + 1) * width * 3].ljust(stride, b"\x00") for y in range(height))
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(rows), 0, 0, 54) + header + rows


def exif_orientation(jpeg, value):
    """`jpeg` with an APP1 Exif segment holding only the Orientation tag, right after SOI."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1)
    tiff += struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + struct.pack("<I", 0)
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def image_seeds():
    """Hand-built PNG and BMP files, and variants of the JPEG from CPython's test data (cpython-python.*: added by
    hand, PSF license: small real files from other encoders)."""
    t = "image"
    images = os.path.join(FIXTURES, "images")
    for name in ("tiny-20x30.png", "bomb-100000x100000.png", "zero-0x5.png", "grey16-8x4.png"):
        put(t, "fixture-" + name, open(os.path.join(images, name), "rb").read())
    put(t, "empty", b"")
    put(t, "not-an-image", b"hello, world")
    put(t, "rgb-3x2.png", png(3, 2, 2, 8, [bytes(range(9)), bytes(range(9, 18))]))
    put(t, "rgba-2x2.png", png(2, 2, 6, 8, [b"\xff\x00\x00\x80\x00\xff\x00\x00", b"\x00\x00\xff\xff" * 2]))
    put(t, "grey-alpha-2x1.png", png(2, 1, 4, 8, [b"\x10\x80\xf0\x00"]))
    put(t, "grey16-2x2.png", png(2, 2, 0, 16, [b"\xff\xff\x00\x01", b"\x80\x00\x12\x34"]))
    put(t, "rgb16-1x1.png", png(1, 1, 2, 16, [b"\xff\xff\x00\x00\x80\x00"]))
    put(t, "palette-2x2.png", png(2, 2, 3, 8, [b"\x00\x01", b"\x01\x00"], plte=b"\xff\x00\x00\x00\x00\xff"))
    put(t, "palette-index-outside.png", png(1, 1, 3, 8, [b"\x07"], plte=b"\xff\x00\x00"))
    put(t, "grey1bit-9x1.png", png(9, 1, 0, 1, [b"\xaa\x80"]))
    put(t, "short-idat.png", png(4, 4, 2, 8, [b"\x01" * 12]))
    put(t, "rgb-5x3.bmp", bmp(5, 3))
    put(t, "bmp-negative-height.bmp", bmp(2, 2).replace(struct.pack("<i", 2) + struct.pack("<H", 1),
                                                        struct.pack("<i", -2) + struct.pack("<H", 1), 1))
    put(t, "gif-1x1.gif", b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00!\xf9\x04\x01\x00"
                          b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
    jpg_path = os.path.join(CORPUS, t, "cpython-python.jpg")
    if os.path.exists(jpg_path):
        jpg = open(jpg_path, "rb").read()
        put(t, "truncated-half.jpg", jpg[: len(jpg) // 2])
        put(t, "no-end-marker.jpg", jpg[:-2])
        for value in (3, 6, 8, 9):
            put(t, f"orientation-{value}.jpg", exif_orientation(jpg, value))
    ihdr = struct.pack(">IIBBBBB", 70000, 70000, 8, 2, 0, 0, 0)
    chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d) & 0xFFFFFFFF)
    put(t, "huge-declared.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


# --- gemma serve requests -----------------------------------------------------------------------------------------

def serve_seeds():
    t = "serve_request"
    png1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
    user = {"role": "user", "content": "Hello"}
    put(t, "chat-minimal", json.dumps({"messages": [user]}))
    put(t, "chat-full", json.dumps({
        "model": "gemma", "messages": [{"role": "system", "content": "Be brief."}, user,
                                       {"role": "assistant", "content": "Hi."}, {"role": "developer", "content": "x"}],
        "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "seed": -3, "stop": ["\n", "END"], "stream": True,
        "stream_options": {"include_usage": True}, "n": 1, "unknown_field": [1, {"a": None}]}))
    put(t, "chat-parts-image", json.dumps({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe "}, {"type": "image_url", "image_url": {"url": "data:image/png;base64," + png1}},
        {"type": "text", "text": "briefly."}]}]}))
    put(t, "chat-image-not-base64", json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png,%89PNG%0D%0A"}}]}]}))
    put(t, "chat-image-bad-base64", json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@=="}}]}]}))
    put(t, "chat-image-remote", json.dumps({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}))
    put(t, "chat-image-in-assistant", json.dumps({"messages": [{"role": "assistant", "content": [
        {"type": "image_url", "image_url": {"url": "data:;base64,AAAA"}}]}]}))
    put(t, "chat-unknown-part", json.dumps({"messages": [{"role": "user", "content": [{"type": "audio", "x": 1}]}]}))
    put(t, "chat-nested-parts", json.dumps({"messages": [{"role": "user", "content": [[[{"type": "text"}]]]}]}))
    put(t, "chat-null-content", json.dumps({"messages": [{"role": "assistant", "content": None}, user]}))
    put(t, "chat-bad-role", json.dumps({"messages": [{"role": "tool", "content": "x"}]}))
    put(t, "chat-empty-messages", json.dumps({"messages": []}))
    put(t, "chat-huge-max-tokens", json.dumps({"messages": [user], "max_tokens": 18446744073709551615}))
    put(t, "chat-max-tokens-i64-max", json.dumps({"messages": [user], "max_completion_tokens": 9223372036854775807}))
    put(t, "chat-max-tokens-zero", json.dumps({"messages": [user], "max_tokens": 0}))
    put(t, "chat-max-tokens-float", json.dumps({"messages": [user], "max_tokens": 1.5e300}))
    put(t, "chat-temperature-huge", '{"messages": [{"role": "user", "content": "x"}], "temperature": 1e39}')
    put(t, "chat-temperature-tiny", '{"messages": [{"role": "user", "content": "x"}], "temperature": 1e-45}')
    put(t, "chat-top-p-zero", json.dumps({"messages": [user], "top_p": 0}))
    put(t, "chat-seed-huge", json.dumps({"messages": [user], "seed": -9223372036854775808}))
    put(t, "chat-n-2", json.dumps({"messages": [user], "n": 2}))
    put(t, "chat-stop-five", json.dumps({"messages": [user], "stop": ["a", "b", "c", "d", "e"]}))
    put(t, "chat-stop-empty", json.dumps({"messages": [user], "stop": ""}))
    put(t, "chat-unicode", json.dumps({"messages": [{"role": "user", "content": "\u00e9\ud83d\ude00 \u0000"}]}))
    put(t, "chat-lone-surrogate", '{"messages": [{"role": "user", "content": "\\ud800"}]}')
    put(t, "completion-minimal", json.dumps({"prompt": "Once upon a time"}))
    put(t, "completion-list-one", json.dumps({"prompt": ["Once"], "max_tokens": 5, "stop": "."}))
    put(t, "completion-list-two", json.dumps({"prompt": ["a", "b"]}))
    put(t, "completion-tokens", json.dumps({"prompt": [1, 2, 3]}))
    put(t, "not-json", "POST /v1/chat/completions HTTP/1.1")
    put(t, "truncated", json.dumps({"messages": [user]})[:-3])
    put(t, "deep-nesting", "[" * 200 + "]" * 200)
    put(t, "deep-nesting-object", '{"messages": ' + "[" * 1000)
    put(t, "duplicate-keys", '{"messages": [], "messages": [{"role": "user", "content": "x"}]}')
    put(t, "empty", b"")


if __name__ == "__main__":
    for seeds in (safetensors_seeds, index_seeds, config_seeds, gguf_seeds, manifest_seeds, template_seeds,
                  image_seeds, serve_seeds):
        seeds()
    for target in sorted(os.listdir(CORPUS)):
        print(f"{target}: {len(os.listdir(os.path.join(CORPUS, target)))} files")
