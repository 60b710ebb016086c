"""Test configuration: 8 simulated CPU devices, so sharding tests run in-process.

Computations that name no device run on device 0 as usual; tests that need a mesh build
one over `jax.devices()[:n]`.

The test processes of one run (pytest-xdist workers) share a persistent JAX compilation
cache that starts empty: many tests build the same tiny experiments and samplers as fresh
closures (or run them in subprocesses, which inherit the setting through the environment),
which retrace but then load the compiled program instead of compiling it again. It lives in
the system's temporary directory under the run's id and is removed at the end.
"""
import os
import shutil
import tempfile
import uuid

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"

# The controlling process names the run before it starts its xdist workers, which inherit the
# name through the environment (xdist's own run id is not known to the controller this early).
_RUN_ID = os.environ.setdefault("GENJAX_TEST_RUN_ID", uuid.uuid4().hex)
COMPILATION_CACHE_DIR = os.path.join(tempfile.gettempdir(), f"genjax-test-compilation-cache-{_RUN_ID}")
os.environ.update(JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE_DIR, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", False)
# Tests raise errors through JAX on purpose (bad inputs, failed solves); filtering JAX's frames
# out of each traceback walks every frame against JAX's paths, which costs more than the
# frames are worth in a test report.
jax.config.update("jax_traceback_filtering", "off")


# The default run compiles for speed of compiling: its tests run many small programs, where
# XLA's compiler dominates and executing is a few per cent of the time. LLVM optimisation
# level 1 (of 3); XLA:CPU's elemental emitters instead of its MLIR fusion emitters (a third
# less compile time on the sampler tests); 128-bit vectors, without which those emitters
# unroll the train step's global-norm reduction into code LLVM takes 8 s to select (1.4 s
# with). Level 0 is faster still but, with those emitters, gives a sharded EM draw other
# values than the unsharded one (test_samplers), so it is not used. The slow set (long
# statistical runs) compiles as users do.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=1", "--xla_cpu_use_fusion_emitters=false",
                      "--xla_cpu_prefer_vector_width=128")


def pytest_configure(config):
    """Before any test touches the backend (and before xdist starts its workers)."""
    default_run = config.getoption("markexpr") == "not slow"
    for flag in FAST_COMPILE_FLAGS if default_run else ():
        if flag.split("=")[0] not in os.environ["XLA_FLAGS"]:
            os.environ["XLA_FLAGS"] += f" {flag}"


def pytest_sessionfinish(session):
    """The controlling process (not an xdist worker) removes the run's cache."""
    if not hasattr(session.config, "workerinput"):
        shutil.rmtree(COMPILATION_CACHE_DIR, ignore_errors=True)


