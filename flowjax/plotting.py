"""Figures written by the training loop, the sampler CLI and experiments (matplotlib, Agg)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)
    return path


def scatter_panels(
    reference: np.ndarray,
    samples: Mapping[str, np.ndarray],
    path: str,
    *,
    max_points: int = 5000,
    title: str | None = None,
) -> str:
    """One 2-D scatter panel for the reference data (if not ``None``) and one per entry of
    ``samples``."""
    plt = _plt()
    panels = [] if reference is None else [("data (held out)", reference)]
    panels += list(samples.items())
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    scale = reference if reference is not None else np.concatenate(list(samples.values()))
    lim = np.percentile(np.abs(scale[:, :2]), 99.5) * 1.25
    for i, (ax, (name, pts)) in enumerate(zip(axes[0], panels)):
        pts = np.asarray(pts)[:max_points]
        is_data = reference is not None and i == 0
        ax.scatter(pts[:, 0], pts[:, 1], s=1.0, alpha=0.5, color="k" if is_data else "C0")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    path = _save(fig, path)
    plt.close(fig)
    return path


def to_uint8_images(x: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] (``[N, H, W, C]``) to uint8 in [0, 255]."""
    return np.clip(np.round((np.asarray(x, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def tile_images(images: np.ndarray, ncol: int) -> np.ndarray:
    """``[N, H, W, C]`` uint8 -> one ``[rows*(H+1)-1, ncol*(W+1)-1, C]`` mosaic."""
    n, h, w, c = images.shape
    rows = -(-n // ncol)
    canvas = np.full((rows * (h + 1) - 1, ncol * (w + 1) - 1, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        canvas[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = images[i]
    return canvas


def image_rows(
    rows: Mapping[str, np.ndarray], path: str, *, ncol: int = 16, title: str | None = None
) -> str:
    """A figure with one labelled mosaic per entry (images in [-1, 1], NHWC)."""
    plt = _plt()
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(ncol * 0.45, 1.0 + 0.5 * len(rows) * 4), squeeze=False
    )
    for ax, (name, imgs) in zip(axes[:, 0], rows.items()):
        mosaic = tile_images(to_uint8_images(imgs), ncol)
        if mosaic.shape[-1] == 1:
            ax.imshow(mosaic[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(mosaic, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    path = _save(fig, path)
    plt.close(fig)
    return path
