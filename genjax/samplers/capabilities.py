"""What a sampler needs from a process, checked at trace time (never by class or name)."""
from __future__ import annotations

DETERMINISTIC_CHOICES = "use probability_flow, edm_heun with s_churn=0 or ddim with eta=0"


def require_reverse_sde(process, sampler: str) -> None:
    """ValueError unless the process has a reverse-time SDE (`process.has_reverse_sde`)."""
    if not getattr(process, "has_reverse_sde", True):
        raise ValueError(
            f"process {type(process).__name__} has no reverse-time SDE, which {sampler} needs; {DETERMINISTIC_CHOICES}"
        )
