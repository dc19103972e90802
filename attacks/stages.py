"""Attack stages, registered into audit.pipeline's stage list (imported by the pipeline):
mia_refs (reference pipelines, only with --mia-refs), mia_release (the release itself),
mia_model (the target and each retrained model), inversion (model inversion of those models) and
features (feature inversion and HCR bounds on their penultimate features)."""

from __future__ import annotations

import dataclasses
import logging
import time
from functools import cache, partial
from typing import Any

import numpy as np

from attacks.feature_inversion import feature_inversion
from attacks.features import split_classifier
from attacks.hcr import hcr_bounds
from attacks.inversion import VARIANTS, invert, score_reconstructions
from attacks.membership import REFERENCE_ATTACKS, model_attack_scores
from attacks.metrics import AttackMetrics, evaluate_attack, select_strongest, selection_halves
from attacks.references import (
    TARGET_ROW,
    AttackRecords,
    attack_records,
    load_references,
    query_logits,
    stage_mia_refs,
)
from attacks.release import nearest_l2, penultimate_features, release_scores
from audit.models import load_weights
from audit.pipeline import Run, Stage, register_stage
from audit.seeding import numpy_rng, torch_generator
from audit.store import mia_scores_name, row_of
from audit.training import accuracy, predict_logits, to_tensor, train_classifier
from generators.bn_match import frozen

log = logging.getLogger(__name__)


def metrics_summary(m: AttackMetrics) -> dict[str, Any]:
    return {
        "auc": m.auc,
        "auc_ci": list(m.auc_ci),
        "p_value": m.p_value,
        "tpr_at_0.1%fpr": m.tpr_at_fpr[0.001],
        "tpr_at_1%fpr": m.tpr_at_fpr[0.01],
        "min_resolvable_fpr": 1 / m.n_nonmembers,
        "balanced_accuracy": m.balanced_accuracy,
        "eps_lower": m.eps_lower,
        "eps_delta": m.eps_delta,
        "n_members": m.n_members,
        "n_nonmembers": m.n_nonmembers,
    }


