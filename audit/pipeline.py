"""`audit run` as named stages over a run directory.

Each stage reads what it needs from the run directory and writes its outputs there. Stages declare
the settings they depend on and the stages they read, so a rerun on the same directory reuses what
is still valid (audit/stagecache.py); new stages (attacks) register without editing the others.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audit.config import RunConfig
from audit.data import (
    ImageDataset,
    Split,
    load_dataset,
    load_split_file,
    split_dataset,
    split_for_pretrained,
)
from audit.errors import AuditError
from audit.holdout import HoldoutSets, choose_holdout, memorisation_statistics
from audit.models import (
    NormalizedClassifier,
    build_model,
    load_weights,
    require_bn,
    weights_format,
)
from audit.provenance import environment, package_versions, source_digest
from audit.seeding import numpy_rng
from audit.similarity import Metric, nearest_neighbours, summarise
from audit.stagecache import (
    RECORD_DIR,
    ROW_EXEMPT_FIELDS,
    RowCache,
    StageRecord,
    as_json,
    check_record,
    load_record,
    path_fingerprint,
    save_record,
    stage_key,
)
from audit.store import RunDir, row_name, row_of, synthetic_name
from audit.training import accuracy, train_classifier
from audit.utility import retrain
from generators.base import Axis, GenerationRequest, SetKey, SyntheticSet, get_generator

log = logging.getLogger(__name__)

METRICS: tuple[Metric, ...] = ("ssim", "haarpsi")


@dataclass
class Run:
    """What every stage gets: the frozen config, the loaded dataset and the run directory."""

    config: RunConfig
    data: ImageDataset
    store: RunDir
    timings: dict[str, float] = field(default_factory=dict)
    recorded: dict[str, float] = field(default_factory=dict)  # reused stages' earlier seconds
    rows: RowCache | None = None  # the running stage's per-row cache (set by execute)

    def row(self, name: str, compute: Callable[[], Any], *, reads: tuple[str, ...] = ()) -> Any:
        """One row of the running stage (a release, the target, the real baseline): its recorded
        result if an earlier run computed it under the same key, else compute() now. reads: the
        files of row_reads stages this row's work reads."""
        if self.rows is None:
            return as_json(compute())
        return self.rows.get(name, reads, compute)

    def seconds(self, stage: str) -> float:
        """What a stage cost: this run's time, or the recorded time of a reused stage."""
        return self.timings.get(stage) or self.recorded.get(stage, 0.0)

    def split(self) -> Split:
        arrays = self.store.read_npz("split.npz")
        return Split(arrays["members"], arrays["nonmembers"], arrays["test"])

    def new_model(self, stream: str) -> NormalizedClassifier:
        return build_model(
            self.config.model,
            channels=self.data.channels,
            num_classes=len(self.data.classes),
            seed=self.config.seed,
            stream=stream,
        )

    def retrain(self, images: np.ndarray, labels: np.ndarray, stream: str) -> NormalizedClassifier:
        """A fresh model trained on (images, labels) with the run's utility recipe."""
        c = self.config
        return retrain(
            images,
            labels,
            model_name=c.model,
            num_classes=len(self.data.classes),
            cfg=c.utility,
            seed=c.seed,
            stream=stream,
            device=c.device,
        )

    def target(self) -> NormalizedClassifier:
        return self.saved_model("target.pt")

    def saved_model(self, name: str) -> NormalizedClassifier:
        """A classifier this run saved (target.pt, models/<row>.pt)."""
        model = self.new_model("saved")
        load_weights(model, str(self.store.path(name)), model_name=self.config.model)
        return model.eval()

    def generation_request(
        self,
        teacher: NormalizedClassifier,
        images: np.ndarray,
        labels: np.ndarray,
        **settings: Any,
    ) -> GenerationRequest:
        """A request for this run's data shape and settings: the teacher, the private records
        (images, labels) generators train on, and any field to override (seed, ks, epsilons,
        resume, on_set)."""
        c, data = self.config, self.data
        fields: dict[str, Any] = {
            "ks": c.ks,
            "epsilons": c.epsilons,
            "seed": c.seed,
            **settings,
        }
        return GenerationRequest(
            teacher=teacher,
            n_images=c.n_synthetic,
            num_classes=len(data.classes),
            channels=data.channels,
            image_size=data.image_size,
            device=c.device,
            classes=data.classes,
            private_images=images,
            private_labels=labels,
            **fields,
        )

    def releases(self) -> list[dict]:
        return list(self.store.read_json("generate.json")["releases"])


