"""One-line explanations of command-line mistakes in config overrides."""
from __future__ import annotations

import importlib.util
import os
import re

import ml_collections

_OVERRIDE = re.compile(r"^--?config\.([A-Za-z0-9_.]+)(=.*)?$")


def _load_config(path: str) -> ml_collections.ConfigDict:
    spec = importlib.util.spec_from_file_location("_config_for_error_message", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def unknown_override(config_path: str, argv: list[str]) -> str | None:
    """The message for the first `--config.a.b=...` naming a field the config lacks, or None."""
    try:
        config = _load_config(config_path)
    except Exception:  # the file itself is the problem; the caller reports that
        return None
    for arg in argv:
        match = _OVERRIDE.match(arg)
        if not match:
            continue
        node, walked = config, []
        for part in match.group(1).split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                where = ".".join(walked) or "the config"
                fields = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
                valid = f"; valid fields: {', '.join(fields)}" if fields else f" ({where} is not a section)"
                return f"--config.{match.group(1)}: {where} has no field {part!r}{valid}"
            node = node[part]
            walked.append(part)
    return None


def explain_config_error(argv: list[str], error: Exception) -> str:
    paths = [a.split("=", 1)[1] for a in argv if a.startswith(("--config=", "-config="))]
    config_path = paths[-1] if paths else None
    if config_path is not None and not os.path.isfile(config_path):
        return f"--config={config_path}: no such file (configs live in configs/, e.g. configs/default.py)"
    if config_path is not None:
        message = unknown_override(config_path, argv)
        if message:
            return message
    return f"could not load the config: {type(error).__name__}: {error}".replace("\n", " ")
