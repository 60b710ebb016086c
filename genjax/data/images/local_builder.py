"""Base of the tfds builders here: data made on this machine, nothing downloaded.

Two adjustments to `tfds.core.GeneratorBasedBuilder`:
- not registered by name (no import side effect; construct the builder explicitly);
- no code path: tfds looks for a download-checksums file beside the builder's module, and
  finding that module inside a package imports `importlib_resources`, which tfds does not
  declare as a dependency. A builder that downloads nothing has no checksums to find.
"""
from __future__ import annotations

import tensorflow_datasets as tfds


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A GeneratorBasedBuilder for data that needs no download (see the module docstring)."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None
