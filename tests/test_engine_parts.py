"""Metrics, precision, schedules, checkpoints, resume state and seeded sampling."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from medzoo.engine.metrics import classification_metrics
from medzoo.engine.optim import build_optimizer, build_scheduler, parameter_groups
from medzoo.engine.precision import Precision, cpu_has_bf16
from medzoo.engine.state import load_state, rng_state, save_state, set_rng_state
from medzoo.errors import ConfigError, DataError, UnknownNameError
from medzoo.loading.samplers import SeededSampler
from medzoo.transforms.spec import TransformSpec
from medzoo.zoo import create_model
from medzoo.zoo.card import InputSpec, ModelCard
from medzoo.zoo.checkpoint import load_checkpoint, read_card, save_checkpoint
from medzoo.zoo.factory import model_from_checkpoint


def test_metrics_match_hand_computed_values():
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    labels = np.array([0, 1, 2, 1])
    m = classification_metrics(probs, labels, ["a", "b", "c"])
    assert m["accuracy"] == 0.75
    assert m["balanced_accuracy"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert m["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert m["auc"] == 1.0  # every class's true samples score it above every other sample
    # Macro one-vs-rest AUC with ties, by counting pairs (a tie counts one half):
    # a: true 0.5, 0.2 vs 0.4 0.1 0.3 0.2 0.3 -> (5 + 1.5) / 10 = 13/20
    # b: true 0.4, 0.6, 0.5 vs 0.3 0.5 0.3 0.2 -> (3 + 4 + 3.5) / 12 = 7/8
    # c: true 0.4, 0.6 vs 0.2 0.3 0.2 0.3 0.2 -> 1;  mean 101/120 (support-weighted it would be 0.8464)
    probs = np.array([[0.5, 0.3, 0.2], [0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4],
                      [0.2, 0.2, 0.6], [0.3, 0.5, 0.2]])
    labels = np.array([0, 0, 1, 1, 2, 2, 1])
    assert classification_metrics(probs, labels, ["a", "b", "c"])["auc"] == pytest.approx(101 / 120, abs=1e-12)


def test_auc_binary_and_undefined():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    assert classification_metrics(probs, np.array([0, 1, 0, 1]), ["n", "p"])["auc"] == 1.0
    assert classification_metrics(probs, np.array([0, 0, 0, 0]), ["n", "p"])["auc"] is None


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert Precision.resolve("auto", cpu).name == ("bf16" if cpu_has_bf16() else "fp32")
    assert Precision.resolve("bf16", cpu).dtype is torch.bfloat16
    assert not Precision.resolve("bf16", cpu).grad_scaler().is_enabled()
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        Precision.resolve("fp16", cpu)
    with pytest.raises(ValueError, match="trainer.precision"):
        Precision.resolve("half", cpu)


def test_the_cpu_a_figure_was_measured_on_names_its_vector_instructions(monkeypatch):
    """One model name ("AMD EPYC") covers CPUs with and without AVX-512 and native bf16, which set both the speed
    and what precision=auto picks: run.json and the bench say which one it was."""
    from medzoo.engine import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: False)
    plain = runtime.device_name(cpu)
    assert plain.endswith(f"threads, {torch.backends.cpu.get_cpu_capability()})")
    monkeypatch.setattr(runtime, "cpu_has_bf16", lambda: True)
    assert runtime.device_name(cpu) == plain[:-1] + " + bf16)"


def _lrs(sched_cfg, steps_per_epoch=10, epochs=4, lr=1.0):
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = build_scheduler(OmegaConf.create(sched_cfg), optimizer, steps_per_epoch, epochs)
    lrs = []
    for _ in range(steps_per_epoch * epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_schedule_warms_up_then_decays_to_min_ratio():
    lrs = _lrs({"name": "cosine", "warmup_epochs": 1, "min_ratio": 0.01})
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.01, abs=0.01)


def test_multistep_schedule_drops_at_half_and_three_quarters():
    lrs = _lrs({"name": "multistep", "warmup_epochs": 0, "milestones": [0.5, 0.75], "gamma": 0.1})
    assert lrs[19] == 1.0 and lrs[20] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)


def test_unknown_schedule_lists_known_names():
    with pytest.raises(UnknownNameError, match="cosine"):
        _lrs({"name": "cosin"})


def test_norm_and_bias_parameters_are_not_decayed():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    decay, no_decay = parameter_groups(model, 0.05)
    assert [p.ndim for p in decay["params"]] == [4] and len(no_decay["params"]) == 3
    optimizer = build_optimizer(OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True,
                                                  "lr": 1e-3, "weight_decay": 0.05}), model)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]


def test_checkpoint_round_trip_keeps_outputs_and_card(tmp_path):
    model = create_model("resnet10", in_chans=2, num_classes=3, stem="small").eval()
    card = ModelCard(arch="resnet10", model_kwargs={"stem": "small"}, in_chans=2, num_classes=3, spatial_dims=2,
                     classes=("x", "y", "z"), input=InputSpec(size=(32, 32)))
    path = save_checkpoint(tmp_path / "m.safetensors", model, card)
    assert not list(tmp_path.glob("*.tmp"))
    loaded, card_back = model_from_checkpoint(path)
    x = torch.randn(2, 2, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert card_back == card and read_card(path) == card


def test_truncated_or_cardless_checkpoints_are_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    card = ModelCard(arch="x", in_chans=2, num_classes=2, classes=("a", "b"))
    path = save_checkpoint(tmp_path / "m.safetensors", model, card)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match="cut.safetensors"):
        load_checkpoint(tmp_path / "cut.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(DataError, match="without a medzoo card"):
        read_card(tmp_path / "plain.safetensors")


class _RunsCode:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('x')",))


def test_pickled_files_never_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": _RunsCode()}))
    with pytest.raises(DataError):
        load_state(evil)
    with pytest.raises(DataError):
        model_from_checkpoint(evil)
    assert not (tmp_path / "PWNED").exists()


def test_resume_state_restores_tensors_and_rng(tmp_path):
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    state = {"weights": torch.arange(4.0), "rng": rng_state()}
    save_state(tmp_path / "last.pt", state)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    back = load_state(tmp_path / "last.pt")
    set_rng_state(back["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
    assert torch.equal(back["weights"], state["weights"])


def test_seeded_sampler_depends_only_on_seed_and_epoch():
    def draw(seed, epoch):
        sampler = SeededSampler(20, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert draw(0, 3) == draw(0, 3)
    assert draw(0, 3) != draw(0, 4) and draw(0, 3) != draw(1, 3)
    assert sorted(i for i, _ in draw(0, 3)) == list(range(20))
    assert len({s for _, s in draw(0, 3)}) == 20


def test_transform_targets_from_untrusted_cards_are_restricted():
    with pytest.raises(ConfigError, match="os.system"):
        TransformSpec(eval=[{"_target_": "os.system", "command": "echo hi"}])
    nested = {"_target_": "albumentations.OneOf", "transforms": [{"_target_": "os.system", "command": "echo hi"}]}
    with pytest.raises(ConfigError, match="os.system"):  # a safe wrapper must not smuggle in an unsafe step
        TransformSpec(train=[nested])
    safe = {"_target_": "albumentations.OneOf", "transforms": [{"_target_": "albumentations.HorizontalFlip"}]}
    image = np.zeros((1, 8, 8), np.uint8)
    image[:, :, :4] = 200
    flipped = TransformSpec(train=[{**safe, "p": 1.0}]).pipeline("train", seed=0)(image)
    assert flipped[0, 0, 0] == 0 and flipped[0, 0, -1] > 0


def test_lr_is_finite_for_all_schedules():
    for name, extra in (("onecycle", {"min_ratio": 0.001}), ("constant", {})):
        assert all(math.isfinite(v) and v > 0 for v in _lrs({"name": name, "warmup_epochs": 0, **extra}))


def test_backbone_learns_slower_than_the_head_when_fine_tuning():
    model = create_model("resnet10", in_chans=1, num_classes=3, stem="small")
    cfg = OmegaConf.create({"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3, "weight_decay": 0.05,
                            "backbone_lr_scale": 0.1})
    optimizer = build_optimizer(cfg, model)
    head = {id(p) for p in model.fc.parameters()}
    for group in optimizer.param_groups:
        in_head = {id(p) in head for p in group["params"]}
        assert len(in_head) == 1
        assert group["lr"] == pytest.approx(1e-3 if in_head == {True} else 1e-4)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_freeze_stops_gradients_for_named_stages():
    from medzoo.engine.optim import freeze

    model = create_model("resnet10", in_chans=1, num_classes=3, stem="small")
    count = freeze(model, ["conv1", "layer1"])
    assert count == model.conv1.weight.numel() + sum(p.numel() for p in model.layer1.parameters())
    assert not model.conv1.weight.requires_grad and model.layer2[0].conv1.weight.requires_grad
    with pytest.raises(ValueError, match="names no parameters"):
        freeze(model, ["layer9"])
