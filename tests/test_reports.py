import numpy as np

from reports.gallery import GalleryEntry, image_grid, png_data_uri
from reports.html import render_report
from reports.results import BASE_COLUMNS, results_csv

EVIL = '<script>alert("x")</script>'


def fixture_results():
    row = dict.fromkeys(BASE_COLUMNS, 0.5)
    row.update(generator="bn_match", k=10, n_synthetic=4)
    real = {**row, "generator": "real", "k": None}
    return {
        "config_digest": "abc",
        "dataset": {
            "name": EVIL,
            "image_size": 16,
            "channels": 1,
            "classes": [EVIL],
            "n_members": 4,
            "n_nonmembers": 2,
            "n_test": 2,
        },
        "target": {
            "model": "resnet20_cifar10",
            "source": EVIL,
            "acc_members": 1.0,
            "acc_nonmembers": 0.9,
            "acc_test": 0.9,
        },
        "notes": {"real_row": EVIL, "attack_columns": EVIL, "mia_model_attacks": EVIL},
        "rows": [row, real],
        "attacks": {
            family: {"attacks": {EVIL: {EVIL: metrics}}, "n_candidates_each": 5}
            for family in ("mia_release", "mia_model")
        },
    }


metrics = {
    "auc": 0.5,
    "auc_ci": [0.4, 0.6],
    "tpr_at_0.1%fpr": 0.0,
    "tpr_at_1%fpr": 0.01,
    "balanced_accuracy": 0.5,
    "eps_lower": 0.0,
}


def test_every_string_is_escaped():
    gallery = [
        GalleryEntry(EVIL, EVIL, png_data_uri(image_grid([np.zeros((2, 16, 16, 1), np.uint8)])))
    ]
    html = render_report(fixture_results(), gallery, redacted=False)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "This report shows private images" in html
    assert "Against the target and the retrained models" in html
    redacted = render_report(fixture_results(), gallery, redacted=True)
    assert "redacted" in redacted and "This report shows private images" not in redacted


def test_csv_keeps_base_columns_first_and_blank_k_for_real():
    text = results_csv(fixture_results()["rows"])
    header, _first, real = text.splitlines()[:3]
    assert header.split(",")[: len(BASE_COLUMNS)] == list(BASE_COLUMNS)
    assert real.startswith("real,,")


def test_grid_layout():
    rows = [np.full((3, 16, 16, 1), 7, np.uint8), np.full((2, 16, 16, 3), 9, np.uint8)]
    grid = image_grid(rows, scale=2, pad=1)
    assert grid.shape == (2 * 33 + 1, 3 * 33 + 1, 3)
    assert grid[1, 1, 0] == 7 and grid[34, 1, 0] == 9 and grid[34, 67, 0] == 255
