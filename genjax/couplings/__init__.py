"""Couplings of two point sets on the device: exact assignment (auction) and entropic plans (Sinkhorn)."""
from genjax.couplings.assignment import assignment_cost, auction_assignment, squared_distances
from genjax.couplings.sinkhorn import (sample_plan_rows, sample_rows, sinkhorn_conditional_log_plan, sinkhorn_conditional_plan,
                                      sinkhorn_log_plan)

__all__ = ["assignment_cost", "auction_assignment", "sample_plan_rows", "sample_rows", "sinkhorn_conditional_plan", "sinkhorn_conditional_log_plan", "sinkhorn_log_plan", "squared_distances"]