@dataclass(frozen=True)
class Stage:
    """A named step. config: the RunConfig fields its outputs depend on; reads: the stages whose
    outputs it reads. Both key its outputs for reuse (audit/stagecache.py); a stage with
    cached=False runs every time (the report: cheap, and it must reflect the whole run)."""

    name: str
    run: Callable[[Run], None]
    config: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    cached: bool = True
    # stages among `reads` whose outputs this stage reads one row at a time (run.row(reads=...)):
    # they key each row through the files it names, not the whole stage
    row_reads: tuple[str, ...] = ()


# --------------------------------------------------------------------------- stages


PRETRAINED_NOTE = (
    "The --weights file is a bare pytorchcv checkpoint, trained on the dataset's whole train "
    "part: members are that part, non-members and test are disjoint halves of its test part."
)
ASSUMED_NOTE = (
    "Membership figures assume the --weights model was trained on this run's members only (the "
    "seeded split). If it was trained on other records, give their split with --split: a "
    "'non-member' it was trained on makes every attack read near chance."
)


def membership_basis(config: RunConfig, data: ImageDataset) -> tuple[bool, str | None]:
    """(split follows a pretrained checkpoint, the note on what membership means, if any)."""
    if not config.weights or config.split_file:
        return False, None
    if weights_format(config.weights) == "pytorchcv" and data.n_train is not None:
        return True, PRETRAINED_NOTE
    return False, ASSUMED_NOTE


def check_canary_room(config: RunConfig, split: Split) -> None:
    """--canaries draws from the test split (attacks/canary_stage.py): it must hold that many."""
    if config.canaries > len(split.test):
        raise AuditError(
            f"--canaries {config.canaries} needs as many test-split records; the split has "
            f"{len(split.test)}"
        )


def stage_split(run: Run) -> None:
    c = run.config
    pretrained, note = membership_basis(c, run.data)
    caps = {
        "max_members": c.max_members,
        "max_nonmembers": c.max_nonmembers,
        "max_test": c.max_test,
    }
    if c.split_file:
        split = load_split_file(c.split_file, len(run.data.images))
    elif pretrained:
        split = split_for_pretrained(run.data, seed=c.seed, **caps)
    else:
        split = split_dataset(
            run.data,
            seed=c.seed,
            member_fraction=c.member_fraction,
            nonmember_fraction=c.nonmember_fraction,
            **caps,
        )
    check_canary_room(c, split)  # before any training, not only at the last stage
    run.store.write_npz(
        "split.npz", members=split.members, nonmembers=split.nonmembers, test=split.test
    )
    log.info(
        "[split] %s: %d members, %d non-members, %d test images of %dx%dx%d",
        run.data.name,
        len(split.members),
        len(split.nonmembers),
        len(split.test),
        run.data.image_size,
        run.data.image_size,
        run.data.channels,
    )
    if note:
        log.warning("[split] %s", note)


def stage_target(run: Run) -> None:
    c, data, split = run.config, run.data, run.split()
    model = run.new_model("target")
    if c.weights:
        load_weights(model, c.weights, model_name=c.model)
        source = f"loaded from {c.weights}"
    else:
        train_classifier(
            model,
            data.images[split.members],
            data.labels[split.members],
            c.target,
            seed=c.seed,
            stream="target",
            device=c.device,
            desc="target",
        )
        source = "trained on the members"
    acc = {
        f"acc_{part}": accuracy(model, data.images[idx], data.labels[idx], device=c.device)
        for part, idx in (
            ("members", split.members),
            ("nonmembers", split.nonmembers),
            ("test", split.test),
        )
    }
    run.store.write_state_dict("target.pt", model.state_dict())
    note = membership_basis(c, data)[1]
    run.store.write_json(
        "target.json", {"model": c.model, "source": source, "membership_note": note, **acc}
    )
    log.info(
        "[target] %s %s: accuracy members %.3f, non-members %.3f, test %.3f",
        c.model,
        source,
        acc["acc_members"],
        acc["acc_nonmembers"],
        acc["acc_test"],
    )


