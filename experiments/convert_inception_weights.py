"""Converts pytorch-fid's FID Inception-v3 weights to the .npz that genjax.evaluate.inception loads:

    # https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth
    python -m experiments.convert_inception_weights --source=pt_inception-2015-12-05-6726825d.pth \\
        --output=inception_fid.npz

Needs torch (imported only to read the .pth). Checks that the source's SHA-256 starts with
6726825d (the digits in its name), maps every tensor to the flax layout (conv OIHW -> HWIO,
batch norm weight/bias/running_mean/running_var -> scale/bias/mean/var, fc [out, in] -> [in, out]),
checks the result against the network's shapes, and prints the SHA-256 of the converted
arrays (pin it as the config's expected hash if you like).
"""
from __future__ import annotations

import hashlib
import os
import sys
from typing import Any, Mapping

import numpy as np
from absl import app, flags

from genjax.evaluate import inception

_SOURCE = flags.DEFINE_string("source", "", f"pytorch-fid's {inception.SOURCE_FILENAME}")
_OUTPUT = flags.DEFINE_string("output", "", "the .npz to write")

_BATCH_NORM = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """pytorch-fid state dict (torch tensors or numpy arrays) -> {flax path: float32 array},
    checked against `inception.expected_shapes()`. Raises ValueError naming the first
    unknown key or mismatch."""
    converted = {}
    for key, value in state_dict.items():
        array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value, np.float32)
        *module, layer, name = key.split(".")
        if name == "num_batches_tracked":
            continue
        if layer == "conv" and name == "weight":
            converted["/".join(module + ["conv", "kernel"])] = array.transpose(2, 3, 1, 0)
        elif layer == "bn" and name in _BATCH_NORM:
            converted["/".join(module + ["bn", _BATCH_NORM[name]])] = array
        elif not module and layer == "fc" and name in ("weight", "bias"):
            converted["fc/kernel" if name == "weight" else "fc/bias"] = array.T if name == "weight" else array
        else:
            raise ValueError(f"unexpected tensor {key!r} {array.shape}: is this pytorch-fid's FID Inception?")
    expected = inception.expected_shapes()
    for key, shape in expected.items():
        if key not in converted:
            raise ValueError(f"the state dict lacks the tensor for {key} {shape}")
        if converted[key].shape != shape:
            raise ValueError(f"{key}: converted shape {converted[key].shape} != {shape}")
    extra = sorted(set(converted) - set(expected))
    if extra:
        raise ValueError(f"the state dict has tensors the network lacks, e.g. {extra[0]}")
    return converted


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main(argv):
    del argv
    source, output = _SOURCE.value, _OUTPUT.value
    try:
        if not source or not output:
            raise ValueError("both --source and --output are required")
        if not os.path.isfile(source):
            raise ValueError(f"no file at --source={source}: download {inception.SOURCE_URL}")
        source_sha256 = file_sha256(source)
        if not source_sha256.startswith(inception.SOURCE_SHA256_PREFIX):
            raise ValueError(f"{source} has SHA-256 {source_sha256[:12]}..., not {inception.SOURCE_FILENAME} "
                             f"({inception.SOURCE_SHA256_PREFIX}...): download {inception.SOURCE_URL}")
        try:
            import torch
        except ImportError:
            raise ValueError("reading the .pth needs torch: pip install torch (CPU is enough)") from None
        arrays = convert_state_dict(torch.load(source, map_location="cpu"))
        inception.save_weights(output, arrays, source_sha256)
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        sys.exit(1)
    print(f"wrote {output}: {len(arrays)} arrays, content SHA-256 {inception.content_sha256(arrays)}")


if __name__ == "__main__":
    app.run(main)
