#!/usr/bin/env python3
"""Runs the ONNX checker's full check (`onnx.checker.check_model(path, full_check=True)`: the structural check of
every node against its operator schema at the model's opsets, then strict shape inference) on every `*.onnx` file
of the given export folders and of their `onnx/` folders (the transformers.js layout), as a user of the `onnx`
package would. Files are checked by path, so their external
data is located as it is and never loaded.

Prints one JSON object: {"onnx": VERSION, "checked": [{"file": PATH, "opsets": {DOMAIN: VERSION}, "ok": BOOL,
"error": MESSAGE|null}, ...]}. Exits 0 when every file passes, 1 when one fails, 2 on usage errors. Run by
tests/tests/onnx_checker.rs in the venv of scripts/setup-stacks.
"""
import argparse
import json
import pathlib
import shutil
import sys
import tempfile

import onnx


def data_files(model) -> set:
    """The external-data locations the graph's initializers name."""
    return {
        entry.value
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        for entry in t.external_data
        if entry.key == "location"
    }


def check(path: pathlib.Path) -> dict:
    model = onnx.load(str(path), load_external_data=False)
    opsets = {imp.domain or "ai.onnx": imp.version for imp in model.opset_import}
    # With --triton the data file has several hard links (the Triton repository's is one), which the onnx package
    # refuses to load (by design: it guards against link attacks); those graphs are checked from a copy of the graph
    # beside a copy of the data (at the same relative path).
    links = [name for name in data_files(model)
             if (path.parent / name).is_symlink() or (path.parent / name).stat().st_nlink > 1]
    try:
        if links:
            with tempfile.TemporaryDirectory() as tmp:
                shutil.copy(path, tmp)
                for name in data_files(model):
                    (pathlib.Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(path.parent / name, pathlib.Path(tmp) / name)
                onnx.checker.check_model(str(pathlib.Path(tmp) / path.name), full_check=True)
        else:
            onnx.checker.check_model(str(path), full_check=True)
        error = None
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        error = str(e)
    return {"file": str(path), "opsets": opsets, "ok": error is None, "error": error, "data_via_copy": bool(links)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=pathlib.Path, help="export folders (every *.onnx in each)")
    args = ap.parse_args()
    files = []
    for folder in args.folders:
        found = sorted(folder.glob("*.onnx")) + sorted(folder.glob("onnx/*.onnx"))
        if not found:
            print(f"onnx_check.py: no *.onnx in {folder}", file=sys.stderr)
            return 2
        files.extend(found)
    results = [check(f) for f in files]
    print(json.dumps({"onnx": onnx.__version__, "checked": results}, indent=1))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
