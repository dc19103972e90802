"""HCR bounds: exact against the Cramer-Rao limit for a linear feature map; positive and growing
with the noise for a real (tiny) ResNet20."""

import pytest
import torch

from attacks.hcr import batched_lsqr, hcr_bound, hcr_bounds
from attacks.penultimate import dct_matrix, split_classifier, to_dct
from audit.core.bn import frozen


def linear_world(seed=0, m=24, side=4):
    g = torch.Generator().manual_seed(seed)
    n = side * side
    a = torch.randn(m, n, generator=g, dtype=torch.float64)
    theta = torch.randn(1, 1, side, side, generator=g, dtype=torch.float64)
    return a, theta, lambda x: x.flatten(1) @ a.T


def test_lsqr_solves_least_squares_per_system():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 10, 6, generator=g, dtype=torch.float64)  # 3 overdetermined systems
    b = torch.randn(3, 10, generator=g, dtype=torch.float64)
    x = batched_lsqr(
        lambda v: torch.einsum("bmn,bn->bm", a, v),
        lambda u: torch.einsum("bmn,bm->bn", a, u),
        b,
        torch.Size([6]),
        iters=12,
    )
    expected = torch.linalg.lstsq(a, b[..., None]).solution[..., 0]
    torch.testing.assert_close(x, expected, rtol=1e-8, atol=1e-8)


def test_linear_map_bound_tends_to_cramer_rao():
    a, theta, f = linear_world()
    sigma = 0.7
    # the DCT-coefficient Cramer-Rao bound: sigma^2 [D (A^T A)^-1 D^T]_kk
    d = torch.kron(dct_matrix(4), dct_matrix(4)).double()
    cr = sigma**2 * torch.diagonal(d @ torch.linalg.inv(a.T @ a) @ d.T)
    k = 5
    best_eps = (torch.linalg.inv(a.T @ a) @ d.T[:, k]).view(1, 1, 4, 4)  # the CR-optimal eps
    errors = []
    for size in (1.0, 0.1, 0.01):
        eps = best_eps * size / float(f(best_eps).norm())  # ||A eps|| = size
        bound = hcr_bound(f, theta, eps, sigma)[0, k]
        assert bound <= cr[k] * (1 + 1e-9)  # HCR never exceeds CR for a linear map
        errors.append(abs(float(bound / cr[k]) - 1))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 1e-3  # about u / 2, u = 2e-4


def test_inverse_iteration_finds_the_weakest_direction():
    _, theta, _ = linear_world(seed=2)
    g = torch.Generator().manual_seed(3)  # singular values 1..3 and one weak direction at 0.2
    u, _ = torch.linalg.qr(torch.randn(24, 16, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))
    singular = torch.cat([torch.linspace(3, 1, 15, dtype=torch.float64), torch.tensor([0.2])])
    a = u @ torch.diag(singular) @ v.T

    def f(x):
        return x.flatten(1) @ a.T

    sigma = 0.5
    result = hcr_bounds(
        f,
        theta,
        [sigma],
        generator=torch.Generator().manual_seed(0),
        rounds=4,
        lsqr_iters=40,
        perturbation=1e-3,
    )
    _, s, vh = torch.linalg.svd(a)
    v_min = vh[-1]
    cosine = abs(float(result.directions.flatten().double() @ v_min))
    assert cosine > 0.999
    # along v_min the bound per coefficient is sigma^2 (D v)_k^2 / s_min^2 (Cramer-Rao limit)
    expected = sigma * to_dct(v_min.view(1, 1, 4, 4)).flatten().abs() / s[-1]
    torch.testing.assert_close(result.std_bounds[sigma][0], expected, rtol=2e-3, atol=1e-9)


def test_real_model_bounds_are_positive_and_grow_with_noise(teacher, digits):
    feature_map, _ = split_classifier(teacher)
    theta = teacher.normalize(torch.from_numpy(digits.images[:2]).permute(0, 3, 1, 2) / 255.0)
    with frozen(teacher):
        result = hcr_bounds(
            feature_map,
            theta,
            [0.1, 1.0],
            generator=torch.Generator().manual_seed(0),
            draws=2,
            rounds=2,
            lsqr_iters=10,
        )
    low, high = result.std_bounds[0.1], result.std_bounds[1.0]
    assert low.shape == (2, 256) and torch.isfinite(high).all()
    assert (low > 0).float().mean() > 0.9
    assert float(high.median()) > 3 * float(low.median())  # grows with sigma (about 10x)


def test_sigma_must_be_positive():
    _, theta, f = linear_world()
    with pytest.raises(ValueError, match="sigma > 0"):
        hcr_bounds(f, theta, [0.0], generator=torch.Generator())
