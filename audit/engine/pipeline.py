"""What an audit is: the ordered list of stages.

Each stage declares the settings it depends on and the stages it reads, and is done as one or
more tasks (audit/engine/spec.py). audit/engine/build.py turns the list and a config into the
task graph; audit/engine/driver.py runs it (reusing what is valid: audit/engine/keys.py) through
an executor, one at a time here or as Ray tasks (audit/engine/scheduler.py,
audit/engine/ray_executor.py), with the same bytes either way.
"""

from __future__ import annotations

from attacks.tasks import canaries, features, inversion, mia_model, mia_release, population, refs
from audit.core import layout
from audit.engine.spec import Stage
from audit.tasks import fidelity, generate, privacy, report, split, utility

STAGES: list[Stage] = [
    split.SPLIT_STAGE,
    split.TARGET_STAGE,
    generate.STAGE,
    privacy.STAGE,
    utility.STAGE,
    refs.STAGE,
    population.STAGE,
    mia_release.STAGE,
    mia_model.STAGE,
    inversion.STAGE,
    features.STAGE,
    fidelity.STAGE,
    canaries.STAGE,  # the one-run epsilon audit, the costliest, last
]
# the report reads every stage's outputs: it runs last, every time
STAGES.append(
    Stage(
        "report",
        report.stage_report,
        reads=tuple(s.name for s in STAGES),
        cached=False,
        files=(layout.CONFIG,),  # the manifest: the command, timings, reused stages
    )
)