def stage_generate(run: Run) -> None:
    """Each generator's set at each K. A K an earlier run on this directory already released is
    reused; a new K goes on from the checkpoint of the largest smaller K that run saved (one
    trajectory serves every K), so adding --k 4000 to a 500/2000 run costs 2,000 steps."""
    releases = []
    for name in run.config.generators:
        releases += _generate_with(run, name)
    run.store.write_json("generate.json", {"releases": releases})


def checkpoint_name(generator: str, k: int) -> str:
    return f"checkpoints/{row_name(generator, k)}.npz"


def release_setting(axis: Axis, key: SetKey) -> tuple[int | None, float | None]:
    """(k, epsilon) of a generator's set: its key is a K, a target epsilon, or neither."""
    if axis == "k":
        assert isinstance(key, int)
        return key, None
    if axis == "epsilon":
        assert key is not None
        return None, float(key)
    return None, None


def _generate_with(run: Run, name: str) -> list[dict[str, Any]]:
    c, rows = run.config, run.rows
    generator = get_generator(name, c)
    keys: tuple[SetKey, ...] = (None,)
    if generator.axis == "k":
        keys = c.ks
    elif generator.axis == "epsilon":
        keys = c.epsilons

    def key_row(key: SetKey) -> str:
        return row_name(name, *release_setting(generator.axis, key))

    done = {key: rows.reuse(key_row(key), ()) if rows else None for key in keys}
    missing = [key for key in keys if done[key] is None]
    resume_k = None
    if missing and generator.axis == "k" and rows is not None:
        first = min(int(k) for k in missing if k is not None)
        reused_now = [int(k) for k, entry in done.items() if k is not None and entry is not None]
        earlier = _recorded_ks(run, name, skip=set(c.ks))  # e.g. from a run with other Ks
        resume_k = max((k for k in reused_now + earlier if k < first), default=None)
    if missing:

        def save(key: SetKey, synthetic: SyntheticSet) -> None:
            done[key] = run.row(
                key_row(key), partial(_release, run, name, generator.axis, key, synthetic)
            )

        resume = None if resume_k is None else run.store.read_npz(checkpoint_name(name, resume_k))
        split = run.split()
        request = run.generation_request(
            run.target(),
            run.data.images[split.members],
            run.data.labels[split.members],
            ks=tuple(int(k) for k in missing if k is not None) if generator.axis == "k" else c.ks,
            epsilons=tuple(float(e) for e in missing if e is not None)
            if generator.axis == "epsilon"
            else (),
            resume=resume,
            on_set=save,  # each set is saved as soon as it is final: a kill keeps it
        )
        if resume_k is not None:
            log.info("[generate] %s: going on from the checkpoint at K=%d", name, resume_k)
        start = time.perf_counter()
        sets = generator.generate(request)
        run.timings[f"generate.{name}"] = round(time.perf_counter() - start, 3)
        for key in missing:
            if done[key] is None:  # a generator that only returns its sets
                save(key, sets[key])
    return [entry for entry in done.values() if entry is not None]  # in the order of keys


def _release(
    run: Run, name: str, axis: Axis, key: SetKey, synthetic: SyntheticSet
) -> dict[str, Any]:
    """Write one set (and its checkpoint) and return its generate.json entry."""
    k, epsilon = release_setting(axis, key)
    path = synthetic_name(name, k, epsilon)
    run.store.write_npz(path, images=synthetic.images, labels=synthetic.labels)
    if k is not None and synthetic.checkpoint is not None:
        run.store.write_npz_uncompressed(checkpoint_name(name, k), synthetic.checkpoint)
    log.info(
        "[generate] %s: %d images -> %s", row_name(name, k, epsilon), len(synthetic.images), path
    )
    entry: dict[str, Any] = {"generator": name, "k": k}
    if axis == "epsilon":
        entry["epsilon"] = epsilon
    return {**entry, "path": path, "n_synthetic": len(synthetic.images), **synthetic.info}