def _evaluate_all(
    run: Run,
    family: str,
    row: str,
    scores: dict[str, np.ndarray],
    is_member: np.ndarray,
    *,
    diagnostics: tuple[str, ...] = (),
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Metrics of every attack on one row (all candidates), and the row's worst-case columns for
    the family: the attack chosen on one half of the candidates, measured on the other half.
    diagnostics: attacks reported beside the others but outside the worst case (and the gate)."""
    c = run.config
    metrics = {
        attack: evaluate_attack(
            s[is_member],
            s[~is_member],
            rng=numpy_rng(c.seed, family, "bootstrap", row, attack),
            delta=c.eps_delta,
        )
        for attack, s in scores.items()
    }
    eligible = {a: s for a, s in scores.items() if a not in diagnostics}
    select = selection_halves(is_member, numpy_rng(c.seed, "mia", "selection"))
    chosen = select_strongest(
        eligible,
        is_member,
        select,
        rng=numpy_rng(c.seed, family, "bootstrap-selected", row),
        delta=c.eps_delta,
    )
    m = chosen.metrics
    columns = {
        f"{family}_attack": chosen.attack,
        f"{family}_auc": m.auc,
        f"{family}_auc_ci_low": m.auc_ci[0],
        f"{family}_auc_ci_high": m.auc_ci[1],
        f"{family}_p": chosen.p_value,
        f"{family}_tpr_at_1fpr": m.tpr_at_fpr[0.01],
        f"{family}_eps_lower": m.eps_lower,
    }
    log.info(
        "[%s] %s: AUC %s; strongest on the selection half: %s, AUC %.3f (95%% CI %.3f-%.3f, "
        "p %.2g) on the other half",
        family,
        row,
        ", ".join(f"{a} {m.auc:.3f}" for a, m in metrics.items()),
        chosen.attack,
        m.auc,
        m.auc_ci[0],
        m.auc_ci[1],
        chosen.p_value,
    )
    report = {a: metrics_summary(m) for a, m in metrics.items()}
    selection = {
        "attack": chosen.attack,
        "selection_auc": chosen.selection_auc,
        **metrics_summary(m),
        "p_value_auc": m.p_value,
        "threshold": chosen.threshold,
        "p_value_threshold": chosen.p_threshold,
        "p_value": chosen.p_value,  # the gate's: 2 x min of the two tests
    }
    return report, selection, columns


def _candidates(records: AttackRecords) -> tuple[np.ndarray, np.ndarray]:
    """Dataset indices of the candidates and whether each is a member."""
    return records.pool[records.candidates], records.pool_is_member[records.candidates]


INSIDER = "target_feature_l2"  # a diagnostic: needs the private target, which no attacker holds


def stage_mia_release(run: Run) -> None:
    """GAN-Leaks full black-box on each release, with what a release attacker could hold: pixels,
    SSIM, HaarPSI and distances in the population model's features (trained on records no audited
    pipeline saw, or the user's --attacker-weights). With reference pipelines also the calibrated
    variants: the score minus the mean score against the reference synthetic sets of the
    reference models that did not train on the candidate. The same distance in the private
    target's features is kept as a labelled insider diagnostic, outside the worst case."""
    c, data = run.config, run.data
    records = attack_records(run)
    chosen, is_member = _candidates(records)
    candidates = data.images[chosen]
    extractor, target = run.saved_model(POPULATION_MODEL), run.target()

    @cache  # only when some row is computed: a run that adds a K reuses the others
    def candidate_features(insider: bool = False) -> Any:
        return penultimate_features(target if insider else extractor, candidates, device=c.device)

    def scores_against(synthetic: np.ndarray) -> dict[str, np.ndarray]:
        return release_scores(
            candidates,
            synthetic,
            candidate_features=candidate_features(),
            synthetic_features=penultimate_features(extractor, synthetic, device=c.device),
            device=c.device,
        )

    refs_info = run.store.read_json("refs.json")
    report: dict[str, Any] = {}
    selected: dict[str, Any] = {}
    columns: dict[str, dict[str, Any]] = {}

    def attack(path: str, name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        synthetic = run.store.read_npz(path)["images"]
        scores = scores_against(synthetic)
        if refs_info["n_references"] and name in refs_info["rows"]:
            scores.update(
                _calibrated(run, name, refs_info["n_references"], records, scores, scores_against)
            )
        scores[INSIDER] = -nearest_l2(
            candidate_features(True), penultimate_features(target, synthetic, device=c.device)
        )
        run.store.write_npz(
            mia_scores_name("mia_release", name),
            candidates=chosen,
            is_member=is_member,
            **{f"score_{d}": s for d, s in scores.items()},
        )
        return _evaluate_all(run, "mia_release", name, scores, is_member, diagnostics=(INSIDER,))

    for release in run.releases():
        path, name = release["path"], row_of(release)
        report[name], selected[name], columns[name] = run.row(
            name, partial(attack, path, name), reads=(path, POPULATION_MODEL)
        )
        columns[name][f"mia_release_{INSIDER}_auc"] = report[name][INSIDER]["auc"]
    run.store.write_json(
        "mia_release.json",
        {
            "attacks": report,
            "selected": selected,
            "diagnostics": [INSIDER],
            "feature_extractor": run.store.read_json("population_model.json")["source"],
            **_candidate_counts(is_member),
        },
    )
    run.store.write_json("columns/mia_release.json", columns)


def _candidate_counts(is_member: np.ndarray) -> dict[str, int]:
    return {"n_members": int(is_member.sum()), "n_nonmembers": int((~is_member).sum())}


def _calibrated(
    run: Run,
    row: str,
    n_refs: int,
    records: AttackRecords,
    scores: dict[str, np.ndarray],
    scores_against: Any,
) -> dict[str, np.ndarray]:
    out_sum = {d: np.zeros(len(records.candidates)) for d in scores}
    out_count = np.zeros(len(records.candidates))
    for i in range(n_refs):
        ref = run.store.read_npz(f"refs/ref{i}.npz")
        is_out = ~ref["keep"][records.candidates]
        ref_scores = scores_against(ref[f"images_{row}"])
        for d in scores:
            out_sum[d] += np.where(is_out, ref_scores[d], 0.0)
        out_count += is_out
    return {f"{d}_calibrated": scores[d] - out_sum[d] / out_count for d in scores}


def attacked_models(run: Run) -> dict[str, str]:
    """Every classifier the model attacks target: row -> saved weights in the run directory."""
    return {TARGET_ROW: "target.pt"} | {row_of(r): f"models/{row_of(r)}.pt" for r in run.releases()}


def stage_mia_model(run: Run) -> None:
    """Classifier attacks on the target (what releasing the model itself would leak) and on each
    release's retrained model. Reference attacks (LiRA, RMIA) run where reference pipelines cover
    the row; the single-model attacks, raw and class-calibrated, run everywhere."""
    c, data = run.config, run.data
    records = attack_records(run)
    chosen, is_member = _candidates(records)
    labels, population_labels = data.labels[chosen], data.labels[records.population]
    models = attacked_models(run)
    lira_notes: dict[str, dict[str, str]] = {}  # reference attacks not run, variances floored
    report: dict[str, Any] = {}
    selected: dict[str, Any] = {}
    columns: dict[str, dict[str, Any]] = {}
    ran: dict[str, list[str]] = {}

    def attack(
        row: str, path: str
    ) -> tuple[list[str], dict[str, str], dict[str, Any], Any, dict[str, Any]]:
        model = run.saved_model(path)
        logits = predict_logits(model, data.images[chosen], device=c.device).numpy()
        population = predict_logits(model, data.images[records.population], device=c.device)
        references = load_references(run, row)
        reference_inputs: dict[str, np.ndarray] = {}
        if references is not None:
            keep, ref_logits, ref_population = references
            reference_inputs = {
                "reference_in": keep[:, records.candidates],
                "reference_logits": ref_logits[:, :, records.candidates],
                "reference_population_logits": ref_population,
                "target_query_logits": query_logits(run, model, data.images[chosen]),
            }
        scores, notes = model_attack_scores(
            logits, labels, population.numpy(), population_labels, **reference_inputs
        )
        for attack, note in notes.items():
            log.warning("[mia_model] %s: %s %s", row, attack, note)
        run.store.write_npz(
            mia_scores_name("mia_model", row),
            candidates=chosen,
            is_member=is_member,
            **{f"score_{a}": s for a, s in scores.items()},
        )
        return (list(scores), notes, *_evaluate_all(run, "mia_model", row, scores, is_member))

    for row, path in models.items():
        ran[row], lira_notes[row], report[row], selected[row], columns[row] = run.row(
            row, partial(attack, row, path), reads=(path,)
        )
    refs_info = run.store.read_json("refs.json")
    n_refs = refs_info["n_references"]
    run.store.write_json(
        "mia_model.json",
        {
            "attacks": report,
            "selected": selected,
            "attacks_run": ran,
            "n_references": n_refs,
            "reference_notes": {row: notes for row, notes in lira_notes.items() if notes},
            "note": (
                f"LiRA and RMIA ran with {n_refs} reference pipelines"
                + (
                    " (the online LiRA variants need 2 IN and 2 OUT references per record, "
                    "so --mia-refs 4 or more; they did not run here)"
                    if n_refs < 4
                    else ""
                )
                + (
                    ", with augmented queries (shifted and mirrored copies)"
                    if c.mia_augment
                    else ""
                )
                + (f". {refs_info['size_note']}" if refs_info.get("size_note") else "")
                if n_refs
                else "no reference models (--mia-refs 0): only the single-model attacks ran, "
                "raw and class-calibrated against population records; LiRA and RMIA ("
                + ", ".join(REFERENCE_ATTACKS)
                + ") need --mia-refs N"
            ),
            **_candidate_counts(is_member),
            "n_population": len(records.population),
        },
    )
    run.store.write_json("columns/mia_model.json", columns)


POPULATION_MODEL = "population_model.pt"


def stage_population_model(run: Run) -> None:
    """A classifier of the --model architecture trained on the population records (the test
    split), which no audited pipeline trains on: the features a release attacker could compute,
    and the independent evaluator of model inversion. --attacker-weights supplies one instead."""
    c, data, split = run.config, run.data, run.split()
    model = run.new_model("evaluator")
    if c.attacker_weights:
        load_weights(model, c.attacker_weights, model_name=c.model, flag="--attacker-weights")
        source = f"loaded from {c.attacker_weights} (--attacker-weights)"
    else:
        train_classifier(
            model,
            data.images[split.test],
            data.labels[split.test],
            dataclasses.replace(c.target, epochs=c.inversion.eval_epochs),
            seed=c.seed,
            stream="evaluator",
            device=c.device,
            desc="population model",
        )
        source = f"trained on the {len(split.test)} population (test) records"
    run.store.write_state_dict(POPULATION_MODEL, model.state_dict())
    acc = accuracy(
        run.saved_model(POPULATION_MODEL),
        data.images[split.nonmembers],
        data.labels[split.nonmembers],
        device=c.device,
    )
    run.store.write_json("population_model.json", {"source": source, "acc_nonmembers": acc})
    log.info("[population_model] %s: accuracy on non-members %.3f", source, acc)


def stage_inversion(run: Run) -> None:
    """Model inversion of the target and each retrained model, scored against members and
    non-members of each class and by the population model (trained on the test split, which no
    attacked model saw)."""
    evaluator_acc = run.store.read_json("population_model.json")["acc_nonmembers"]
    report: dict[str, Any] = {}
    columns: dict[str, dict[str, float]] = {}
    for row, path in attacked_models(run).items():
        report[row], columns[row] = run.row(
            row, partial(_invert_model, run, row, path), reads=(path, EVALUATOR)
        )
        priors, miface = report[row]["priors"], report[row]["miface"]
        log.info(
            "[inversion] %s: NN-SSIM to members %.3f vs non-members %.3f, evaluator accuracy "
            "%.2f (MIFace %.2f)",
            row,
            priors["nn_ssim_member"],
            priors["nn_ssim_nonmember"],
            priors["eval_acc"],
            miface["eval_acc"],
        )
    run.store.write_json(
        "inversion.json",
        {"models": report, "evaluator_acc_on_nonmembers": evaluator_acc},
    )
    run.store.write_json("columns/inversion.json", columns)


EVALUATOR = POPULATION_MODEL  # trained on the test split, which no attacked model saw


def _invert_model(
    run: Run, row: str, path: str
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Both inversion variants on one saved model: (per-variant report, results columns)."""
    c, data, split = run.config, run.data, run.split()
    model, evaluator = run.saved_model(path), run.saved_model(EVALUATOR)
    report: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        reconstructions = invert(
            model,
            num_classes=len(data.classes),
            channels=data.channels,
            image_size=data.image_size,
            cfg=c.inversion,
            variant=variant,
            seed=c.seed,
            stream=f"inversion-{row}-{variant}",
            device=c.device,
        )
        scores = score_reconstructions(
            reconstructions,
            data.images[split.members],
            data.labels[split.members],
            data.images[split.nonmembers],
            data.labels[split.nonmembers],
            rng=numpy_rng(c.seed, "inversion", "score", row, variant),
            device=c.device,
        )
        predicted = predict_logits(evaluator, reconstructions.images, device=c.device)
        correct = predicted.argmax(1).numpy() == reconstructions.labels
        run.store.write_npz(
            f"inversion/{row}-{variant}.npz",
            images=reconstructions.images,
            labels=reconstructions.labels,
            evaluator_correct=correct,
            **scores,
        )
        report[variant] = {
            **{f"nn_{key}": float(np.nanmean(v)) for key, v in scores.items()},
            "ssim_gap": float(np.nanmean(scores["ssim_member"] - scores["ssim_nonmember"])),
            "eval_acc": float(correct.mean()),
        }
    priors, miface = report["priors"], report["miface"]
    columns = {
        "inversion_nn_ssim_member": priors["nn_ssim_member"],
        "inversion_nn_ssim_nonmember": priors["nn_ssim_nonmember"],
        "inversion_eval_acc": priors["eval_acc"],
        "inversion_miface_eval_acc": miface["eval_acc"],
    }
    return report, columns


def stage_features(run: Run) -> None:
    """Feature inversion with noisy features and the HCR bounds at the same noise scales, for the
    target and each retrained model."""
    c, split = run.config, run.split()
    f = c.features
    rng = numpy_rng(c.seed, "features", "victims")
    victims = np.sort(rng.choice(split.members, min(f.victims, len(split.members)), replace=False))
    hcr_victims = victims[: f.hcr_images]
    releases = run.releases()
    report: dict[str, Any] = {}
    for row, path in attacked_models(run).items():
        source = None  # the attacker's training images: non-members, or a release
        if f.attacker_data == "synthetic" and releases:
            release = next((r for r in releases if row_of(r) == row), None)
            source = (release or releases[-1])["path"]
        report[row] = run.row(
            row,
            partial(_invert_features, run, row, path, source, victims, hcr_victims),
            reads=(path,) if source is None else (path, source),
        )
        log.info(
            "[features] %s: reconstruction SSIM %s; HCR median std %s",
            row,
            " ".join(f"{s['scale']}:{s['ssim_mean']:.2f}" for s in report[row]["scales"]),
            " ".join(
                f"{s['scale']}:{s['hcr_median_std']:.3g}"
                for s in report[row]["scales"]
                if "hcr_median_std" in s
            ),
        )
    run.store.write_json(
        "features.json",
        {
            "models": report,
            "attacker_data": f.attacker_data,
            "n_victims": len(victims),
            "n_hcr_images": len(hcr_victims),
        },
    )


def _invert_features(
    run: Run,
    row: str,
    path: str,
    attacker_source: str | None,
    victims: np.ndarray,
    hcr_victims: np.ndarray,
) -> dict[str, Any]:
    """Feature inversion and HCR bounds for one saved model; arrays to features/<row>.npz."""
    c, data, split, f = run.config, run.data, run.split(), run.config.features
    model = run.saved_model(path)
    attacker_images = (
        data.images[split.nonmembers]
        if attacker_source is None
        else run.store.read_npz(attacker_source)["images"]
    )
    start = time.perf_counter()
    inverted = feature_inversion(
        model,
        attacker_images=attacker_images,
        victims=data.images[victims],
        eval_images=data.images[split.test],
        eval_labels=data.labels[split.test],
        scales=f.noise_scales,
        steps=f.decoder_steps,
        seed=c.seed,
        stream=f"features-{row}",
        device=c.device,
    )
    decoder_seconds = time.perf_counter() - start
    sigmas = [s["sigma"] for s in inverted["scales"] if s["sigma"] > 0]
    start = time.perf_counter()
    feature_map, _ = split_classifier(model)
    theta = model.normalize(to_tensor(data.images[hcr_victims], c.device))
    with frozen(model):
        bounds = hcr_bounds(
            feature_map,
            theta,
            sigmas,
            generator=torch_generator(c.seed, "hcr", row, device=c.device),
            draws=f.hcr_draws,
            rounds=f.hcr_rounds,
            lsqr_iters=f.hcr_lsqr_iters,
            perturbation=f.hcr_perturbation,
        )
    hcr_seconds = time.perf_counter() - start
    arrays: dict[str, np.ndarray] = {"victims": victims, "hcr_victims": hcr_victims}
    for entry in inverted["scales"]:
        scale, sigma = entry["scale"], entry["sigma"]
        arrays[f"reconstructions_{scale}"] = inverted["reconstructions"][scale].numpy()
        if sigma > 0:
            std = bounds.std_bounds[sigma].flatten().cpu().numpy().astype(np.float64)
            arrays[f"hcr_std_{scale}"] = std
            entry.update(hcr_summary(std))
    run.store.write_npz(f"features/{row}.npz", **arrays)
    # timings go to config.json, not into results: the same inputs give the same bytes
    run.timings[f"features.{row}.feature_inversion"] = round(decoder_seconds, 3)
    run.timings[f"features.{row}.hcr"] = round(hcr_seconds, 3)
    return {"feature_rms": inverted["feature_rms"], "scales": inverted["scales"]}


def hcr_summary(std: np.ndarray, bins: int = 30) -> dict[str, Any]:
    """Median, quantiles and a log10 histogram of per-coefficient std bounds (positive part)."""
    positive = std[std > 0]
    counts, edges = np.histogram(np.log10(positive) if len(positive) else np.zeros(1), bins=bins)
    return {
        "hcr_median_std": float(np.median(std)),
        "hcr_quantiles": {str(q): float(np.quantile(std, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
        "hcr_log10_histogram": {"counts": counts.tolist(), "edges": edges.tolist()},
        "hcr_zero_share": float((std <= 0).mean()),
    }


_REGISTERED = False


def register() -> None:
    global _REGISTERED
    if not _REGISTERED:
        data = ("dataset", "data_root", "image_size", "model", "seed", "device")
        candidates = ("mia_candidates", "max_reference", "mia_refs", "mia_augment")
        register_stage(
            Stage(
                "mia_refs",
                stage_mia_refs,
                config=(
                    *(*data, *candidates, "target", "utility", "utility_seeds", "weights"),
                    *("generators", "ks", "epsilons", "n_synthetic", "bn", "vae", "dp", "fed"),
                    "synthetic",
                ),
                reads=("split", "target", "generate"),
            )
        )
        register_stage(
            Stage(
                "population_model",
                stage_population_model,
                config=(*data, "inversion", "target", "attacker_weights"),
                reads=("split",),
            )
        )
        register_stage(
            Stage(
                "mia_release",
                stage_mia_release,
                config=(*data, *candidates, "eps_delta"),
                reads=("split", "target", "generate", "mia_refs", "population_model"),
                row_reads=("generate",),
            )
        )
        register_stage(
            Stage(
                "mia_model",
                stage_mia_model,
                config=(*data, *candidates, "eps_delta"),
                reads=("split", "target", "generate", "utility", "mia_refs"),
                row_reads=("generate", "utility"),
            )
        )
        register_stage(
            Stage(
                "inversion",
                stage_inversion,
                config=(*data, "inversion", "target"),
                reads=("split", "target", "generate", "utility", "population_model"),
                row_reads=("generate", "utility"),
            )
        )
        register_stage(
            Stage(
                "features",
                stage_features,
                config=(*data, "features"),
                reads=("split", "target", "generate", "utility"),
                row_reads=("generate", "utility"),
            )
        )
        _REGISTERED = True


register()
