"""DPD-fVAE's partition of the private records among simulated clients: each record's client is
a function of that record alone (a SHA-256 of the seed, its label and its pixels), so adding or
removing a record moves no other record: what makes the per-client guarantees compose in
parallel (generators/dpd_fvae.py)."""

from __future__ import annotations

import hashlib

import numpy as np

from audit.core.errors import AuditError
from audit.core.seeding import numpy_rng


def record_uniforms(images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """A number in [0, 1) per record from the record's own bytes (its pixels and label) and the
    seed alone: adding or removing one record moves no other record's number.

    Args:
        images: (N, H, W, C) uint8 images, pixels in [0, 255] (their raw bytes are hashed).
        labels: (N,) int labels.
        seed: the run seed, the hash's salt.

    Returns:
        (N,) float64 in [0, 1), from the first 8 bytes of each record's SHA-256.
    """
    salt = str(seed).encode()
    out = np.empty(len(labels))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        digest = hashlib.sha256(salt + int(label).to_bytes(8, "little") + image.tobytes()).digest()
        out[i] = int.from_bytes(digest[:8], "little") / 2.0**64
    return out


def partition(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    clients: int,
    how: str,
    alpha: float,
    num_classes: int,
    seed: int,
) -> list[np.ndarray]:
    """Record indices per client. Each record's client is a function of that record alone (and
    the seed), so parallel composition across clients holds record by record: IID, uniform over
    the clients; Dirichlet non-IID, from its class's client shares, Dirichlet(alpha) draws made
    from the seed before any record is seen. Every client must hold a record (an AuditError
    otherwise): none is dropped, so client numbers never depend on the data.

    Args:
        images: (N, H, W, C) uint8 private images, pixels in [0, 255].
        labels: (N,) int labels in [0, num_classes).
        clients: the number of clients, >= 1.
        how: "iid" or "dirichlet" (the `fed` section's partition).
        alpha: the Dirichlet concentration, > 0 (read only with "dirichlet").
        num_classes: the number of classes, >= 1.
        seed: the run seed (the records' hashes and the Dirichlet draws).

    Returns:
        One (n_c,) int64 array of record indices per client, clients arrays, each non-empty;
        together they hold every record once.

    Raises:
        AuditError: how is neither "iid" nor "dirichlet", or a client holds no record.
    """
    u = record_uniforms(images, labels, seed)
    if how == "iid":
        owner = np.minimum((u * clients).astype(np.int64), clients - 1)
    elif how == "dirichlet":
        shares = numpy_rng(seed, "dpd-fvae", "dirichlet").dirichlet(
            np.full(clients, alpha), size=num_classes
        )
        edges = np.cumsum(shares, axis=1)
        owner = np.array(
            [
                min(int(np.searchsorted(edges[y], v, side="right")), clients - 1)
                for y, v in zip(labels, u, strict=True)
            ],
            dtype=np.int64,
        )
    else:
        raise AuditError(f"client partition must be iid or dirichlet, got {how!r}")
    parts = [np.flatnonzero(owner == c) for c in range(clients)]
    empty = [c for c, p in enumerate(parts) if len(p) == 0]
    if empty:
        # no client is dropped: dropping one would renumber the others, so one record could
        # move every other client's encoder, randomness and canaries
        raise AuditError(
            f"DPD-fVAE client {empty[0]} of {clients} holds none of the {len(labels)} private "
            "records (each record's client is drawn on its own): use fewer --clients"
            + (" or a larger Dirichlet alpha" if how == "dirichlet" else "")
        )
    return [p.astype(np.int64) for p in parts]
