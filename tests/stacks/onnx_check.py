#!/usr/bin/env python3
"""Runs the ONNX checker's full check (`onnx.checker.check_model(path, full_check=True)`: the structural check of
every node against its operator schema at the model's opsets, then strict shape inference) on every `*.onnx` file
of the given export folders, as a user of the `onnx` package would. Files are checked by path, so their external
data is located as it is and never loaded.

Prints one JSON object: {"onnx": VERSION, "checked": [{"file": PATH, "opsets": {DOMAIN: VERSION}, "ok": BOOL,
"error": MESSAGE|null}, ...]}. Exits 0 when every file passes, 1 when one fails, 2 on usage errors. Run by
tests/tests/onnx_checker.rs in the venv of scripts/setup-stacks.
"""
import argparse
import json
import pathlib
import sys

import onnx


def check(path: pathlib.Path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    try:
        onnx.checker.check_model(str(path), full_check=True)
        error = None
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        error = str(e)
    return {"file": str(path), "opsets": opsets, "ok": error is None, "error": error}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=pathlib.Path, help="export folders (every *.onnx in each)")
    args = ap.parse_args()
    files = []
    for folder in args.folders:
        found = sorted(folder.glob("*.onnx"))
        if not found:
            print(f"onnx_check.py: no *.onnx in {folder}", file=sys.stderr)
            return 2
        files.extend(found)
    results = [check(f) for f in files]
    print(json.dumps({"onnx": onnx.__version__, "checked": results}, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
