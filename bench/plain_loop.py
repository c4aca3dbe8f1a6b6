"""The plain hand-written PyTorch training loop that the engine is measured against (shared by the benches)."""

from __future__ import annotations

import time

import torch


def sync(device: torch.device) -> None:
    """Wait for queued GPU work so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def plain_epoch(model: torch.nn.Module, loader, device: torch.device, dtype: torch.dtype | None,
                layout: torch.memory_format = torch.contiguous_format) -> float:
    """One epoch of forward/backward/AdamW step with autocast to `dtype` (None: fp32); returns images/s."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    sync(device)
    start = time.perf_counter()
    for images, targets in loader:
        images = images.to(device, non_blocking=True).contiguous(memory_format=layout)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = criterion(model(images), targets.to(device, non_blocking=True))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return len(loader) * loader.batch_size / (time.perf_counter() - start)
