"""Device meshes, shardings and global batches.

The same code runs on one CPU, on simulated CPU devices and on a multi-host mesh: the
mesh comes from the config, parameters get their sharding from a rule, the batch is split
over the `data` axis, and every process contributes only its own rows of a global batch
(`jax.make_array_from_process_local_data`).
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MESH_AXES = (DATA_AXIS,)


def resolve_mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Sizes for MESH_AXES; at most one may be -1 ("the rest of the devices").

    Raises ValueError with the reason when the sizes do not multiply to `num_devices`.
    """
    unknown = sorted(set(axis_sizes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"mesh axes {unknown} are not known; valid axes: {list(MESH_AXES)}")
    sizes = {name: int(axis_sizes.get(name, 1)) for name in MESH_AXES}
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {free}")
    if any(size == 0 or size < -1 for size in sizes.values()):
        raise ValueError(f"mesh axis sizes must be positive or -1, got {sizes}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(f"mesh axes {sizes} do not divide the {num_devices} devices")
        sizes[free[0]] = num_devices // fixed
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(f"mesh {sizes} needs {math.prod(sizes.values())} devices, but {num_devices} are in use")
    return sizes


def make_mesh(axis_sizes: Mapping[str, int], devices=None) -> Mesh:
    """A mesh over `devices` (default: all devices of all processes) with Auto axis types."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(axis_sizes, len(devices))
    shape = tuple(sizes[name] for name in MESH_AXES)
    device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over `data`; other axes replicated."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# A rule maps (path, abstract leaf) to the PartitionSpec of that leaf.
ShardingRule = Callable[[tuple, jax.ShapeDtypeStruct], P]


def replicate_all(path, leaf) -> P:
    """Every parameter on every device (pure data parallelism)."""
    del path, leaf
    return P()


def shardings_from_rule(abstract_tree, mesh: Mesh, rule: ShardingRule = replicate_all):
    """NamedShardings for every leaf of an abstract tree (e.g. from `jax.eval_shape`)."""
    return jax.tree_util.tree_map_with_path(lambda path, leaf: NamedSharding(mesh, rule(path, leaf)), abstract_tree)


def global_batch(local_rows: np.ndarray, sharding: NamedSharding, global_batch_size: int) -> jax.Array:
    """Assemble a global array from this process's rows of the batch."""
    global_shape = (global_batch_size,) + tuple(local_rows.shape[1:])
    return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)
