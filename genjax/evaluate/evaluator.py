"""Sample quality and likelihood for low-dimensional data, with baselines that make them readable.

For every configured sampler: sliced Wasserstein distance and MMD between its samples and a
fresh draw from the true distribution, with the NFE it spent. Two baselines bracket them:
the prior's samples (what an untrained model would score) and a second fresh data set (the
Monte Carlo noise floor: the best any model can show at this sample size). The NLL of
held-out data through the probability-flow ODE (nats/dim) is reported beside the NLL the
prior alone gives the same points. For images, the NLL is also given in bits/dim of the 8-bit
data; for the digits, the offline image measure of genjax.evaluate.digits_classifier is added
per sampler (`digits_frechet`, and `digits_class_accuracy` for class-conditional samples), with
its floor: the Frechet distance of as many real training digits as there are samples (median of
5 random sets). With evaluate.guidance = w > 0 (class-conditional models) every sampler also
draws the set with classifier-free guidance weight w (genjax.samplers.guidance), reported beside
the unguided one (`digits_guided_frechet`, `digits_guided_class_accuracy`, `guided_nfe_mean`).
With evaluate.inception_weights set (image data), every sampler's set also gets FID, IS and KID
against the training split's cached statistics (genjax.evaluate.image_metrics).
"""
from __future__ import annotations

import jax
import numpy as np

from genjax import workdir as workdir_lib
from genjax.evaluate.bits_per_dim import LN2, bits_per_dim_offset, dequantize
from genjax.evaluate import digits_classifier, image_metrics
from genjax.evaluate.image_grid import to_uint8
from genjax.evaluate.likelihood import negative_log_likelihood
from genjax.evaluate.sampling import draw, guided, sample_set_name, write_sample_set
from genjax.evaluate.two_sample import sample_quality
from genjax.samplers.prior import example_keys, sample_prior
from genjax.experiment import Experiment, derive_key, evaluation_samplers


