"""The split (members, non-members, test) and the target model trained on the members."""

from __future__ import annotations

import logging

from audit.core import layout
from audit.core.config import RunConfig
from audit.core.data import ImageDataset, Split
from audit.core.errors import AuditError
from audit.core.splits import load_split_file, split_dataset, split_for_pretrained
from audit.core.training import accuracy, train_classifier
from audit.core.weights import load_weights, weights_format
from audit.engine.context import TaskContext, new_classifier
from audit.engine.costs import target_cost
from audit.engine.spec import COMPUTE, DATA, Stage

log = logging.getLogger(__name__)


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
    if not config.weights or config.split:
        return False, None
    if weights_format(config.weights) == "pytorchcv" and data.n_train is not None:
        return True, PRETRAINED_NOTE
    return False, ASSUMED_NOTE


def check_canary_room(config: RunConfig, split: Split) -> None:
    """--canaries draws from the test split (attacks/tasks/canaries.py): it must hold that many."""
    if config.canaries > len(split.test):
        raise AuditError(
            f"--canaries {config.canaries} needs as many test-split records; the split has "
            f"{len(split.test)}"
        )


def stage_split(ctx: TaskContext) -> None:
    c = ctx.config
    pretrained, note = membership_basis(c, ctx.data)
    caps = {
        "max_members": c.max_members,
        "max_nonmembers": c.max_nonmembers,
        "max_test": c.max_test,
    }
    if c.split:
        split = load_split_file(c.split, len(ctx.data.images))
    elif pretrained:
        split = split_for_pretrained(ctx.data, seed=c.seed, **caps)
    else:
        split = split_dataset(
            ctx.data,
            seed=c.seed,
            member_fraction=c.member_fraction,
            nonmember_fraction=c.nonmember_fraction,
            **caps,
        )
    check_canary_room(c, split)  # before any training, not only at the last stage
    ctx.store.write_npz(
        layout.SPLIT, members=split.members, nonmembers=split.nonmembers, test=split.test
    )
    log.info(
        "[split] %s: %d members, %d non-members, %d test images of %dx%dx%d",
        ctx.data.name,
        len(split.members),
        len(split.nonmembers),
        len(split.test),
        ctx.data.image_size,
        ctx.data.image_size,
        ctx.data.channels,
    )
    if note:
        log.warning("[split] %s", note)


def stage_target(ctx: TaskContext) -> None:
    c, data, split = ctx.config, ctx.data, ctx.split()
    model = new_classifier(ctx.config, ctx.data, "target")
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
    ctx.store.write_state_dict(layout.TARGET, model.state_dict())
    note = membership_basis(c, data)[1]
    ctx.store.write_json(
        layout.TARGET_SUMMARY, {"model": c.model, "source": source, "membership_note": note, **acc}
    )
    log.info(
        "[target] %s %s: accuracy members %.3f, non-members %.3f, test %.3f",
        c.model,
        source,
        acc["acc_members"],
        acc["acc_nonmembers"],
        acc["acc_test"],
    )


SPLIT_STAGE = Stage(
    "split",
    stage_split,
    config=(
        *(*DATA, "seed", "member_fraction", "nonmember_fraction", "max_members"),
        *("max_nonmembers", "max_test", "split", "weights"),
    ),
    device=False,
)


TARGET_STAGE = Stage(
    "target",
    stage_target,
    config=(*DATA, "model", "weights", "target", *COMPUTE),
    reads=("split",),
    cost=target_cost,
)
