"""What every sampler returns: the samples, the per-example cost and a success flag."""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SampleResult:
    """Samples from a sampler, with their cost.

    A pytree (it crosses `jax.jit`, `jax.vmap` and `shard_map` boundaries unchanged).

    Attributes:
      samples: [N, *shape], sample i drawn with the per-example key of global index
        `first_index + i` (see `genjax.samplers.prior`).
      nfe: [N] int32, number of evaluations of the score function spent on each example.
        Per example because adaptive solvers take a different number of steps for each.
      successful: [N] bool, False where the solver gave up on an example (for the
        adaptive probability-flow solve: `max_steps` reached or the step size collapsed).
        Samples of unsuccessful examples are meaningless.
    """

    samples: jax.Array
    nfe: jax.Array
    successful: jax.Array

    @property
    def mean_nfe(self) -> jax.Array:
        """Mean NFE over the examples (a float scalar).

        Averaged as offsets from the minimum, so that float32 rounding of a sum of many
        large counts does not show (equal counts give their exact value)."""
        low = jnp.min(self.nfe)
        return low.astype(jnp.float32) + jnp.mean((self.nfe - low).astype(jnp.float32))

    @property
    def max_nfe(self) -> jax.Array:
        """Largest NFE of any example: the cost of a batch that runs in lock step."""
        return jnp.max(self.nfe)

    @property
    def spent_nfe(self) -> jax.Array:
        """Evaluations per example that the batch actually cost, when this result is one
        solve call: max(nfe). A vmapped batch runs in lock step until its slowest example
        finishes (the finished ones are masked but still evaluated), and a per-batch solve
        gives every example the batch's NFE. A set drawn in several chunks or on several
        devices spent the sum over them of (share size x the share's max NFE):
        `genjax.evaluate.sampling.share_evaluations`."""
        return jnp.max(self.nfe)

    @property
    def all_successful(self) -> jax.Array:
        return jnp.all(self.successful)
