"""Grad-CAM and Grad-CAM++ at a chosen layer: the layer found by a forward pass, every empty map explained.

MONAI's `GradCAM`/`GradCAMpp` are not used, for three reasons seen in MONAI 1.6: its default post-processing maps
a map's maximum to 0 and its minimum to 1 (an inverted overlay), its class score `logits[:, class_idx]` sums the
classes of the whole batch into every sample's gradient, and its Grad-CAM++ multiplies a (B,) score into the last
spatial axis. The maps below follow Selvaraju et al. (Grad-CAM) and Chattopadhay et al. (Grad-CAM++), one class per
sample; overlays are drawn by `medzoo.engine.explain_overlay`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medzoo.close_names import unknown_name
from medzoo.errors import ConfigError

log = logging.getLogger(__name__)

METHODS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}  # explain=NAME: the label on overlays
# `explain.layer=auto` takes the deepest module whose map is at least this many cells along every spatial axis
# on which the input itself is at least this large (a ResNet-18's layer4 gives 4 x 4 at 128 px: too coarse to
# point at anything; layer3 gives 8 x 8).
MIN_MAP_SIZE = 8


@dataclass(frozen=True)
class LayerChoice:
    """The module whose output Grad-CAM weighs, and the size of its map at the input size it was chosen for."""

    name: str
    map_size: tuple[int, ...]
    input_size: tuple[int, ...]

    def describe(self) -> str:
        size, at = ("x".join(map(str, s)) for s in (self.map_size, self.input_size))
        return f"{self.name} ({size} map at {at} input)"


@dataclass
class ClassMaps:
    """Class-activation maps of one batch.

    Args:
        heat: (B, *input spatial), upsampled and scaled so that each map's peak is 1; 0 is "nothing for the class".
        raw: (B, *layer spatial): the map at the layer's resolution, after Grad-CAM's ReLU, before any scaling.
        classes: the class index explained per sample.
        empty: per sample, why its map is all zero or flat, or None for a map with something to show.
    """

    heat: np.ndarray
    raw: np.ndarray
    classes: np.ndarray
    empty: list[str | None]


def _spatial_size(output: object, sample: torch.Tensor) -> tuple[int, ...] | None:
    """The spatial size of a module's output when it is a feature map of `sample` (B, C, *spatial), else None."""
    if not isinstance(output, torch.Tensor) or output.ndim != sample.ndim or output.shape[0] != sample.shape[0]:
        return None
    size = tuple(int(s) for s in output.shape[2:])
    return size if any(s > 1 for s in size) else None  # a pooled (1 x 1) output is no map


