"""Reuse of pretrained weights: another input channel count, 2D weights inflated to 3D, a new head.

Input channels (`adapt_input_conv`): the first conv's filters are resampled along the channel axis with
linear interpolation over channel position (neighbouring slices of a slice stack stay neighbours), and
the interpolation weights are rescaled so that each source channel hands on exactly all of its filter
mass. The per-filter sum over input channels is therefore preserved, which is the one property that
makes the adapted model exact on a channel-replicated input (every channel the same image x):
conv(W_tgt, [x]*C_tgt) = conv(sum_c W_tgt[:, c], x) = conv(sum_c W_src[:, c], x) = conv(W_src, [x]*C_src).
1 -> N gives timm's repeat-and-divide, 3 -> 1 gives timm's RGB sum; any count goes to any count.

2D -> 3D (`inflate_2d_to_3d`): I3D inflation, each kernel repeated along depth and divided by its depth
("mean", the default), or the 2D kernel placed at the middle depth ("centre", exact on depth-constant volumes
even at the zero-padded first and last slices).

Pure tensor math: reading files is medzoo.zoo.checkpoint's job, choosing what to read medzoo.zoo.factory's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medzoo.errors import ConfigError, DataError

__all__ = [
    "DEPTH_INITS",
    "adapt_input_conv",
    "channel_map",
    "inflate_2d_to_3d",
    "load_pretrained",
]

logger = logging.getLogger(__name__)

DEPTH_INITS = ("mean", "centre")
# Row balance is a nicety (the column sums are exact after any step); near-equal counts such as 1000 -> 999
# converge slowly but start with a ripple below 0.1%.
_BALANCE_STEPS = 500
_BALANCE_TOL = 1e-6


def _linear_map(n_from: int, n_to: int) -> torch.Tensor:
    """(n_to, n_from) matrix of PyTorch's 1D linear interpolation (align_corners=False, edges clamped)."""
    eye = torch.eye(n_from, dtype=torch.float64).unsqueeze(1)
    return F.interpolate(eye, size=n_to, mode="linear", align_corners=False)[:, 0, :].T