def _recorded_ks(run: Run, name: str, *, skip: set[int | None]) -> list[int]:
    """Ks (outside skip) of this generator whose rows (set and checkpoint) an earlier run on this
    directory left valid under the current settings."""
    assert run.rows is not None
    found = []
    for record in run.store.path(f"{RECORD_DIR}/generate").glob(f"{name}-k*.json"):
        suffix = record.stem.removeprefix(f"{name}-k")
        if not suffix.isdigit() or int(suffix) in skip:
            continue
        k = int(suffix)
        hit = run.rows.valid(row_name(name, k), ())
        if hit is not None and checkpoint_name(name, k) in hit[0].files:
            found.append(k)
    return found


def _privacy_row(
    query: np.ndarray, split: Split, run: Run, name: str, sets: HoldoutSets | None
) -> dict[str, Any]:
    """The k nearest members of each query image by each metric (top-1 summarised in the row,
    top-k kept for the report) and, given the held-out sets, the holdout-relative statistics:
    summary row + privacy/{name}.npz. sets=None: the held-out calibration row itself."""
    members = run.data.images[split.members]
    summary: dict[str, Any] = {"n_scored": len(query)}
    arrays: dict[str, np.ndarray] = {}
    k = min(run.config.nn_k, len(members))
    calibration = None if sets is None else run.store.read_npz(HOLDOUT_SCORES)
    device = run.config.device
    for metric in METRICS:
        values, indices = nearest_neighbours(query, members, metric, k=k, device=device)
        summary.update(
            summarise(
                values[:, 0], prefix=f"nn_{metric}", thresholds=run.config.similarity_thresholds
            )
        )
        arrays[f"{metric}_values"] = values[:, 0]
        arrays[f"{metric}_member"] = indices[:, 0]  # position within split.members
        arrays[f"{metric}_index"] = split.members[indices[:, 0]]  # index in the dataset's order
        arrays[f"{metric}_topk_values"] = values  # (n, k), best first
        arrays[f"{metric}_topk_member"] = indices
    if sets is not None and calibration is not None:
        images = run.data.images
        stats, extra = memorisation_statistics(
            query,
            {metric: arrays[f"{metric}_values"] for metric in METRICS},
            members=members,
            member_sample=members[sets.member_sample],
            holdout=images[sets.holdout],
            calibration={metric: calibration[f"{metric}_values"] for metric in METRICS},
            rng=numpy_rng(run.config.seed, "holdout", "permutations", name),
            device=device,
        )
        summary.update(stats)
        arrays.update(extra)
        arrays["exact_copy_index"] = split.members[extra["exact_copy_member"]]  # dataset index
    run.store.write_npz(f"privacy/{name}.npz", **arrays)
    return summary


HOLDOUT_SCORES = "privacy/holdout.npz"  # held-out non-members' nearest-member scores


def _privacy_of_release(
    run: Run, split: Split, path: str, name: str, sets: HoldoutSets
) -> dict[str, Any]:
    return _privacy_row(run.store.read_npz(path)["images"], split, run, name, sets)


def stage_privacy(run: Run) -> None:
    """Nearest members of each released image, and how that compares with records never used:
    the non-members split into a held-out yardstick (calibrating copy detection; as many members
    sampled beside it for the holdout share) and the `real` row's release, which is what an
    independent draw from the private distribution scores on the same tests."""
    c, data, split = run.config, run.data, run.split()
    sets = choose_holdout(
        split.nonmembers,
        len(split.members),
        numpy_rng(c.seed, "holdout"),
        max_holdout=c.max_holdout,
        max_real=c.max_reference,
    )
    holdout = run.row(
        "holdout", lambda: _privacy_row(data.images[sets.holdout], split, run, "holdout", None)
    )
    rows = {}
    for release in run.releases():
        path, name = release["path"], row_of(release)
        rows[name] = run.row(
            name,
            partial(_privacy_of_release, run, split, path, name, sets),
            reads=(path, HOLDOUT_SCORES),
        )
        _log_privacy(name, rows[name])
    rows["real"] = run.row(
        "real",
        lambda: _privacy_row(data.images[sets.real_release], split, run, "real", sets),
        reads=(HOLDOUT_SCORES,),
    )
    _log_privacy("real", rows["real"])
    run.store.write_json(
        "privacy.json",
        {
            "rows": rows,
            "holdout": holdout,
            "holdout_nonmembers": sets.holdout,
            "member_sample": split.members[sets.member_sample],
            "reference_nonmembers": sets.real_release,
        },
    )


