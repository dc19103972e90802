"""All-pairs SSIM with piq's definitions, sharing the per-image work (HaarPSI:
audit/core/haarpsi.py).

piq scores one pair at a time and recomputes every per-image quantity for each pair. Here each
metric splits into
* ``*_features``: everything that depends on one image only, computed once per image (SSIM's
  local moments from channel-mean-centred images, which is nearer piq's float64 value than piq's
  own float32 code; tests hold both metrics to piq within 1e-5), and
* ``*_pairwise``: the few terms that depend on both images, for a block of queries x references.

SSIM (piq.ssim, kernel 11, sigma 1.5, k1 0.01, k2 0.03, valid windows, downsampling by
round(min(H, W) / 256) as piq does): mu and sigma^2 maps are per image; the only pairwise term,
sigma_xy = sum_u w_u x[p+u] y[p+u] - mu_x mu_y, is one batched matrix product per (channel,
position) of Gaussian-weighted patches, with -mu_x mu_y folded in as an extra column.

The pairwise combinations are plain elementwise code: eager by default, or fused by torch.compile
(``compiled=True``), which changes only floating-point summation order. Fused, SSIM runs output
column by output column: the column's horizontal sums (one batched product), then the vertical
Gaussian pass inside the combination (``_ssim_column``) while those sums are still in cache, so
no (positions x pairs) map is ever stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from piq.functional import gaussian_filter

SSIM_KERNEL, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


# --------------------------------------------------------------------------- SSIM


@dataclass(frozen=True)
class SSIMFeatures:
    images: torch.Tensor  # (N, C, H, W) after piq's downsampling, minus each channel's mean
    mu: torch.Tensor  # (C*P, N) Gaussian-weighted local means at the P valid positions
    mu_centred: torch.Tensor  # (C*P, N) the same minus the channel mean taken from `images`
    var: torch.Tensor  # (C*P, N) local variances
    # once prepared as a reference block, for the eager path: (C*H*W', K, N) row windows
    windows: torch.Tensor | None = None
    # for the fused path: the same windows output column by output column, (C*W'*H, K, N), and
    # the reference side of _ssim_column's terms, (C, W', 4, H', 1, N)
    column_windows: torch.Tensor | None = None
    columns: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def take(self, start: int, stop: int) -> SSIMFeatures:
        """The images start..stop-1 of this set, for one block (prepared windows are dropped).

        Args:
            start: first image position, >= 0.
            stop: one past the last image position (clipped to len(self) as a slice is).

        Returns:
            Their features: images (n, C, H, W) and the (C*P, n) maps, n = stop - start at most.
        """
        part = slice(start, stop)
        return SSIMFeatures(
            self.images[part], self.mu[:, part], self.mu_centred[:, part], self.var[:, part]
        )

    def padded(self, n: int) -> SSIMFeatures:
        """Repeat the first image up to n (fixed block shapes: one compilation per run).

        Args:
            n: the block size to reach, in images.

        Returns:
            Features of max(n, len(self)) images (self itself when it already holds n or more);
            prepared windows are not carried over.
        """
        extra = n - len(self)
        if extra <= 0:
            return self

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.cat([t, t[:, :1].expand(-1, extra)], dim=1)

        images = torch.cat([self.images, self.images[:1].expand(extra, -1, -1, -1)])
        return SSIMFeatures(images, pad(self.mu), pad(self.mu_centred), pad(self.var))


def ssim_features(x: torch.Tensor) -> SSIMFeatures:
    """SSIM's per-image terms of float NCHW images in [0, 1], computed once per image.

    Args:
        x: (N, C, H, W) float tensor, pixels in [0, 1]; downsampled here by
            round(min(H, W) / 256) as piq does.

    Returns:
        The channel-mean-centred images (after downsampling) and their (C*P, N) local means,
        centred local means and local variances at the P valid 11 x 11 window positions.

    Raises:
        ValueError: the (downsampled) images are smaller than 11 px on a side.
    """
    factor = max(1, round(min(x.shape[-2:]) / 256))
    if factor > 1:
        x = F.avg_pool2d(x, kernel_size=factor)
    c = x.shape[1]
    if min(x.shape[-2:]) < SSIM_KERNEL:
        raise ValueError(
            f"SSIM needs images of at least {SSIM_KERNEL} px, got {tuple(x.shape[-2:])}"
        )
    kernel = _ssim_kernel(x.dtype, x.device).repeat(c, 1, 1, 1)
    mu = F.conv2d(x, kernel, groups=c)
    # piq computes var = conv(x^2) - mu^2 and sigma_xy = conv(xy) - mu_x mu_y in float32, which
    # cancels badly where a window is flat. Both are shift-invariant, so here they are computed
    # from x - a, a being each channel's mean: the same quantities, closer to their exact values.
    offset = x.mean(dim=(2, 3), keepdim=True)
    centred = x - offset
    mu_centred = mu - offset
    var = F.conv2d(centred * centred, kernel, groups=c) - mu_centred * mu_centred

    def per_position(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2).permute(1, 2, 0).reshape(-1, len(x))

    return SSIMFeatures(
        images=centred,
        mu=per_position(mu),
        mu_centred=per_position(mu_centred),
        var=per_position(var),
    )


def _ssim_kernel(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return gaussian_filter(SSIM_KERNEL, SSIM_SIGMA, device=device, dtype=dtype)[0]


class Workspace:
    """Output buffers reused across blocks of the same shape: a fresh multi-GB tensor per block
    costs more in page faults than the matrix product that fills it."""

    def __init__(self) -> None:
        self._buffers: dict[
            tuple[str, tuple[int, ...], torch.dtype, torch.device], torch.Tensor
        ] = {}

    def get(self, name: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """The buffer kept under this name and shape, allocated on first use.

        Args:
            name: the buffer's role (e.g. "rows", "local"), part of the cache key.
            shape: the buffer's shape.
            like: a tensor whose dtype and device the buffer takes (also part of the key).

        Returns:
            A tensor of `shape` holding whatever its last user wrote (uninitialised when new).
        """
        key = (name, shape, like.dtype, like.device)
        if key not in self._buffers:
            self._buffers[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return self._buffers[key]


def _row_windows(
    images: torch.Tensor, weights: torch.Tensor | None = None, *, by_column: bool = False
) -> torch.Tensor:
    """(N, C, H, W) -> (C*H*W', N, K): the K pixels right of each (channel, row, column); with
    by_column, (C*W'*H, N, K): ordered by output column, each column's H rows together."""
    windows = images.unfold(3, SSIM_KERNEL, 1)  # (N, C, H, W', K), a view
    if weights is not None:
        windows = windows * weights
    n, c, h, w_out, k = windows.shape
    order = (1, 3, 2, 0, 4) if by_column else (1, 2, 3, 0, 4)
    return windows.permute(*order).reshape(c * h * w_out, n, k)


SSIM_SLABS = 8  # the position axis is reduced in this many slabs (see _ssim_combine)


def _ssim_combine(
    local_xy: torch.Tensor,
    mu_q: torch.Tensor,
    mu_r: torch.Tensor,
    muc_q: torch.Tensor,
    muc_r: torch.Tensor,
    var_q: torch.Tensor,
    var_r: torch.Tensor,
) -> torch.Tensor:
    """local_xy = sum_u w_u (x - a)(y - b) per (channel-position, query, reference), muc = mu - a
    -> mean SSIM per pair.

    The eager path's combination (the fused path runs _ssim_column instead), summed over the
    channel-position axis in a few slabs so its temporaries shrink to a slab.
    """
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    n = local_xy.shape[0]
    size = -(-n // SSIM_SLABS)
    total = torch.zeros(local_xy.shape[1:], dtype=local_xy.dtype, device=local_xy.device)
    for start in range(0, n, size):
        part = slice(start, start + size)
        mq, mr = mu_q[part], mu_r[part]
        sigma_xy = local_xy[part] - muc_q[part] * muc_r[part]
        numerator = (2.0 * mq * mr + c1) * (2.0 * sigma_xy + c2)
        denominator = (mq * mq + mr * mr + c1) * (var_q[part] + var_r[part] + c2)
        total = total + (numerator / denominator).sum(dim=0)
    return total / n


def ssim_prepare_reference(r: SSIMFeatures, *, compiled: bool = False) -> SSIMFeatures:
    """Cut the reference block's windows (and, fused, its column terms) once, in the layout its
    path reads; every query block reuses them.

    Args:
        r: the reference block's features (from ssim_features, usually take(...).padded(...)).
        compiled: prepare for the fused (torch.compile) path; False: for the eager path.

    Returns:
        r's features with `windows` (C*H*W', K, N) set (eager), or `column_windows`
        (C*W'*H, K, N) and `columns` (C, W', 4, H', 1, N) set (fused); K = 11, W' = W - 10.
    """
    base = (r.images, r.mu, r.mu_centred, r.var)
    if not compiled:
        return SSIMFeatures(*base, windows=_row_windows(r.images).transpose(1, 2).contiguous())
    windows = _row_windows(r.images, by_column=True).transpose(1, 2).contiguous()
    return SSIMFeatures(*base, column_windows=windows, columns=_column_terms(r, query=False))


def _by_column(t: torch.Tensor, shape: torch.Size, *, query: bool) -> torch.Tensor:
    """(C*P, N) per-position maps in piq's (channel, row, column) order -> (C, W', H', N, 1) for
    queries or (C, W', H', 1, N) for references: each output column's positions together."""
    c, h, w = shape[1:]
    h_out, w_out = h - SSIM_KERNEL + 1, w - SSIM_KERNEL + 1
    by_column = t.view(c, h_out, w_out, -1).permute(0, 2, 1, 3).contiguous()
    return by_column[..., :, None] if query else by_column[..., None, :]


def _ssim_column(
    acc: torch.Tensor,
    rows: torch.Tensor,
    g2: torch.Tensor,
    q_terms: torch.Tensor,
    r_terms: torch.Tensor,
) -> torch.Tensor:
    """acc (nq, nr) plus the SSIM summed over one output column of one channel, for every pair:
    rows (H, nq, nr) are the column's horizontal sums, the vertical Gaussian pass (g2 = 2 g)
    runs here, and q_terms (4, H', nq, 1) / r_terms (4, H', 1, nr) are each image's share of the
    SSIM terms at the column's positions (_column_terms).

    torch.compile fuses it into one pass over `rows`, each plane read once and the local
    moments kept in registers: no (positions x pairs) map is ever stored (the eager path's
    banded product and combination write and re-read one)."""
    for a in range(q_terms.shape[1]):
        two_local_xy = g2[0] * rows[a]
        for tap in range(1, SSIM_KERNEL):
            two_local_xy = two_local_xy + g2[tap] * rows[a + tap]
        # 2 sigma_xy + c2 = 2 local_xy - 2 muc_q muc_r + c2; 2 mu_q mu_r + c1;
        # mu_q^2 + mu_r^2 + c1; var_q + var_r + c2, each split into per-image parts
        numerator = (two_local_xy + q_terms[0, a] * r_terms[0, a] + SSIM_K2**2) * (
            q_terms[1, a] * r_terms[1, a] + SSIM_K1**2
        )
        denominator = (q_terms[2, a] + r_terms[2, a]) * (q_terms[3, a] + r_terms[3, a])
        acc = acc + numerator / denominator
    return acc


def _column_terms(f: SSIMFeatures, *, query: bool) -> torch.Tensor:
    """Each image's parts of _ssim_column's terms, (C, W', 4, H', N, 1) for queries or
    (C, W', 4, H', 1, N) for references: -2 muc (query) / muc; 2 mu / mu; mu^2 + c1 / 2;
    var + c2 / 2."""
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    parts = (
        (-2.0 * f.mu_centred) if query else f.mu_centred,
        (2.0 * f.mu) if query else f.mu,
        f.mu * f.mu + c1 / 2,
        f.var + c2 / 2,
    )
    return torch.stack([_by_column(t, f.images.shape, query=query) for t in parts], dim=2)


def ssim_pairwise(
    q: SSIMFeatures,
    r: SSIMFeatures,
    *,
    compiled: bool = False,
    workspace: Workspace | None = None,
) -> torch.Tensor:
    """SSIM of every (query, reference) pair: (len(q), len(r)).

    The Gaussian window is separable (w_u = g_a g_b), so sum_u w_u x[p+u] y[p+u] is a horizontal
    pass (one small matrix product per channel, row and column: K-pixel row windows of x, weighted
    by g, against those of y) followed by a vertical pass (one matrix product with the banded
    matrix of g), both over all pairs of the block at once.

    Args:
        q: the query block's features (ssim_features).
        r: the reference block's features, same image shape as q; prepared by
            ssim_prepare_reference for this path, or prepared here when it is not.
        compiled: run the fused torch.compile path (column by column); False: eager.
        workspace: buffers reused across blocks; None: a fresh one for this call.

    Returns:
        (len(q), len(r)) tensor in the features' dtype: piq's mean SSIM of each pair, in [-1, 1].
    """
    ws = workspace or Workspace()
    kernel = _ssim_kernel(q.images.dtype, q.images.device)
    g = kernel.sum(dim=1)  # the 1-D Gaussian: kernel == outer(g, g)
    if compiled:
        return _ssim_by_column(q, r, g, ws)
    c, h, w = q.images.shape[1:]
    h_out, w_out = h - SSIM_KERNEL + 1, w - SSIM_KERNEL + 1
    left = _row_windows(q.images, g)  # (C*H*W', nq, K)
    right = r.windows if r.windows is not None else ssim_prepare_reference(r).windows
    assert right is not None
    rows = ws.get("rows", (left.shape[0], len(q), len(r)), left)
    torch.bmm(left, right, out=rows)  # horizontal: sum_b g_b x y along each row
    band = torch.zeros(h_out, h, dtype=g.dtype, device=g.device)
    for a in range(h_out):
        band[a, a : a + SSIM_KERNEL] = g
    local = ws.get("local", (c, h_out, w_out * len(q) * len(r)), left)
    torch.matmul(band, rows.view(c, h, -1), out=local)  # vertical: sum_a g_a (...)
    local_xy = local.view(-1, len(q), len(r))  # (C*P, nq, nr), positions in piq's order
    return _ssim_combine(
        local_xy,
        q.mu[..., None],
        r.mu[:, None, :],
        q.mu_centred[..., None],
        r.mu_centred[:, None, :],
        q.var[..., None],
        r.var[:, None, :],
    )


def _ssim_by_column(
    q: SSIMFeatures, r: SSIMFeatures, g: torch.Tensor, ws: Workspace
) -> torch.Tensor:
    """The fused path, output column by output column of each channel: the column's horizontal
    sums (one batched product over its H rows, into a buffer of H x nq x nr) and _ssim_column
    right after, while the buffer is still in cache. Nothing the size of (positions x pairs) is
    stored: on a 2-core CPU this was 35-45% faster than all horizontal sums of the block at once
    (each written to and read back from memory), block for block."""
    prepared = r if r.column_windows is not None else ssim_prepare_reference(r, compiled=True)
    right, r_terms = prepared.column_windows, prepared.columns
    assert right is not None and r_terms is not None
    c, h, w = q.images.shape[1:]
    h_out, w_out = h - SSIM_KERNEL + 1, w - SSIM_KERNEL + 1
    left = _row_windows(q.images, g, by_column=True)  # (C*W'*H, nq, K)
    sums = ws.get("column", (h, len(q), len(r)), left)
    q_terms = _column_terms(q, query=True)
    column = compiled_combination(_ssim_column)
    g2 = 2.0 * g
    total = torch.zeros(len(q), len(r), dtype=left.dtype, device=left.device)
    for channel in range(c):
        for col in range(w_out):
            rows = slice((channel * w_out + col) * h, (channel * w_out + col + 1) * h)
            torch.bmm(left[rows], right[rows], out=sums)  # horizontal: sum_b g_b x y
            at = (channel, col)
            total = column(total, sums, g2, q_terms[at], r_terms[at])
    return total / (c * h_out * w_out)


def ssim_bytes_per_pair(features: SSIMFeatures, *, compiled: bool) -> int:
    """Peak bytes one pair costs in ssim_pairwise: eager, the row buffer, the local buffer and
    the combination's temporaries; fused, one column's horizontal sums, the running sum and one
    column's result.

    Args:
        features: features of the images to be searched (only their image shape is read).
        compiled: the fused path's cost; False: the eager path's.

    Returns:
        Bytes per (query, reference) pair, >= 1, counting 4-byte (float32) values.
    """
    c, h, w = features.images.shape[1:]
    if compiled:
        return 4 * (h + 2)
    rows = c * h * (w - SSIM_KERNEL + 1)
    local = features.mu.shape[0]
    return 4 * (rows + local * 6)


# --------------------------------------------------------------------------- compilation

_COMPILED: dict[str, Callable[..., torch.Tensor]] = {}


def compiled_combination(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """torch.compile'd version of an elementwise combination, built once per process.

    Args:
        fn: an elementwise function of tensors returning a tensor (_ssim_column,
            haarpsi_combine); cached by its __name__.

    Returns:
        The compiled function (dynamic=False: specialised to each input shape), same signature.
    """
    if fn.__name__ not in _COMPILED:
        _COMPILED[fn.__name__] = torch.compile(fn, dynamic=False)
    return _COMPILED[fn.__name__]