def layer_outputs(model: torch.nn.Module, sample: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, spatial size) of each module that runs once per forward pass and returns a feature map, in the
    order the modules finish (a stage finishes after its blocks), from one forward pass over `sample`."""
    seen: dict[str, list[tuple[int, ...] | None]] = {}
    order: list[str] = []

    def hook(name: str):
        def record(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            if name not in seen:
                order.append(name)
            seen.setdefault(name, []).append(_spatial_size(output, sample))
        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in model.named_modules() if name]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(sample.to(_device(model, sample), torch.float32))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    # a module called twice (a ReLU shared inside a block) keeps only its last output in a hook: not a target
    return [(name, seen[name][0]) for name in order if len(seen[name]) == 1 and seen[name][0] is not None]


def check_layer_name(model: torch.nn.Module, layer: str) -> None:
    """ConfigError naming the closest module names unless `layer` is `auto` or a module of `model`."""
    names = [name for name, _ in model.named_modules() if name]
    if layer != "auto" and layer not in names:
        raise ConfigError(f"explain.layer={layer}: {unknown_name('layer', layer, names)}")


def _big_enough(size: tuple[int, ...], input_size: tuple[int, ...]) -> bool:
    return all(s >= MIN_MAP_SIZE for s, full in zip(size, input_size) if full >= MIN_MAP_SIZE)


def choose_layer(model: torch.nn.Module, sample: torch.Tensor, layer: str = "auto") -> LayerChoice:
    """The layer to explain at `sample`'s size (one input, 1 x C x *spatial): `layer` itself, or for "auto" the
    last block or stage (a module made of modules) to finish whose map is at least MIN_MAP_SIZE per axis, else the
    last such leaf module, else the last module with a spatial map. Blocks come first because a leaf inside one
    (a bottleneck's first norm, before its strided conv) is a half-computed feature, not what the network says."""
    check_layer_name(model, layer)
    input_size = tuple(int(s) for s in sample.shape[2:])
    outputs = layer_outputs(model, sample[:1])
    if layer != "auto":
        found = dict(outputs).get(layer)
        if found is None:
            spatial = ", ".join(name for name, _ in outputs if "." not in name) or "none"
            raise ConfigError(f"explain.layer={layer}: that module gives no spatial feature map once per forward "
                              f"pass (pooled, flat or called twice); top-level modules that do: {spatial}.")
        return LayerChoice(layer, found, input_size)
    if not outputs:
        raise ConfigError("explain.layer=auto: no module of this model returns a spatial feature map of the input "
                          "(B x C x *spatial); Grad-CAM needs one: set explain=null.")
    large = [(name, size) for name, size in outputs if _big_enough(size, input_size)]
    blocks = [(name, size) for name, size in large if next(model.get_submodule(name).children(), None) is not None]
    name, size = (blocks or large or outputs)[-1]
    return LayerChoice(name, size, input_size)


def _device(model: torch.nn.Module, batch: torch.Tensor) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else batch.device


def _weighted_sum(acti: torch.Tensor, grad: torch.Tensor, method: str) -> torch.Tensor:
    """The signed map (B, *spatial) before Grad-CAM's ReLU."""
    spatial = tuple(range(2, acti.ndim))
    if method == "gradcam":
        weights = grad.mean(spatial, keepdim=True)
    else:  # Grad-CAM++ (closed form for an exponential score; its positive per-sample factor exp(S) is left out,
        # as every map is scaled to its own peak)
        squared = grad.pow(2)
        denominator = 2 * squared + (acti * grad.pow(3)).sum(spatial, keepdim=True)
        alpha = squared / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        weights = (alpha * F.relu(grad)).sum(spatial, keepdim=True)
    return (weights * acti).sum(1)


def _why_empty(raw: torch.Tensor, signed: torch.Tensor, grad: torch.Tensor, layer: str, label: int,
               method: str) -> str | None:
    """Why one sample's map shows nothing (all zero, flat or not finite), or None."""
    other = "gradcam" if method == "gradcam++" else "gradcam++"
    fix = f"set explain.layer to an earlier module than {layer} or try explain={other}"
    if not torch.isfinite(signed).all():
        return f"the map at {layer} is not finite (NaN or inf in the activations or gradients); {fix}"
    if raw.max() <= 0:
        if grad.abs().max() == 0:
            return (f"every gradient of class {label}'s logit at {layer} is zero: this layer does not influence "
                    f"that logit for this input; {fix}")
        return (f"the gradient-weighted activations at {layer} are <= 0 everywhere (largest {signed.max():.3g}), "
                f"so Grad-CAM's ReLU leaves nothing: no evidence for class {label} at this layer; {fix}")
    if raw.numel() > 1 and raw.min() == raw.max():
        return f"the map at {layer} is flat (every cell {raw.max():.3g}): it points nowhere; {fix}"
    return None


def class_activation_maps(
    model: torch.nn.Module,
    batch: torch.Tensor,
    layer: str,
    method: str = "gradcam",
    class_idx: Sequence[int] | torch.Tensor | None = None,
    names: Sequence[str] | None = None,
) -> ClassMaps:
    """Grad-CAM (or Grad-CAM++) maps of `batch` (B x C x *spatial) at module `layer`, for each sample's
    `class_idx` (default: its predicted class). A map that shows nothing is logged as a warning that names the
    input (`names`, else its index in the batch) and says why."""
    if method not in METHODS:
        raise ConfigError(f"explain={method}: {unknown_name('explain method', str(method), METHODS)}")
    module = dict(model.named_modules())[layer]
    captured: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _inputs: object, output: object) -> object:
        captured.append(output)
        # later in-place operations (`out += residual`, ReLU(inplace=True)) then change a copy, not the map
        return output.clone() if isinstance(output, torch.Tensor) else output

    handle = module.register_forward_hook(keep)
    training = model.training
    inputs = batch.detach().to(_device(model, batch), torch.float32, copy=True).requires_grad_(True)
    try:
        model.eval()
        with torch.enable_grad():
            logits = model(inputs)
    finally:
        model.train(training)
        handle.remove()
    if len(captured) != 1 or _spatial_size(captured[0], inputs) is None:
        raise ConfigError(f"explain.layer={layer}: the module ran {len(captured)} time(s) or gave no spatial map; "
                          "name a module that runs once and returns B x C x *spatial.")
    acti = captured[0]
    labels = logits.argmax(1) if class_idx is None else torch.as_tensor(class_idx, device=logits.device).long()
    score = logits.gather(1, labels.view(-1, 1)).sum()  # one class per sample: their gradients stay apart
    grad = None
    if score.requires_grad and acti.requires_grad:
        grad = torch.autograd.grad(score, acti, allow_unused=True)[0]
    grad = torch.zeros_like(acti) if grad is None else grad
    with torch.no_grad():
        signed = _weighted_sum(acti.detach().float(), grad.float(), method)
        raw = F.relu(signed)
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[raw.ndim - 1]
        heat = F.interpolate(raw.unsqueeze(1), size=tuple(inputs.shape[2:]), mode=mode, align_corners=False)[:, 0]
        peak = heat.flatten(1).amax(1).view(-1, *[1] * (heat.ndim - 1))
        heat = torch.where(peak > 0, heat / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.zeros_like(heat))
    empty = [_why_empty(raw[i], signed[i], grad[i], layer, int(labels[i]), method) for i in range(len(raw))]
    for index, why in enumerate(empty):
        if why is not None:
            log.warning("%s map of %s shows nothing: %s", method, names[index] if names else f"sample {index}", why)
    heat = torch.nan_to_num(heat.clamp(0, 1), nan=0.0)
    return ClassMaps(heat.cpu().numpy(), raw.cpu().numpy(), labels.cpu().numpy(), empty)