def _log_privacy(name: str, row: dict[str, Any]) -> None:
    log.info(
        "[privacy] %s: holdout share SSIM %.2f (p %.2g), HaarPSI %.2f (p %.2g); copy share SSIM "
        "%.3f (p %.2g), HaarPSI %.3f (p %.2g); %d exact copies; nearest-member SSIM mean %.3f",
        name,
        row["holdout_share_ssim"],
        row["holdout_share_ssim_p"],
        row["holdout_share_haarpsi"],
        row["holdout_share_haarpsi_p"],
        row["copy_share_ssim"],
        row["copy_share_ssim_p"],
        row["copy_share_haarpsi"],
        row["copy_share_haarpsi_p"],
        row["exact_copies"],
        row["nn_ssim_mean"],
    )


def stage_utility(run: Run) -> None:
    """Retrain from scratch on each release (and on the real members) with utility_seeds seeds;
    report the mean test accuracy and, with more than one seed, its standard deviation. The first
    seed's model of each release is kept (models/<row>.pt) for the attacks on retrained models."""
    c, data, split = run.config, run.data, run.split()
    test_images, test_labels = data.images[split.test], data.labels[split.test]

    def utility_of(images: np.ndarray, labels: np.ndarray, name: str) -> dict[str, Any]:
        accs = []
        seeds = c.utility_seeds
        if name == "real" and c.real_utility_seeds is not None:
            seeds = c.real_utility_seeds
        for repeat in range(seeds):
            model = run.retrain(images, labels, f"utility-{name}-{repeat}")
            accs.append(accuracy(model, test_images, test_labels, device=c.device))
            if repeat == 0 and name != "real":
                run.store.write_state_dict(f"models/{name}.pt", model.state_dict())
        row = {"utility_acc": float(np.mean(accs)), "utility_accs": accs}
        if len(accs) > 1:
            row["utility_acc_std"] = float(np.std(accs, ddof=1))
        log.info(
            "[utility] %s: test accuracy %s",
            name,
            " ".join(f"{a:.3f}" for a in accs)
            + (f" (mean {row['utility_acc']:.3f})" if len(accs) > 1 else ""),
        )
        return row

    def release_utility(path: str, name: str) -> dict[str, Any]:
        synthetic = run.store.read_npz(path)
        return utility_of(synthetic["images"], synthetic["labels"], name)

    members = data.images[split.members], data.labels[split.members]
    rows = {"real": run.row("real", lambda: utility_of(*members, "real"))}
    for release in run.releases():
        path, name = release["path"], row_of(release)
        rows[name] = run.row(name, partial(release_utility, path, name), reads=(path,))
    run.store.write_json("utility.json", {"rows": rows})


def stage_report(run: Run) -> None:
    from reports.gallery import PrivateImages
    from reports.render import build_report, save_exhibits
    from reports.results import collect_results, results_csv
    from reports.thresholds import load_thresholds

    results = collect_results(run.store, run.config, run.data)
    images = run.data.images
    private = PrivateImages(None if run.config.redact_private else images.__getitem__)
    # render before writing anything, so a failure leaves no results file looking final
    html = build_report(run.store, results, private=private, thresholds=load_thresholds())
    if not private.redacted:  # what `audit report` needs to re-render without the dataset
        save_exhibits(run.store, private, images)
    run.store.write_json("results.json", results)
    run.store.write_text("results.csv", results_csv(results["rows"]))
    run.store.write_text("report.html", html)


