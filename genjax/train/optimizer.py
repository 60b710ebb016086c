"""Optimizer from config: Adam(W) with linear warmup (then constant or cosine decay) and
global-norm gradient clipping (Pascanu et al. 2013), as score_sde and EDM train."""
from __future__ import annotations

import optax

SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(learning_rate: float, warmup_steps: int, total_steps: int, decay: str) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then `decay`."""
    if decay == "constant":
        after = optax.constant_schedule(learning_rate)
    elif decay == "cosine":
        after = optax.cosine_decay_schedule(learning_rate, max(total_steps - warmup_steps, 1))
    else:
        raise ValueError(f"unknown learning-rate decay {decay!r}; choose one of {SCHEDULES}")
    if warmup_steps <= 0:
        return after
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    return optax.join_schedules([warmup, after], [warmup_steps])


def schedule_record(*, learning_rate: float, warmup_steps: int, total_steps: int, decay: str, **_) -> dict:
    """What a checkpoint stores of the schedule, to detect a changed one on resume. The
    horizon is `total_steps` for cosine decay and None for a constant schedule (which does
    not depend on it, so raising training.num_steps there changes nothing)."""
    return {"decay": decay, "learning_rate": float(learning_rate), "warmup_steps": int(warmup_steps),
            "horizon": int(total_steps) if decay == "cosine" else None}


def learning_rate_at(record: dict, step: int) -> float:
    """The learning rate of a `schedule_record` at `step`."""
    schedule = learning_rate_schedule(record["learning_rate"], record["warmup_steps"], record["horizon"] or 1,
                                      record["decay"])
    return float(schedule(step))


def make_optimizer(
    *,
    learning_rate: float,
    warmup_steps: int,
    total_steps: int,
    decay: str = "constant",
    grad_clip_norm: float = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(learning_rate, warmup_steps, total_steps, decay)
    parts = []
    if grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(grad_clip_norm))
    parts.append(optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*parts)
