"""Regression gate: the default pipeline (BN matching and the DP-VAE at epsilon 10 on the
embedded digits, tiny settings)
must keep its leakage below the shipped thresholds. Uses the `synthaudit_gate` fixture that
the installed package registers for users' own CI (reports/pytest_plugin.py)."""

import pytest

from audit.core.config import build_config
from audit.engine.driver import execute


@pytest.fixture(scope="module")
def tiny_default_run(tmp_path_factory):
    # smoke-sized training and synthesis, but the default split, so each attack scores every
    # member (629) and non-member (629) as in the default run, and the holdout is 315 records
    out = tmp_path_factory.mktemp("regression") / "run"
    config = build_config(
        preset="smoke",
        max_members=2000,  # the quick preset's caps: digits' full 629 / 629 / 539 split
        max_nonmembers=2000,
        max_test=2000,
        device="cpu",
        out=str(out),
    )
    return execute(config)


@pytest.mark.slow
def test_default_pipeline_leaks_less_than_the_thresholds(tiny_default_run, synthaudit_gate):
    verdicts = synthaudit_gate(tiny_default_run, leakage_only=True)
    assert {v.metric for v in verdicts} == {
        "max_exact_copies",
        *("holdout_share_ssim", "holdout_share_haarpsi", "copy_count_ssim", "copy_count_haarpsi"),
        *("mia_release", "mia_model"),
        "dp_claim",  # on the DP row only, and not audited here: said, not skipped
    }
    assert {v.row for v in verdicts} == {"bn_match-k2", "bn_match-k4", "dp_vae-eps10"}
    (claim,) = [v for v in verdicts if v.metric == "dp_claim"]
    assert claim.row == "dp_vae-eps10" and claim.status == "not audited" and claim.passed


@pytest.mark.slow
def test_gate_raises_with_every_breach(tiny_default_run, synthaudit_gate, tmp_path):
    strict = tmp_path / "strict.toml"
    strict.write_text("[thresholds]\nmax_nn_ssim = 0.0\nmax_mia_auc = 0.0\n")
    with pytest.raises(AssertionError) as failure:
        synthaudit_gate(tiny_default_run, strict)
    message = str(failure.value)
    assert message.startswith("6 leakage threshold breach(es)")  # 2 limits x 3 releases
    assert message.count("\n") == 6  # the headline, then one line per breach