_DATA = ("dataset", "data_root", "image_size")  # + the loaded images' fingerprint
STAGES: list[Stage] = [
    Stage(
        "split",
        stage_split,
        config=(
            *(*_DATA, "seed", "member_fraction", "nonmember_fraction", "max_members"),
            *("max_nonmembers", "max_test", "split_file", "weights"),
        ),
    ),
    Stage(
        "target",
        stage_target,
        config=(*_DATA, "model", "weights", "target", "seed", "device"),
        reads=("split",),
    ),
    Stage(
        "generate",
        stage_generate,
        config=(
            *("generators", "ks", "epsilons", "n_synthetic", "bn", "vae", "dp", "fed"),
            *("synthetic", "seed", "device"),
        ),
        reads=("split", "target"),
    ),
    Stage(
        "privacy",
        stage_privacy,
        config=(
            *(*_DATA, "similarity_thresholds", "nn_k", "max_reference", "max_holdout"),
            *("seed", "device"),
        ),
        reads=("split", "generate"),
        row_reads=("generate",),
    ),
    Stage(
        "utility",
        stage_utility,
        config=(
            *_DATA,
            "model",
            "utility",
            "utility_seeds",
            "real_utility_seeds",
            "seed",
            "device",
        ),
        reads=("split", "generate"),
        row_reads=("generate",),
    ),
    Stage("report", stage_report, cached=False),
]


def register_stage(stage: Stage, *, before: str = "report") -> None:
    """Insert a stage (e.g. an attack) ahead of another without editing this module."""
    names = [s.name for s in STAGES]
    if stage.name in names:
        raise ValueError(f"stage {stage.name!r} already registered")
    STAGES.insert(names.index(before), stage)


# --------------------------------------------------------------------------- driver


def prepare(config: RunConfig) -> ImageDataset:
    """Everything that can reject bad input, done before any file is written."""
    data = load_dataset(
        config.dataset, config.data_root, image_size=config.image_size, download=config.download
    )
    model = build_model(
        config.model, channels=data.channels, num_classes=len(data.classes), seed=config.seed
    )
    if config.weights:
        load_weights(model, config.weights, model_name=config.model)
    if config.inception_weights:
        from audit.fidelity import load_inception

        load_inception(config.inception_weights, "cpu")
    if config.attacker_weights:
        load_weights(
            model, config.attacker_weights, model_name=config.model, flag="--attacker-weights"
        )
    if config.split_file:
        split = load_split_file(config.split_file, len(data.images))
        if len(split.nonmembers) < 2:
            raise AuditError(
                f"--split {config.split_file} has {len(split.nonmembers)} non-member(s); the "
                "holdout statistics need at least 2"
            )
    if config.synthetic:
        from generators.external import load_synthetic

        load_synthetic(
            config.synthetic,
            classes=data.classes,
            channels=data.channels,
            image_size=data.image_size,
        )
    if "bn_match" in config.generators:
        require_bn(model, config.model)
    for name in config.generators:
        generator = get_generator(name, config)
        validate = getattr(generator, "validate", None)  # a generator's own input checks
        if validate is not None:
            validate(data.channels, data.image_size)
    return data


def _open_run_dir(out: Path, overwrite: bool) -> RunDir:
    """A new directory, or an earlier run's to resume (--overwrite starts it afresh)."""
    if out.exists() and any(out.iterdir()):
        if not (out / "config.json").exists():
            raise AuditError(f"--out {out} is not empty and is not a run directory; choose another")
        if overwrite:
            shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return RunDir(out)


FINAL_OUTPUTS = ("results.json", "results.csv", "report.html")


# modules whose import registers further stages, in this order (the canary audit, the
# costliest, last)
PLUGINS = ("attacks.stages", "audit.fidelity", "attacks.canary_stage")


def load_plugins() -> None:
    import importlib

    for module in PLUGINS:
        importlib.import_module(module)


