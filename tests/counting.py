"""A score function that counts its own evaluations, to check reported NFE."""
import jax


def counting(score_fn):
    """score_fn with a host-side counter of its evaluations (for an un-batched solve)."""
    count = [0]

    def bump():
        count[0] += 1

    def counted(x, t):
        jax.debug.callback(bump)
        return score_fn(x, t)

    return counted, count