def channel_map(c_src: int, c_tgt: int) -> torch.Tensor:
    """(c_tgt, c_src) resampling matrix over channel position: columns sum to one, rows to c_src / c_tgt."""
    if c_tgt >= c_src:
        # Upsampling: target channels interpolate their two nearest source channels.
        weights = _linear_map(c_src, c_tgt)
    else:
        # Downsampling: each source channel splits between its two nearest target channels (the transpose of
        # interpolation), so every source channel contributes, which plain interpolation would not do (1000 -> 3).
        weights = _linear_map(c_tgt, c_src).T
    # Rescaling the interpolation weights, not the filters, keeps the sum exact for any filter and never divides
    # by a channel sum that may be near zero. Columns summing to one preserve the sum; rows summing to the same
    # share keep a filter that is constant over channels constant (plain column scaling leaves a +-2.5% ripple
    # for 28 <-> 64). Both at once: Sinkhorn scaling on the nonzero band, ending on the exact column step.
    rows, cols = weights.nonzero(as_tuple=True)
    values = weights[rows, cols]
    share = c_src / c_tgt
    for _ in range(_BALANCE_STEPS):
        values = values / torch.zeros(c_src, dtype=values.dtype).index_add_(0, cols, values)[cols]
        row_sums = torch.zeros(c_tgt, dtype=values.dtype).index_add_(0, rows, values)
        if (row_sums / share - 1).abs().max() < _BALANCE_TOL:
            break
        values = values * (share / row_sums)[rows]
    else:
        values = values / torch.zeros(c_src, dtype=values.dtype).index_add_(0, cols, values)[cols]
    balanced = torch.zeros_like(weights)
    balanced[rows, cols] = values
    return balanced


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Conv weight (out, C_src, *kernel) resampled to `in_chans` input channels, sum over channels preserved."""
    if weight.ndim < 3:
        raise ValueError(f"expected a conv weight (out, in, *kernel), got shape {tuple(weight.shape)}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigError(f"in_chans={in_chans!r} is invalid: pass an integer >= 1")
    c_src = weight.shape[1]
    if c_src == in_chans:
        return weight.clone()
    # float64 on the CPU (some accelerators lack it): a 1000-channel sum in float32 would cost the exactness.
    adapted = torch.einsum("ts,os...->ot...", channel_map(c_src, in_chans), weight.detach().to("cpu", torch.float64))
    return adapted.to(weight.device, weight.dtype)


def inflate_2d_to_3d(
    state_dict_2d: Mapping[str, torch.Tensor], model_3d: nn.Module, depth_init: str = "mean"
) -> dict[str, torch.Tensor]:
    """The 2D state dict with each conv kernel inflated to the depth of `model_3d`'s matching kernel.

    Args:
        depth_init: "mean" (I3D: repeat along depth, divide by depth) or "centre" (the 2D kernel at the
            middle depth, zeros elsewhere). Both give the 2D response on a depth-constant volume away from its
            first and last slices; only "centre" also does at those slices, where the conv's zero padding
            makes a "mean" kernel see fewer slices.
    """
    if depth_init not in DEPTH_INITS:
        raise ConfigError(f"depth_init={depth_init!r} is invalid: use one of {', '.join(DEPTH_INITS)}")
    target = model_3d.state_dict()
    inflated = dict(state_dict_2d)
    for name, weight in state_dict_2d.items():
        shape_3d = target[name].shape if name in target else None
        if weight.ndim != 4 or shape_3d is None or len(shape_3d) != 5:
            continue
        if tuple(shape_3d[3:]) != tuple(weight.shape[2:]):
            raise ConfigError(
                f"cannot inflate {name}: the 2D kernel is {tuple(weight.shape)} and the 3D model's is "
                f"{tuple(shape_3d)} (height x width differ); build the 3D model with the checkpoint's stem."
            )
        depth = shape_3d[2]
        if depth_init == "mean":
            inflated[name] = weight.unsqueeze(2).repeat(1, 1, depth, 1, 1) / depth
        else:
            kernel = weight.new_zeros(*weight.shape[:2], depth, *weight.shape[2:])
            kernel[:, :, depth // 2] = weight
            inflated[name] = kernel
    return inflated


def load_pretrained(
    model: nn.Module,
    source_state: Mapping[str, torch.Tensor],
    source_card: Any = None,
    log: logging.Logger = logger,
    *,
    source: str = "pretrained weights",
    depth_init: str = "mean",
) -> dict[str, Any]:
    """Copy `source_state` into `model`, adapting the first conv, 2D -> 3D kernels and the head; return a report.

    The first conv (`model.first_conv`) is resampled when input channels differ, 2D kernels are inflated
    for a 3D model, and the classifier (`model.classifier`) is freshly initialised when the class count
    differs. Any other difference is an error that names the layer and both shapes.

    Args:
        source_card: the checkpoint's card (a ModelCard); card-less sources (plain state dicts) are described
            by their shapes.
        source: how to name the weights in messages (e.g. the file path).
        depth_init: how 2D kernels are inflated, see `inflate_2d_to_3d`.
    """
    first_conv = getattr(model, "first_conv", None)
    classifier = getattr(model, "classifier", None)
    state = dict(source_state)
    target = model.state_dict()
    conv_key = f"{first_conv}.weight"
    if first_conv is None or conv_key not in target:
        raise ConfigError(f"{type(model).__name__} has no usable `first_conv` attribute naming its first conv; "
                          "set first_conv on the model class so pretrained weights can be adapted.")
    if conv_key not in state:
        raise ConfigError(f"{source}: no '{conv_key}' tensor: the weights do not belong to a "
                          f"{getattr(model, 'arch', type(model).__name__)} (first keys: {', '.join(list(state)[:5])}).")
    _check_card_against_state(source_card, state[conv_key], source)
    adapted: dict[str, str] = {}

    src_dims, tgt_dims = state[conv_key].ndim - 2, target[conv_key].ndim - 2
    if (src_dims, tgt_dims) == (2, 3):
        inflated = inflate_2d_to_3d(state, model, depth_init)
        count = sum(inflated[name].ndim != state[name].ndim for name in state)
        state = inflated
        adapted["inflated"] = f"2D -> 3D: {count} kernels ({depth_init} over depth)"
    elif src_dims != tgt_dims:
        fix = ("use conv='standard' for 3D kernels" if getattr(model, "conv", None) == "acs"
               else f"set spatial_dims={src_dims}")
        raise ConfigError(f"{source} holds {src_dims}D weights and the model's kernels are {tgt_dims}D; only 2D -> 3D "
                          f"is adapted: {fix}.")

    src_chans, tgt_chans = state[conv_key].shape[1], target[conv_key].shape[1]
    if src_chans != tgt_chans:
        state[conv_key] = adapt_input_conv(state[conv_key], tgt_chans)
        adapted[first_conv] = f"channels {src_chans} -> {tgt_chans} (interpolated, sum-preserving)"

    head = _drop_changed_head(state, target, classifier, adapted) if classifier is not None else None

    # A state dict saved before BatchNorm counted batches lacks the counters; the model's own (0) are right.
    kept = [name for name in target if name not in state and (
        name.endswith("num_batches_tracked") or (head is not None and name.startswith(head)))]
    missing = [name for name in target if name not in state and name not in kept]
    unexpected = [name for name in state if name not in target]
    if missing or unexpected:
        raise ConfigError(f"{source} does not match the model's layers: {len(missing)} missing "
                          f"({_some(missing)}), {len(unexpected)} unexpected ({_some(unexpected)}). "
                          "Pick the architecture and options the weights were trained with.")
    for name, tensor in state.items():
        if tensor.shape != target[name].shape:
            raise ConfigError(
                f"cannot load {name}: {source} has shape {tuple(tensor.shape)}, the model has "
                f"{tuple(target[name].shape)}. Only the first conv's channels, the classifier's classes and "
                "2D -> 3D kernels are adapted; build the model with the checkpoint's other options (e.g. stem)."
            )
    # Only now that everything fits: the head may hold earlier weights when `model` is not fresh, and a reset
    # makes "new head" literally true.
    if head is not None and f"{head}weight" in target and hasattr(model, "reset_classifier"):
        model.reset_classifier(target[f"{head}weight"].shape[0])
        target = model.state_dict()
    model.load_state_dict({**{name: target[name] for name in kept}, **state}, strict=True)

    report = {"source": source, "loaded": len(state), "adapted": adapted}
    how = "; ".join(f"{name}: {what}" for name, what in adapted.items()) or "none needed"
    log.info("loaded %d tensors from %s; adapted: %s", len(state), source, how)
    return report


def _drop_changed_head(state: dict[str, torch.Tensor], target: Mapping[str, torch.Tensor], classifier: str,
                       adapted: dict[str, str]) -> str | None:
    """Remove the source's head from `state` when its shape differs; return the head's name prefix if so."""
    prefix = f"{classifier}."
    src_keys = [name for name in state if name.startswith(prefix)]
    tgt_keys = [name for name in target if name.startswith(prefix)]
    if sorted(src_keys) == sorted(tgt_keys) and all(state[k].shape == target[k].shape for k in src_keys):
        return None
    src_classes = state[f"{prefix}weight"].shape[0] if f"{prefix}weight" in state else 0
    tgt_classes = target[f"{prefix}weight"].shape[0] if f"{prefix}weight" in target else 0
    for name in src_keys:
        del state[name]
    if tgt_keys:
        adapted[classifier] = f"new head {src_classes} -> {tgt_classes} classes"
    else:
        adapted[classifier] = f"dropped the {src_classes}-class head (the model has num_classes=0)"
    return prefix


def _check_card_against_state(card: Any, conv_weight: torch.Tensor, source: str) -> None:
    # The shapes are the truth; a card that contradicts them means a corrupted or hand-edited checkpoint.
    if card is None:
        return
    found = {"in_chans": conv_weight.shape[1], "spatial_dims": conv_weight.ndim - 2}
    for key, value in found.items():
        said = card.get(key) if isinstance(card, Mapping) else getattr(card, key, None)
        options = (card.get("model_kwargs") if isinstance(card, Mapping) else getattr(card, "model_kwargs", None)) or {}
        if key == "spatial_dims" and options.get("conv") == "acs":
            said = 2  # an ACS model's kernels are 2D whatever its spatial_dims
        if said is not None and said != value:
            raise DataError(f"{source}: the card says {key}={said} but the first conv's weights have "
                            f"{key}={value}; the checkpoint is inconsistent, re-export it.")


def _some(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "") if names else "none"
