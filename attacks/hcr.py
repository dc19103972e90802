"""Hammersley-Chapman-Robbins lower bounds on reconstructing an input from noisy features.

Features a(theta) of an input theta (the normalised image) are released as a(theta) + N(0,
sigma^2 I). For any unbiased estimator theta_hat and any perturbation eps (Chaudhuri, Guo, van der
Maaten, Mahloujifar, Tygert, TMLR 2024):

    Var(theta_hat_k) >= eps_k^2 / (exp(||a(theta + eps) - a(theta)||^2 / sigma^2) - 1),

stated per coefficient k of the orthonormal DCT of theta. eps is chosen to make
||eps|| / ||a(theta + eps) - a(theta)|| large, i.e. near the smallest (non-zero) singular direction
of the Jacobian J: a few rounds of inverse iteration on J^T J, each solving min ||J eps - z|| and
then min ||J^T z - eps|| by LSQR on jvp/vjp products (eps <- (J^T J)^+ eps). Setting
z = a(theta + eps) - a(theta) instead, as a shorter description of the method reads, returns
z = J eps for a linear map and so never moves eps; the nonlinear feature change enters where it
matters, in choosing among random starts and in the bound itself. The best bound per coefficient
over the starts is kept. The length of eps is set per sigma so that the feature change is
`perturbation` x sigma; as that shrinks the bound tends to the Cramer-Rao bound along eps.

LSQR (Paige & Saunders 1982) is written out here for a batch of independent systems, so one
jvp/vjp pass serves every image at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import jvp, vjp

from attacks.penultimate import to_dct

Function = Callable[[torch.Tensor], torch.Tensor]  # (B, *input) -> (B, D)


def batched_lsqr(
    matvec: Function, rmatvec: Function, b: torch.Tensor, x_shape: torch.Size, iters: int
) -> torch.Tensor:
    """Least-squares solutions of B independent systems min ||A_i x_i - b_i|| (minimum-norm when
    underdetermined), by LSQR's bidiagonalisation with per-system scalars. b is (B, m).

    Args:
        matvec: A, per system: takes (B, *x_shape) and returns a tensor shaped like b.
        rmatvec: A^T, per system: takes a tensor shaped like b and returns (B, *x_shape).
        b: (B, m) float right-hand sides (any trailing shape works: each row is flattened for
            its norm); its dtype and device are the solution's.
        x_shape: the shape of one solution, without the batch dimension.
        iters: LSQR iterations, >= 0, all of them run (no stopping test; 0 gives zeros).

    Returns:
        (B, *x_shape) float, b's dtype and device: the iterate after `iters` steps.
    """
    tiny = torch.finfo(b.dtype).tiny

    def normalise(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        norm = v.flatten(1).norm(dim=1)
        return v / norm.clamp_min(tiny).view(-1, *[1] * (v.dim() - 1)), norm

    def bcast(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return s.view(-1, *[1] * (like.dim() - 1))

    u, beta = normalise(b)
    v, alpha = normalise(rmatvec(u))
    w = v.clone()
    x = torch.zeros((len(b), *x_shape), dtype=b.dtype, device=b.device)
    phibar, rhobar = beta, alpha
    for _ in range(iters):
        u, beta = normalise(matvec(v) - bcast(alpha, b) * u)
        v, alpha = normalise(rmatvec(u) - bcast(beta, v) * v)
        rho = torch.sqrt(rhobar**2 + beta**2).clamp_min(tiny)
        c, s = rhobar / rho, beta / rho
        theta, rhobar = s * alpha, -c * alpha
        phi, phibar = c * phibar, s * phibar
        x = x + bcast(phi / rho, w) * w
        w = v - bcast(theta / rho, w) * w
    return x


@dataclass(frozen=True)
class HCRResult:
    std_bounds: dict[float, torch.Tensor]  # sigma -> (images, coefficients) lower bounds on std
    directions: torch.Tensor  # the chosen eps per image (unit norm, input space)


def hcr_bound(
    feature_map: Function, theta: torch.Tensor, eps: torch.Tensor, sigma: float
) -> torch.Tensor:
    """The HCR variance bound per DCT coefficient for given perturbations: (B, coefficients).

    Args:
        feature_map: normalised (B, C, H, W) float -> (B, D) features (run without gradients).
        theta: (B, C, H, W) float, the images in the model's normalised input space.
        eps: (B, C, H, W) float perturbations of theta, normalised units, H == W.
        sigma: std of the Gaussian noise on each feature, > 0 (feature units).

    Returns:
        (B, C * H * W) float, theta's dtype: lower bounds >= 0 on the variance of any unbiased
        estimator of each DCT coefficient of theta (squared normalised units).
    """
    with torch.no_grad():
        change = (feature_map(theta + eps) - feature_map(theta)).flatten(1)
        exponent = (change**2).sum(dim=1) / sigma**2
        denominator = torch.expm1(exponent).clamp_min(torch.finfo(theta.dtype).tiny)
        return to_dct(eps).flatten(1) ** 2 / denominator[:, None]


def _scaled_to(
    feature_map: Function, theta: torch.Tensor, direction: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """direction scaled per image so that ||a(theta + eps) - a(theta)|| is about target: a first-
    order guess from the jvp, then two secant corrections for the curvature."""
    tangent = jvp(feature_map, (theta,), (direction,))[1]
    scale = target / tangent.flatten(1).norm(dim=1).clamp_min(1e-12)
    view = (-1, *[1] * (theta.dim() - 1))
    with torch.no_grad():
        for _ in range(2):
            eps = direction * scale.view(view)
            change = (feature_map(theta + eps) - feature_map(theta)).flatten(1).norm(dim=1)
            scale = scale * target / change.clamp_min(1e-12)
    return direction * scale.view(view)


def hcr_bounds(
    feature_map: Function,
    theta: torch.Tensor,
    sigmas: list[float],
    *,
    generator: torch.Generator,
    draws: int = 3,
    rounds: int = 3,
    lsqr_iters: int = 30,
    perturbation: float = 0.1,
) -> HCRResult:
    """Per-DCT-coefficient lower bounds on the std of any unbiased estimator of each image in
    theta (B, C, H, W, normalised), for each noise level sigma > 0.

    Args:
        feature_map: normalised (B, C, H, W) float -> (B, D) features; differentiable (jvp and
            vjp go through it).
        theta: (B, C, H, W) float images in the model's normalised input space, H == W.
        sigmas: feature noise stds, each > 0 (feature units); one bound per value.
        generator: a seeded torch Generator on theta's device, for the random starts.
        draws: random starts, >= 1; the best bound per coefficient over them is kept.
        rounds: inverse-iteration rounds per start, >= 1.
        lsqr_iters: LSQR iterations per least-squares solve, >= 1.
        perturbation: the feature change ||a(theta + eps) - a(theta)|| each eps is scaled to,
            as a multiple of sigma, > 0 (small: near the Cramer-Rao bound).

    Returns:
        std_bounds: sigma -> (B, C * H * W) float lower bounds >= 0 on the std of each DCT
        coefficient (normalised units); directions: (B, C, H, W) unit-norm eps per image, the
        start with the largest ||eps|| / feature change at the smallest sigma.

    Raises:
        ValueError: a sigma <= 0.
    """
    if any(s <= 0 for s in sigmas):
        raise ValueError("HCR bounds need sigma > 0")
    theta = theta.detach()
    features, pullback = vjp(feature_map, theta)[:2]

    def matvec(v: torch.Tensor) -> torch.Tensor:
        return jvp(feature_map, (theta,), (v,))[1].detach()

    def rmatvec(u: torch.Tensor) -> torch.Tensor:
        return pullback(u)[0].detach()

    best: dict[float, torch.Tensor] = {}
    best_direction = torch.zeros_like(theta)
    best_ratio = torch.full((len(theta),), -math.inf, device=theta.device)
    reference = min(sigmas)
    shape = theta.shape[1:]
    for _ in range(draws):
        z = torch.randn(features.shape, generator=generator, device=theta.device)
        for _ in range(rounds):
            eps = batched_lsqr(matvec, rmatvec, z, shape, lsqr_iters)  # J^+ z
            eps = eps / eps.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            z = batched_lsqr(rmatvec, matvec, eps, features.shape[1:], lsqr_iters)  # (J^T)^+ eps
        step = _scaled_to(feature_map, theta, eps, torch.full_like(best_ratio, reference))
        with torch.no_grad():
            change = (feature_map(theta + step) - features).flatten(1).norm(dim=1)
            ratio = step.flatten(1).norm(dim=1) / change.clamp_min(1e-12)
            better = ratio > best_ratio
            best_ratio = torch.where(better, ratio, best_ratio)
            best_direction[better] = eps[better]
        for sigma in sigmas:
            scaled = _scaled_to(
                feature_map, theta, eps, torch.full_like(best_ratio, perturbation * sigma)
            )
            bound = hcr_bound(feature_map, theta, scaled, sigma)
            best[sigma] = bound if sigma not in best else torch.maximum(best[sigma], bound)
    return HCRResult({s: b.sqrt() for s, b in best.items()}, best_direction)
