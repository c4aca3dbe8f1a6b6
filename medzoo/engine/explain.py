"""Grad-CAM overlays (MONAI's GradCAM on the last residual stage) written as PNG files."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.visualize import GradCAM  # noqa: E402


def gradcam_maps(model: torch.nn.Module, batch: torch.Tensor, layer: str = "layer4") -> np.ndarray:
    """Class-activation maps (B x H x W, 0..1) for each sample's predicted class."""
    cam = GradCAM(nn_module=model, target_layers=layer)
    with torch.enable_grad():
        inputs = batch.detach().to(next(model.parameters()).device, dtype=torch.float32, copy=True)
        maps = cam(inputs.requires_grad_(True))
    return maps[:, 0].detach().cpu().numpy()


def save_overlay(image: torch.Tensor, heat: np.ndarray, title: str, path: Path) -> Path:
    """The model's input (first channel, or the middle slice of a volume) under the heat map."""
    base = image[0].detach().float().cpu().numpy()
    if base.ndim == 3:  # a volume: show its middle slice
        base, heat = base[base.shape[0] // 2], heat[heat.shape[0] // 2]
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(base, cmap="gray")
    ax.imshow(heat, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def overlay_name(name: str) -> str:
    """A safe PNG file name for an input's display name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name.strip("/"))[-120:] + ".png"