# Checks the default run leaves to the slow set because a cheaper sibling stays in it (named
# after each): they run in CI with `pytest -m slow`.
SLOW_SIBLINGS = {
    "tests/test_cli.py::test_evaluate_in_a_fresh_process",  # evaluate() through gs:// in test_run_lifecycle
    "tests/test_cli.py::test_diverging_run_exits_non_zero_and_keeps_the_checkpoint",  # test_checkpoint's divergence
    "tests/test_run_lifecycle.py::test_raising_num_steps_on_a_cosine_schedule_is_refused_unless_allowed",  # test_cli
    "tests/stochastic/test_time_reversal.py::test_reverse_sde_with_exact_score_recovers_p0_and_without_does_not",
    "tests/stochastic/test_time_reversal.py::test_grid_score_from_fokker_planck_matches_exact_mixture_score",
    "tests/stochastic/test_experiment.py::test_entrypoint_runs_cheap_studies",
    "tests/stochastic/test_sde_solvers.py::test_stratonovich_solver_needs_the_drift_correction",
    "tests/stochastic/test_fokker_planck.py::test_double_well_density_matches_histogram_of_simulated_paths",
    "tests/stochastic/test_kolmogorov_backward.py::test_backward_pde_matches_feynman_kac_monte_carlo",
    "tests/test_pfgmpp.py::test_large_d_gives_edm_samples_from_the_same_prior_draws",
    "tests/test_pfgmpp.py::test_kernel_approaches_the_gaussian_as_d_grows",  # the radial-law KS tests
    "tests/test_pfgm.py::test_config_builds_and_the_network_outputs_the_extra_component",  # shipped-config check
    "tests/test_sampler_zoo.py::test_converges_to_probability_flow[ddim]",  # [edm]
    "tests/test_sampler_zoo.py::test_sample_set_does_not_depend_on_batching[edm+churn]",  # [ancestral], [ddim_eta1]
    "tests/test_sampler_zoo.py::test_sample_set_does_not_depend_on_batching[rd+langevin]",
    "tests/test_sampler_zoo.py::test_batch_rule_averages_over_the_mesh",
    "tests/test_score_matching.py::test_every_process_trains_through_the_engine[ve-noise-sigma_squared]",  # [edm-...]
    "tests/test_score_matching.py::test_every_process_trains_through_the_engine[subvp-noise-likelihood]",
    "tests/test_score_matching.py::test_training_drives_the_loss_down",
    "tests/test_sharding.py::test_several_steps_per_dispatch_equal_the_plain_steps",
    "tests/test_sharding.py::test_tensor_sharded_state_trains_like_one_device[2-2-2]",
    "tests/test_likelihood.py::test_result_does_not_depend_on_batch_composition",  # the samplers' batching tests
    "tests/test_flow_matching.py::test_cfm_is_minimised_by_the_marginal_velocity[vp]",  # [linear]
    "tests/test_flow_matching.py::test_hutchinson_log_density_within_its_standard_error",  # exact trace; test_cnf
    # test_checkpoint's in-process resume (bit for bit) and test_cli's rerun of a finished run:
    "tests/test_cli.py::test_rerun_does_nothing_and_longer_target_resumes",
    # test_checkpoint::test_damaged_newest_checkpoint_is_quarantined_and_the_run_resumes_from_the_previous:
    "tests/test_cli.py::test_rerun_after_damage_resumes_from_the_previous_checkpoint_and_says_so",
    "tests/test_unets.py::test_dropped_labels_use_the_null_label_of_condition_none",  # the class-label test
    "tests/test_unets.py::test_untrained_network_outputs_about_zero",  # the rescaled-identity blocks
    # test_pfgm's exact-field likelihood (D = 1):
    "tests/test_pfgmpp.py::test_ode_likelihood_with_the_exact_field_matches_the_exact_density[1.0]",
    # The per-batch solve's oracle recovery, NFE count, likelihood and probe checks stay in the default run:
    "tests/test_step_control.py::test_batch_of_one_is_the_per_example_solve",
    "tests/test_step_control.py::test_per_batch_under_shard_map_solves_each_devices_batch_on_its_own",
    "tests/test_step_control.py::test_auto_divergence_is_exact_in_low_dimension_and_hutchinson_above",
    "tests/test_step_control.py::test_per_batch_depends_on_the_chunk_per_example_does_not",
    "tests/test_step_control.py::test_max_norm_takes_at_least_the_steps_of_rms",
    # the compile-only memory check; the chunk tests and experiments/benchmark_sampling_memory.py cover it:
    "tests/test_chunked_sampling.py::test_chunk_memory_follows_the_chunk_size_not_the_set_size",
    # the real Inception-v3 compile; its pieces (resize, pools, converter, statistics) stay in the default run:
    "tests/test_image_metrics.py::test_inception_maps_32px_images_to_pool3_and_logits_independently_of_the_batch",
    # the gs:// workdir end to end (33 s); the URL, lease and backend checks of the same file stay in the default run:
    "tests/test_run_lifecycle.py::test_a_gs_workdir_receives_every_file_and_orbax_gets_the_url",
    # per-batch: the likelihood against the mixture density, failures per_example and NFE counts stay:
    "tests/test_step_control.py::test_per_batch_hutchinson_uses_each_points_own_probes",
    "tests/test_step_control.py::test_per_batch_options_reach_the_sampler_through_the_factory",
    "tests/test_step_control.py::test_per_batch_is_deterministic",
    "tests/test_step_control.py::test_failed_likelihood_solves_are_counted[per_batch]",
    "tests/test_chunked_sampling.py::test_sharded_parameters_sample_as_replicated_ones[fsdp_tensor]",  # [fsdp]
    # chunk-index independence: test_chunked_sampling's sample-set checks use the same rule:
    "tests/test_nll_evaluation.py::test_chunked_evaluation_gives_every_point_the_same_value",
    # four CIFAR-10 configs (one per network family) stay; the others build the same networks:
    "tests/test_cifar10_configs.py::test_config_builds_with_the_reference_parameter_count[cifar10_ddpmpp_subvp]",
    "tests/test_cifar10_configs.py::test_config_builds_with_the_reference_parameter_count[cifar10_edm_ddpmpp]",
    "tests/test_cifar10_configs.py::test_config_builds_with_the_reference_parameter_count[cifar10_edm_ncsnpp]",
    "tests/test_cifar10_configs.py::test_config_builds_with_the_reference_parameter_count[cifar10_pfgmpp_d2048]",
    # the device-count independence of samples: test_chunked_sampling, in process:
    "tests/test_cli.py::test_sample_in_a_fresh_process_on_another_device_count",
    # test_cnf_engine's flow through the same samplers and likelihood stays:
    "tests/test_flow_matching.py::test_a_cnf_velocity_fits_the_samplers_and_the_likelihood",
    "tests/test_pfgmpp.py::test_likelihood_check_rejects_a_misweighted_field",  # test_pfgm's twin stays
    "tests/test_couplings.py::test_minibatch_ot_converges_to_the_monge_map",  # the exact-assignment checks stay
    # the CNF's exact likelihood, divergence and failure checks in test_cnf and the contract's CNF loss stay:
    "tests/test_cnf.py::test_gradients_agree_between_adjoints_and_with_finite_differences[solver_options0]",
    "tests/test_cnf_engine.py::test_training_loss_is_the_evaluated_nll_of_the_same_flow",
    "tests/test_pfgmpp.py::test_objective_is_minimised_by_the_exact_posterior_mean[1.0]",  # test_pfgm's objective
    "tests/test_checkerboard_oracle.py::test_process_functions_jit_vmap_and_entropy[edm]",  # [vp]
    "tests/test_likelihood.py::test_max_steps_and_throw",  # test_samplers' max_steps, test_nll_evaluation's counts
    # test_ddim_and_edm_heun_agree and Heun's second-order convergence stay:
    "tests/test_sampler_zoo.py::test_converges_to_probability_flow[edm]",
    "tests/test_sampler_zoo.py::test_wrong_weights_fail[vp-edm]",  # test_samplers' wrong-weights check
    "tests/test_sampler_zoo.py::test_reverse_sde_final_step_is_the_posterior_mean[subvp]",  # [edm]
    "tests/test_sampler_zoo.py::test_sample_set_does_not_depend_on_batching[rd+langevin_sigma]",  # [ancestral]
    "tests/test_samplers.py::test_probability_flow_nfe_matches_counted_evaluations[dopri5-None]",  # [tsit5-None]
    "tests/test_samplers.py::test_probability_flow_nfe_matches_counted_evaluations[euler-25]",  # [heun-25]
    "tests/test_step_control.py::test_per_batch_nfe_matches_counted_network_calls[dopri5]",  # [tsit5]
    "tests/test_likelihood.py::test_hutchinson_agrees_with_exact_divergence[rademacher]",  # [gaussian]
    "tests/test_likelihood.py::test_nfe_matches_counted_evaluations[exact]",  # [hutchinson]
    "tests/stochastic/test_markov.py::test_walk_chapman_kolmogorov_is_exact_in_integers[16-17]",  # [3-8]
    # the DSM identity for one weighting per kernel family stays ([vp-sigma_squared], [edm-edm]):
    "tests/test_objectives.py::test_dsm_excess_equals_weighted_squared_perturbation[vp-likelihood]",
    "tests/test_objectives.py::test_dsm_excess_equals_weighted_squared_perturbation[vp-edm]",
    "tests/test_objectives.py::test_dsm_excess_equals_weighted_squared_perturbation[subvp-likelihood]",
    "tests/test_objectives.py::test_dsm_excess_equals_weighted_squared_perturbation[ve-sigma_squared]",
    # sliced score matching's minimiser with the Gaussian probe, variance-reduced, stays:
    "tests/test_objectives.py::test_sliced_score_matching_is_minimised_by_exact_score[gaussian-False]",
    "tests/test_objectives.py::test_sliced_score_matching_is_minimised_by_exact_score[rademacher-True]",
    "tests/test_objectives.py::test_sliced_score_matching_is_minimised_by_exact_score[rademacher-False]",
    # labels through a stochastic sampler and the ODE sampler stay ([euler_maruyama], [probability_flow]):
    "tests/test_network_contract.py::test_every_sampler_passes_each_samples_label_in_eval_mode[predictor_corrector]",
    "tests/test_network_contract.py::test_every_sampler_passes_each_samples_label_in_eval_mode[ddim]",
    "tests/test_network_contract.py::test_every_sampler_passes_each_samples_label_in_eval_mode[edm_heun]",
    "tests/test_vp_sde.py::test_forward_sde_from_fixed_point_matches_marginal",  # test_processes' [vp] is the same
    "tests/stochastic/test_experiment.py::test_invalid_size_is_one_clear_line",  # [unknown study] stays
    "tests/stochastic/test_experiment.py::test_unwritable_workdir_is_one_clear_line",
    # [SAME] and [padding2] stay; the tap-gradient tests cover VALID padding:
    "tests/test_conv_weight_grad.py::test_drop_in_convolution_has_xlas_values_and_gradients[VALID]",
    # speed pass (families):
    # the VP forward SDE from a point against its marginal: test_processes' [vp] stays (the same
    # simulation and closed form; this one starts from a Gaussian, 10^4 paths x 4000 steps):
    "tests/test_vp_sde.py::test_forward_sde_from_gaussian_matches_marginal",
    # dopri5's exact-trace log-likelihood of the affine flow: test_cnf's failed-solve check solves the
    # same flow with dopri5 (its default tolerances) and compares the NLL with the closed form:
    "tests/test_cnf.py::test_exact_trace_log_likelihood_matches_affine_closed_form[options0-1e-05]",
    "tests/test_cnf.py::test_hutchinson_is_unbiased_for_the_affine_flow[rademacher]",  # [gaussian]
    # speed pass (engine and CLI):
    # the backward count under checkpointing: [recursive_checkpoint-rk4-2]; dopri5's counted forward NFE: test_cnf
    "tests/test_train_metrics.py::test_cnf_step_reports_counted_forward_and_backward_nfe[recursive_checkpoint-dopri5-2]",
    # the CNF trained through the engine and its metrics.jsonl: the step's counted NFE metrics
    # ([recursive_checkpoint-rk4-2], [backsolve-rk4-1]) and test_cli's metrics.jsonl stay:
    "tests/test_train_metrics.py::test_the_cnf_run_logs_its_nfe_beside_the_loss",
    "tests/test_spent_nfe.py::test_spent_nfe_is_the_counted_evaluations_of_every_share[2-0-per_example]",  # [8-16-...]
}


def pytest_collection_modifyitems(config, items):
    import pytest


    found = set()
    for item in items:
        if item.nodeid in SLOW_SIBLINGS:
            item.add_marker(pytest.mark.slow)
            found.add(item.nodeid)
    # A run over the whole suite must find every name (a renamed test would silently return
    # to the default set); a run over chosen files or with -k need not.
    # (xdist workers receive the controller's paths as arguments, hence the comparison.)
    whole_suite = list(config.args) == list(config.getini("testpaths")) and not config.getoption("keyword")
    missing = SLOW_SIBLINGS - found
    if whole_suite and missing:
        raise pytest.UsageError(f"tests/conftest.py SLOW_SIBLINGS names tests that do not exist: {sorted(missing)}")
