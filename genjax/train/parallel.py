"""Device meshes, shardings and global batches.

The same code runs on one CPU, on simulated CPU devices and on a multi-host mesh: the
mesh comes from the config, parameters get their sharding from a rule, the batch is split
over the data-parallel axes (`data` and `fsdp`), and every process contributes only its
own rows of a global batch (`jax.make_array_from_process_local_data`).

Mesh axes:
  data    pure data parallelism: parameters replicated along it.
  fsdp    fully-sharded data parallelism (ZeRO-3; Rajbhandari et al. 2020): the batch is
          split along it too, and large parameters (and their optimizer moments) are split
          along it; XLA all-gathers them for the forward/backward pass.
  tensor  tensor (model) parallelism (Megatron-LM; Shoeybi et al. 2019): with the
          `fsdp_tensor` rule the output dimension of every large Dense kernel is split
          along it, so each device holds and multiplies by a slice of the columns; the
          batch is not split along it. Under the other rules it only replicates work.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS, FSDP_AXIS, TENSOR_AXIS = "data", "fsdp", "tensor"
MESH_AXES = (DATA_AXIS, FSDP_AXIS, TENSOR_AXIS)
BATCH_AXES = (DATA_AXIS, FSDP_AXIS)


def resolve_mesh_shape(axis_sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Sizes for MESH_AXES (missing axes are 1); at most one may be -1 ("the rest").

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


def make_mesh(axis_sizes: Mapping[str, int], devices=None, num_slices: int = 1) -> Mesh:
    """A mesh over `devices` (default: all devices of all processes) with Auto axis types.

    With num_slices > 1 (multi-slice TPU, or GPU nodes joined by a slower network) the
    `data` axis spans the slices over the data-centre network (DCN) and every other axis
    stays inside a slice (ICI), via `mesh_utils.create_hybrid_device_mesh`; gradients then
    cross the slow links once per step, as pure data parallelism needs.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(axis_sizes, len(devices))
    shape = tuple(sizes[name] for name in MESH_AXES)
    if num_slices > 1:
        if sizes[DATA_AXIS] % num_slices:
            raise ValueError(f"mesh axis data={sizes[DATA_AXIS]} must be a multiple of num_slices={num_slices}")
        # TPU slices are told apart by `slice_index`; elsewhere each process is one slice (a node).
        by_process = not hasattr(devices[0], "slice_index")
        num_processes = len({d.process_index for d in devices})
        if by_process and num_processes != num_slices:
            raise ValueError(
                f"num_slices={num_slices} needs TPU slices or one process per slice, but these devices "
                f"belong to {num_processes} process(es)"
            )
        per_slice = (sizes[DATA_AXIS] // num_slices,) + shape[1:]
        dcn = (num_slices,) + (1,) * (len(shape) - 1)
        device_array = mesh_utils.create_hybrid_device_mesh(per_slice, dcn, devices, process_is_granule=by_process)
    elif devices[0].platform == "cpu":
        device_array = np.asarray(devices).reshape(shape)
    else:  # topology-aware order of accelerator devices
        device_array = mesh_utils.create_device_mesh(shape, devices)
    return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def batch_sharding(mesh: Mesh, leading: int = 0) -> NamedSharding:
    """The batch axis (after `leading` unsplit axes) split over data and fsdp."""
    return NamedSharding(mesh, P(*([None] * leading), BATCH_AXES))


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[name] for name in BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


# A rule maps (path, abstract leaf) to the PartitionSpec of that leaf.
ShardingRule = Callable[[tuple, jax.ShapeDtypeStruct], P]


def replicate_all(mesh: Mesh, min_size: int = 0) -> ShardingRule:
    """Every parameter on every device (pure data parallelism)."""
    del mesh, min_size
    return lambda path, leaf: P()


def fsdp_largest_dim(mesh: Mesh, min_size: int = 1 << 14) -> ShardingRule:
    """FSDP: a leaf with at least `min_size` elements is split along `fsdp` on its largest
    dimension that the axis size divides; smaller leaves (biases, norms, scalars, keys)
    stay replicated. Shape-based, so Adam's moments get the same sharding as their
    parameter."""
    axis_size = mesh.shape[FSDP_AXIS]

    def rule(path, leaf) -> P:
        del path
        if leaf.ndim == 0 or math.prod(leaf.shape) < min_size:
            return P()
        return _spec(_fsdp_spec(leaf.shape, axis_size))

    return rule


def _fsdp_spec(shape: tuple[int, ...], axis_size: int) -> list:
    """`fsdp` on the largest dimension that `axis_size` divides (all None if none does)."""
    spec = [None] * len(shape)
    if axis_size > 1:
        for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
            if shape[dim] % axis_size == 0:
                spec[dim] = FSDP_AXIS
                break
    return spec


def _spec(axes: list) -> P:
    """A PartitionSpec, written P() when it splits nothing."""
    return P(*axes) if any(a is not None for a in axes) else P()


def fsdp_tensor(mesh: Mesh, min_size: int = 1 << 14) -> ShardingRule:
    """Tensor parallelism combined with FSDP. A Dense kernel [in, out] (a leaf named `kernel`)
    of at least `min_size` elements is split column-wise (Megatron-LM's column-parallel layer,
    Shoeybi et al. 2019): its output dimension into `tensor` blocks, each block split further
    along `fsdp`, so FSDP's all-gather rebuilds exactly a device's column block. Where the
    output dimension does not divide by both, it is split along `tensor` alone; failing that,
    the kernel (like every other large leaf) follows `fsdp_largest_dim`. Small leaves (biases,
    norms, scalars) stay replicated. The path and shape decide, so Adam's moments get their
    parameter's sharding, and XLA inserts the collectives.

    Both axes share one dimension on purpose: `fsdp` on the input and `tensor` on the output
    dimension of one kernel gives wrong gradients on XLA 0.10.2 when data, fsdp and tensor are
    all above 1 (tests/test_sharding.py keeps a minimal reproduction as an expected failure).
    """
    fsdp_size, tensor_size = mesh.shape[FSDP_AXIS], mesh.shape[TENSOR_AXIS]

    def rule(path, leaf) -> P:
        if leaf.ndim == 0 or math.prod(leaf.shape) < min_size:
            return P()
        name = getattr(path[-1], "key", getattr(path[-1], "name", None)) if path else None
        if name == "kernel" and leaf.ndim == 2 and tensor_size > 1:
            fan_out = leaf.shape[1]
            if fsdp_size > 1 and fan_out % (tensor_size * fsdp_size) == 0:
                return P(None, (TENSOR_AXIS, FSDP_AXIS))
            if fan_out % tensor_size == 0:
                return P(None, TENSOR_AXIS)
        return _spec(_fsdp_spec(leaf.shape, fsdp_size))

    return rule


def shardings_from_rule(abstract_tree, mesh: Mesh, rule: ShardingRule):
    """NamedShardings for every leaf of an abstract tree (e.g. from `jax.eval_shape`)."""
    return jax.tree_util.tree_map_with_path(lambda path, leaf: NamedSharding(mesh, rule(path, leaf)), abstract_tree)


def global_batch(local_rows: np.ndarray, sharding: NamedSharding, global_shape: tuple[int, ...]) -> jax.Array:
    """Assemble a global array from this process's rows of the batch."""
    return jax.make_array_from_process_local_data(sharding, local_rows, global_shape)
