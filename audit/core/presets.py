"""The named presets: sizes and recipes that explicit flags override (audit/core/config.py's
build_config merges them)."""

from __future__ import annotations

from typing import Any

# Preset defaults; explicit flags override them. "quick" fits a 2-core CPU in minutes on digits
# (16x16 images, 100 synthetic images in one BN group); "paper" is the paper's recipe.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "k": (200, 1000),
        "n_synthetic": 100,
        "digits_image_size": 16,
        "max_members": 2000,
        "max_nonmembers": 2000,
        "max_test": 2000,
        "utility_seeds": 2,
        "real_utility_seeds": 1,
        "target": {"epochs": 40},
        "utility": {"epochs": 60},
        "bn": {"group_size": 100},
        "vae": {"epochs": 30},
        # sized for the 5-minute default run: attacks on 3 models cost about 40 s together
        "inversion": {"steps": 100, "per_class": 1, "eval_epochs": 10},
        "features": {
            "decoder_steps": 100,
            "hcr_images": 1,
            "hcr_draws": 2,
            "hcr_rounds": 2,
            "hcr_lsqr_iters": 15,
        },
    },
    # smoke: seconds, to check an install end to end; its numbers mean nothing
    "smoke": {
        "k": (2, 4),
        "n_synthetic": 20,
        "digits_image_size": 16,
        "max_members": 150,
        "max_nonmembers": 150,
        "max_test": 100,
        "max_reference": 50,
        "target": {"epochs": 2},
        "utility": {"epochs": 2},
        "bn": {"group_size": 10},
        "vae": {"epochs": 2},
        "bn_dp": {"epochs": 2, "steps": 4},
        "fed": {"rounds": 1, "local_epochs": 1},
        "inversion": {"steps": 5, "per_class": 1, "eval_epochs": 2},
        "features": {
            "decoder_steps": 5,
            "victims": 20,
            "hcr_images": 1,
            "hcr_draws": 1,
            "hcr_rounds": 1,
            "hcr_lsqr_iters": 5,
        },
    },
    "paper": {
        "k": (500, 1000, 2000),
        "n_synthetic": 10000,
        "digits_image_size": 32,
        "max_members": None,
        "max_nonmembers": None,
        "max_test": None,
        "target": {"epochs": 200},
        "utility": {"epochs": 200},
        "bn": {"group_size": 250},
        "vae": {"epochs": 100},
        "fed": {"rounds": 100},
        "inversion": {"steps": 2000, "per_class": 10, "eval_epochs": 200},
        "features": {"decoder_steps": 3000, "victims": 1000, "hcr_images": 32},
    },
}
