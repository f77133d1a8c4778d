"""ONNX Runtime 1.27.0 (the version Triton's onnxruntime backend pins) and `tritonclient`, for the Triton harnesses.

The stacks venv holds a newer `onnxruntime` for ONNX Runtime GenAI, so `scripts/setup-stacks` installs these apart,
with their dependencies, in the folder `triton-stack` of the venv (`pip install --target`), which this module puts
first on the path: import it before `google.protobuf` and `tritonclient`. `$GEMMA_TRITON_STACK_DIR` overrides the
folder.
"""

import os
import sys

WANT = "1.27.0"
folder = os.environ.get("GEMMA_TRITON_STACK_DIR") or os.path.join(sys.prefix, "triton-stack")
if not os.path.isdir(folder):
    sys.exit(f"{folder} is missing: run scripts/setup-stacks (it installs onnxruntime=={WANT} and tritonclient there)")
sys.path.insert(0, folder)

import onnxruntime  # noqa: E402

if onnxruntime.__version__ != WANT:
    sys.exit(f"onnxruntime {onnxruntime.__version__} from {onnxruntime.__file__}, {WANT} expected")