def evaluate(experiment: Experiment, params, step: int, workdir) -> dict | None:
    """Metrics of every sampler in config.evaluate.samplers; writes `eval/step_<N>.json`.

    Every process draws its share of the samples; process 0 scores them, writes the files
    and returns the results (other processes return None). `workdir`: a local path or a URL."""
    config = experiment.config
    num = config.evaluate.num_samples
    drawn_by_sampler = {name: draw(experiment, params, name, num) for name in evaluation_samplers(config)}
    guidance = config.evaluate.guidance  # > 0 only for a conditional model (checked at config time)
    guided_by_sampler = {name: draw(experiment, params, name, num, model=guided(experiment, guidance))
                         for name in drawn_by_sampler} if guidance else {}
    nll = None
    if config.evaluate.nll_num_points:
        held_out_batch = experiment.reference_batch(config.evaluate.nll_num_points)
        held_out = held_out_batch["x"]
        if experiment.image_dataset is not None:  # 8-bit pixels: the density of dequantised points
            held_out = dequantized_images(held_out, derive_key(config.seed, "dequantization"), experiment.data_range)
        nll = negative_log_likelihood(experiment, params, held_out, dict(config.evaluate.likelihood),
                                      condition=held_out_batch.get("label"))
        prior_log_prob = jax.vmap(experiment.process.prior_log_prob)(held_out)
        nll["prior_nll_nats_per_dim"] = float(-prior_log_prob.mean() / np.prod(held_out.shape[1:]))
        if experiment.image_dataset is not None:
            add_bits_per_dim(nll, experiment.data_range)
    inception_metrics = {}
    if config.evaluate.inception_weights:  # FID / IS / KID: every process computes its share of the features
        reference_set = image_metrics.load_reference(experiment, workdir)
        inception_metrics = {name: image_metrics.sample_metrics(experiment, reference_set, drawn["samples"],
                                                                derive_key(config.seed, "metrics"))
                             for name, drawn in drawn_by_sampler.items()}
    if jax.process_index() != 0:
        return None
    # A held-out image split may hold fewer than 2 num examples: then both halves are smaller.
    reference = flattened(experiment.reference_data(2 * num))
    data_range = experiment.data_range
    half = min(num, len(reference) // 2)
    reference, second_reference = reference[:half], reference[half:2 * half]
    metrics_key = derive_key(config.seed, "metrics")
    # One prior draw per example key (a non-factorised prior, e.g. PFGM++'s, is per example).
    prior_keys = example_keys(derive_key(config.seed, "sample"), num)
    prior = np.asarray(sample_prior(experiment.process, prior_keys, experiment.data_shape))

    results = {"step": int(step), "num_samples": num, "dataset": config.data.name,
               "baselines": {"data_vs_data": sample_quality(metrics_key, second_reference, reference),
                             "prior_vs_data": sample_quality(metrics_key, flattened(prior), reference)},
               "samplers": {}}
    digits = _digits_classifier(workdir) if config.data.name == "digits" else None
    if digits is not None:
        results["baselines"]["data_vs_data"].update(digits_classifier.real_digits_floor(digits, num, config.seed))
    labels = experiment.default_condition(num)
    for name, drawn in drawn_by_sampler.items():
        npz_file, png_file = write_sample_set(workdir, step, name, drawn, reference, data_range=data_range,
                                              labels=labels)
        quality = sample_quality(metrics_key, flattened(drawn["samples"]), reference)
        if digits is not None:
            quality.update(digits_classifier.sample_quality(digits, to_uint8(drawn["samples"], data_range), labels))
        results["samplers"][name] = {
            **quality,
            "nfe_mean": float(drawn["nfe"].mean()),
            "nfe_max": int(drawn["nfe"].max()),
            "nfe_spent": drawn["spent_nfe"],
            "nfe_spent_per_sample": drawn["spent_nfe"] / num,
            "seconds": drawn["seconds"],
            "samples_per_second": num / max(drawn["seconds"], 1e-9),
            "samples": npz_file,
            "figure": png_file,
        }
        results["samplers"][name].update(inception_metrics.get(name, {}))
        if name in guided_by_sampler:
            results["samplers"][name].update(_guided_quality(workdir, step, name, guided_by_sampler[name], guidance,
                                                             reference, labels, digits, data_range))
    if nll is not None:
        results["likelihood"] = nll
    workdir_lib.write_json(workdir_lib.resolve(workdir) / "eval" / f"step_{step}.json", results)
    return results


def _guided_quality(workdir, step: int, name: str, drawn: dict, guidance: float, reference, labels, digits,
                    data_range) -> dict:
    """The entries of a guided set (weight `guidance`) beside its sampler's unguided ones:
    guidance_weight, guided_nfe_mean and guided_nfe_spent (model evaluations; each costs two
    network calls),
    guided_seconds, guided_samples, guided_figure and, for the digits, digits_guided_frechet and
    digits_guided_class_accuracy."""
    npz_file, png_file = write_sample_set(workdir, step, sample_set_name(name, guidance), drawn, reference,
                                          data_range=data_range, labels=labels)
    entries = {"guidance_weight": guidance, "guided_nfe_mean": float(drawn["nfe"].mean()),
               "guided_nfe_spent": drawn["spent_nfe"],
               "guided_seconds": drawn["seconds"], "guided_samples": npz_file, "guided_figure": png_file}
    if digits is not None:
        quality = digits_classifier.sample_quality(digits, to_uint8(drawn["samples"], data_range), labels)
        entries["digits_guided_frechet"] = quality["digits_frechet"]
        entries["digits_guided_class_accuracy"] = quality["digits_class_accuracy"]
    return entries


def _digits_classifier(workdir):
    """The digits classifier (genjax.evaluate.digits_classifier), cached in eval/ of a local
    workdir (trained in seconds; in memory only for an object-store workdir)."""
    path = workdir_lib.resolve(workdir) / "eval" / "digits_classifier.npz"
    if workdir_lib.is_local(path):
        return digits_classifier.load_or_train(str(path))
    return digits_classifier.train_classifier(jax.random.key(0), *digits_classifier.digits_split("train"))


def flattened(points: np.ndarray) -> np.ndarray:
    """[n, *shape] -> [n, prod(shape)]: the two-sample distances compare vectors (for images a
    rough pixel-space measure; the image metrics proper are FID-type features)."""
    points = np.asarray(points)
    return points.reshape(len(points), -1)


def dequantized_images(images: np.ndarray, key: jax.Array, data_range=(-1.0, 1.0)) -> np.ndarray:
    """Held-out images in data_range [lo, hi] (pixels lo + k (hi - lo) / 255) back to their
    8-bit k, then dequantised uniformly within their bins, x = lo + (k + u) (hi - lo) / 256
    (genjax.evaluate.bits_per_dim, map (1)); example i uses fold_in(key, i)."""
    pixels = to_uint8(images, data_range).astype(np.int32)
    keys = example_keys(key, len(pixels))
    return np.asarray(jax.vmap(lambda k, p: dequantize(k, p, 256, data_range))(keys, pixels))


def add_bits_per_dim(nll: dict, data_range=(-1.0, 1.0)) -> None:
    """Bits/dim of 8-bit data from the NLL in nats/dim of dequantised points in [lo, hi]:
    nats / ln 2 + log2(256 / (hi - lo)) (genjax.evaluate.bits_per_dim, eq. (3); 7 bits of
    offset for [-1, 1], 8 for [0, 1])."""
    offset = bits_per_dim_offset(256, data_range)
    nll["bits_per_dim"] = nll["nll_nats_per_dim"] / LN2 + offset
    nll["bits_per_dim_standard_error"] = nll["nll_standard_error"] / LN2
    nll["prior_bits_per_dim"] = nll["prior_nll_nats_per_dim"] / LN2 + offset


def format_table(results: dict) -> str:
    """A small text table: one row per sampler and baseline."""
    rows = [("data vs data (noise floor)", results["baselines"]["data_vs_data"], None),
            ("prior vs data", results["baselines"]["prior_vs_data"], None)]
    rows += [(name, r, r["nfe_mean"]) for name, r in results["samplers"].items()]
    lines = [f"{'samples':30s} {'SWD':>9s} {'MMD':>10s} {'NFE':>7s}"]
    for name, r, nfe in rows:
        lines.append(f"{name:30s} {r['swd']:9.4f} {r['mmd']:10.5f} {'' if nfe is None else f'{nfe:7.1f}'}")
    digits_rows = [(name, r) for name, r, _ in rows if "digits_frechet" in r]
    if digits_rows:
        lines.append("digits classifier (offline image measure): Frechet distance of its features to the test split"
                     "; class accuracy of conditional samples")
        for name, r in digits_rows:
            accuracy = f", class accuracy {r['digits_class_accuracy']:.3f}" if "digits_class_accuracy" in r else ""
            if "digits_guided_class_accuracy" in r:
                accuracy += (f"; guided (w = {r['guidance_weight']:g}): Frechet {r['digits_guided_frechet']:.2f}, "
                             f"class accuracy {r['digits_guided_class_accuracy']:.3f}")
            floor = (" (median of 5 sets of as many real training digits: the floor; runs "
                     + ", ".join(f"{v:.2f}" for v in r["digits_frechet_runs"]) + ")"
                     if r is results["baselines"]["data_vs_data"] else "")
            lines.append(f"  {name:28s} Frechet {r['digits_frechet']:8.2f}{accuracy}{floor}")
    inception_rows = [(name, r) for name, r in results["samplers"].items() if "fid" in r]
    if inception_rows:
        lines.append("Inception-v3 (pytorch-fid weights) against the training split's statistics:")
        for name, r in inception_rows:
            lines.append(f"  {name:28s} FID {r['fid']:8.2f}  IS {r['inception_score']:6.2f} +- "
                         f"{r['inception_score_std']:.2f}  KID x 1e3 {1e3 * r['kid']:7.2f} +- {1e3 * r['kid_std']:.2f} "
                         f"({r['fid_num_samples']} samples, {r['fid_reference_count']} reference images)")
    if "likelihood" in results:
        nll = results["likelihood"]
        lines.append(
            f"NLL of {nll['num_points']} held-out points: {nll['nll_nats_per_dim']:.4f} +- "
            f"{nll['nll_standard_error']:.4f} nats/dim (probability-flow ODE, mean NFE {nll['nfe_mean']:.1f}, "
            f"{nll['failed_points']} failed solves; the prior alone: {nll['prior_nll_nats_per_dim']:.4f})"
        )
        if "bits_per_dim" in nll:
            lines.append(f"  = {nll['bits_per_dim']:.4f} +- {nll['bits_per_dim_standard_error']:.4f} bits/dim of the "
                         f"8-bit images, uniformly dequantised (the prior alone: {nll['prior_bits_per_dim']:.4f})")
        if nll["failed_points"]:
            lines.append(
                f"NLL not available: the ODE solve failed for {nll['failed_points']} of {nll['num_points']} points; "
                "raise evaluate.likelihood.max_steps or loosen its rtol/atol"
            )
    return "\n".join(lines)
