"""What a sampler needs from a process and a model, checked at trace time (never by class or name)."""
from __future__ import annotations

from genjax.processes import views

DETERMINISTIC_CHOICES = "use probability_flow, edm_heun with s_churn=0 or ddim with eta=0"
VELOCITY_ONLY_CHOICES = "use probability_flow (the sampler that needs only a velocity)"


def require_reverse_sde(process, sampler: str) -> None:
    """ValueError unless the process has a reverse-time SDE (`process.has_reverse_sde`)."""
    if not getattr(process, "has_reverse_sde", True):
        reason = getattr(process, "reverse_sde_note", "")
        choices = DETERMINISTIC_CHOICES if getattr(process, "has_score", True) else VELOCITY_ONLY_CHOICES
        raise ValueError(
            f"process {type(process).__name__} has no reverse-time SDE{reason}, which {sampler} needs; {choices}"
        )


def score_view(process, model, sampler: str) -> views.PerExampleFn:
    """The model's per-example score (x, t, condition=None) -> s in eval mode;
    `views.NoScoreError` (one line naming `sampler`) if it has none (a velocity model on a
    path that is not a score's probability flow)."""
    views.require_score(process, model, sampler)
    return views.score_fn(process, model)
