#!/usr/bin/env python3
"""The prefill GEMM at the 4B's MLP shape (M prompt tokens x K=2560 -> N=10240, 2 threads), through each ONNX Runtime
CPU kernel that could run it: MatMulNBits 8-bit and 4-bit (blocks of 32 to 256, accuracy_level 4: our int8/int4 exports
use 32, and 64 for the 8-bit embedding), DynamicQuantizeMatMul (MLAS's QGEMM: int8 weights with per-column scales, activations quantized per
tensor) and fp32 MatMul (MLAS's SGEMM). Random weights and inputs: this measures kernels, not models. Best of 3 runs
after a warm-up, two rounds. Needs numpy, onnx and onnxruntime (the benchmark venv has them).

    ~/.cache/gemma-onnx-bench-venv/bin/python benchmarks/prefill_gemm.py 1024
"""
import time, sys
import numpy as np
from onnx import helper, TensorProto, numpy_helper
import onnxruntime as ort

M, K, N = int(sys.argv[1]) if len(sys.argv) > 1 else 1024, 2560, 10240
rng = np.random.default_rng(0)
x = rng.standard_normal((M, K)).astype(np.float32)

def model_nbits(bits, block):
    nb = K // block
    q = rng.integers(0, 2**bits, size=(N, nb, block), dtype=np.uint8)
    if bits == 4:
        q = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8)
    scales = (np.abs(rng.standard_normal((N * nb,))) * 0.001 + 1e-4).astype(np.float32)
    inits = [numpy_helper.from_array(q, "B"), numpy_helper.from_array(scales, "S")]
    node = helper.make_node("MatMulNBits", ["X", "B", "S"], ["Y"], domain="com.microsoft", K=K, N=N, bits=bits,
                            block_size=block, accuracy_level=4)
    return node, inits

def model_dq():
    wq = rng.integers(-127, 128, size=(K, N), dtype=np.int8)
    s = (np.abs(rng.standard_normal((N,))) * 0.001 + 1e-4).astype(np.float32)
    inits = [numpy_helper.from_array(wq, "B"), numpy_helper.from_array(s, "S")]
    node = helper.make_node("DynamicQuantizeMatMul", ["X", "B", "S"], ["Y"], domain="com.microsoft")
    return node, inits

def model_fp32():
    w = (rng.standard_normal((K, N)) * 0.02).astype(np.float32)
    return helper.make_node("MatMul", ["X", "B"], ["Y"]), [numpy_helper.from_array(w, "B")]

def run(name, node, inits, reps=3):
    g = helper.make_graph([node], name, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [M, K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [M, N])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions(); so.intra_op_num_threads = 2
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    s.run(None, {"X": x})
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); s.run(None, {"X": x}); ts.append(time.perf_counter() - t)
    t = min(ts)
    print(f"{name:28s} M={M}: {t*1e3:8.1f} ms  {2*M*K*N/t/1e9:7.1f} GOPS", flush=True)

print("onnxruntime", ort.__version__)
for rnd in range(2):
    for bits in (8, 4):
        for block in (32, 64, 128, 256):
            run(f"MatMulNBits {bits}-bit blk{block}", *model_nbits(bits, block))
    run("DynamicQuantizeMatMul", *model_dq())
    run("MatMul fp32", *model_fp32())
