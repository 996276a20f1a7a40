#!/usr/bin/python3
"""Checks an ONNX file with the onnx package and runs it in OpenCV's DNN module.

    onnx_run.py MODEL INPUT OUTPUT

MODEL: the ONNX file. INPUT: a safetensors file with one float32 tensor
"image". The model must pass onnx.checker.check_model (with shape
inference); OpenCV then runs it on the image and OUTPUT (safetensors,
"logits") gets the result. Prints one line of facts about the model.
Exit status 1, with the reason on stderr, when any step fails.
Standard library, numpy, onnx and cv2 only (Debian's python3-onnx,
python3-opencv), so that it is independent of lpnx."""
import json
import struct
import sys

import cv2
import numpy as np
import onnx


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, not F32")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(blob[8 + n + a:8 + n + b], dtype="<f4").reshape(info["shape"])
    return out


def write_safetensors(path, tensors):
    header, data, offset = {}, b"", 0
    for name, t in tensors.items():
        raw = np.ascontiguousarray(t, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        data += raw
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def main():
    model_path, input_path, output_path = sys.argv[1:4]
    model = onnx.load(model_path)
    onnx.checker.check_model(model, full_check=True)
    image = read_safetensors(input_path)["image"]
    net = cv2.dnn.readNetFromONNX(model_path)
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.setInput(np.ascontiguousarray(image), "image")
    logits = net.forward("logits")
    write_safetensors(output_path, {"logits": logits})
    ops = sorted({n.op_type for n in model.graph.node})
    meta = {p.key: p.value for p in model.metadata_props}
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    print(json.dumps({"ir_version": model.ir_version, "opset": model.opset_import[0].version,
                      "ops": ops, "input": model.graph.input[0].name, "input_dims": dims,
                      "output": model.graph.output[0].name, "nodes": len(model.graph.node),
                      "metadata": meta, "opencv": cv2.__version__, "onnx": onnx.__version__}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # the spec reads the reason
        print(f"onnx_run.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
