"""A 55M-parameter MLP on the 2-D checkerboard: the scale check for sharded training.

Too large for the data on purpose: it exists to measure what FSDP saves. Check memory and
FLOPs per device without training (8 simulated CPU devices, data x fsdp = 1 x 8):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m experiments.main \
        --config=configs/mlp_50m.py --mode=compile --config.mesh.data=1 --config.mesh.fsdp=8

Expected: 55.1M parameters; parameters + EMA + Adam moments take 841 MiB per device
replicated (sharding.params=replicated) and about 1/8 of that (106 MiB) with
sharding.params=fsdp on 8 devices; sharding.params=fsdp_tensor with --config.mesh.tensor=2
splits the Dense kernels' columns over tensor as well. `python -m experiments.benchmark
--workdir=DIR --parts=memory` writes the whole table (1, 2, 4 and 8 devices, beside XLA's own
bytes of the compiled step). Training runs anywhere (about 1 s/step on 2 CPU cores):

    python -m experiments.main --config=configs/mlp_50m.py --workdir=runs/mlp_50m
"""
from configs import default


def get_config():
    config = default.get_config()
    config.model.kwargs.hidden_dim = 2048
    config.model.kwargs.num_layers = 4
    config.model.kwargs.embedding_dim = 256
    config.sharding.params = "fsdp"
    config.mesh.data = 1
    config.mesh.fsdp = -1
    config.training.num_steps = 2_000
    config.optimizer.learning_rate = 3e-4
    return config