def execute(config: RunConfig, *, overwrite: bool = False, argv: list[str] | None = None) -> Path:
    """Run every stage; returns the run directory. results.* and report.html exist only when every
    stage succeeded; config.json says "running", "complete" or "failed"."""
    load_plugins()
    data = prepare(config)
    store = _open_run_dir(Path(config.out), overwrite)
    run = Run(config, data, store)
    manifest = {
        "status": "running",
        "command": ["audit", *(argv if argv is not None else sys.argv[1:])],
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": config.seed,
        "config_digest": config.digest(),
        "config": config.to_dict(),
        "environment": environment(),
        "timings_s": run.timings,
    }
    for name in FINAL_OUTPUTS:  # a resumed run's old results must not look final meanwhile
        store.path(name).unlink(missing_ok=True)
    store.write_json("config.json", manifest)
    total = time.perf_counter()
    fingerprint = data_fingerprint(data)
    # another version of the suite or of the numerics under it may compute other bytes: an
    # upgrade recomputes rather than mixing old outputs with new
    software = {n: v for n, v in package_versions().items() if n in KEYED_PACKAGES}
    software["synthaudit_source"] = source_digest()  # an edit without a version bump counts
    input_files = {  # hashed once; each stage's key takes those it declares
        field: path_fingerprint(getattr(config, field))
        for field in ("weights", "split_file", "synthetic", "attacker_weights", "inception_weights")
    }
    config_values = config.to_dict()
    records: dict[str, StageRecord] = {}
    reused: list[str] = []
    reused_rows: dict[str, list[str]] = {}  # stage -> rows an earlier run computed
    try:
        for stage in STAGES:
            extra = {"data": fingerprint, "software": software} | {
                field: digest for field, digest in input_files.items() if field in stage.config
            }
            inputs = {name: records[name] for name in stage.reads if name in records}
            key = stage_key(stage.name, config_values, stage.config, inputs, extra)
            previous = load_record(store, stage.name) if stage.cached else None
            why = check_record(store, previous, key) if stage.cached else "always runs"
            if why is None and previous is not None:
                records[stage.name] = previous
                run.timings[stage.name] = 0.0
                run.recorded[stage.name] = previous.seconds
                reused.append(stage.name)
                log.info("[%s] reused from an earlier run (same settings and inputs)", stage.name)
                continue
            if previous is not None:
                log.info("[%s] running again: %s", stage.name, why)
            # progress so far on disk: what a killed run shows, and what the report reads
            manifest["reused_stages"] = reused
            manifest["reused_rows"] = reused_rows
            store.write_json("config.json", manifest)
            store.written.clear()
            run.rows = _row_cache(store, stage, config_values, inputs, extra)
            start = time.perf_counter()
            stage.run(run)
            seconds = time.perf_counter() - start
            run.timings[stage.name] = round(seconds, 3)
            if run.rows.reused:
                reused_rows[stage.name] = run.rows.reused
                log.info("[%s] reused rows: %s", stage.name, ", ".join(run.rows.reused))
            run.rows = None
            if stage.cached:
                records[stage.name] = save_record(store, stage.name, key, seconds)
    except BaseException as exc:
        manifest.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        store.write_json("config.json", manifest)
        raise
    run.timings["total"] = round(time.perf_counter() - total, 3)
    manifest.update(
        status="complete",
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        reused_stages=reused,
        reused_rows=reused_rows,
        # what each stage cost when it was computed, in this run or the one it was reused from
        stage_seconds={stage.name: run.seconds(stage.name) for stage in STAGES},
    )
    store.write_json("config.json", manifest)
    if reused:
        log.info("reused %d of %d stages: %s", len(reused), len(STAGES), ", ".join(reused))
    return store.root


def _row_cache(
    store: RunDir,
    stage: Stage,
    config_values: dict[str, Any],
    inputs: dict[str, StageRecord],
    extra: dict[str, Any],
) -> RowCache:
    """The stage's per-row cache: its key without the K/generator lists and the row_reads
    stages, whose files each row names instead."""
    base_key = stage_key(
        stage.name,
        config_values,
        tuple(f for f in stage.config if f not in ROW_EXEMPT_FIELDS),
        {name: record for name, record in inputs.items() if name not in stage.row_reads},
        extra,
    )
    upstream = {
        file: digest
        for name in stage.row_reads
        if name in inputs
        for file, digest in inputs[name].files.items()
    }
    return RowCache(store, stage.name, base_key, upstream)


KEYED_PACKAGES = ("synthaudit", "torch", "pytorchcv", "piq", "numpy")


def data_fingerprint(data: ImageDataset) -> str:
    """sha256 of the loaded images and labels: a changed data root invalidates every stage."""
    import hashlib

    digest = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
    digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise AuditError("--device cuda was requested but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise AuditError(f"--device must be auto, cpu or cuda, got {device!r}")
    return device
