"""The shared training loop on a small known problem: exact resume, EMA, accumulation, non-finite guard."""

import pytest
import torch

from unsee.checkpoint import load_checkpoint, save_checkpoint
from unsee.errors import UnseeError
from unsee.trainer import TrainConfig, Trainer


class Regression:
    """Least squares on fresh random data every micro-step: the draws must come from the trainer's generator."""

    def __init__(self, blow_up_at=None):
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.true = torch.tensor([1.0, -2.0, 0.5, 3.0])
        self.blow_up_at = blow_up_at

    def parameters(self):
        return {"w": self.w}

    def loss(self, step, micro, g):
        x = torch.randn(8, 4, generator=g)
        y = x @ self.true + 0.01 * torch.randn(8, generator=g)
        loss = ((x @ self.w - y) ** 2).mean()
        if self.blow_up_at is not None and step >= self.blow_up_at:
            loss = loss * float("nan")
        return loss, {"mse": float(loss)}


def _train(tmp_path, steps, **kw):
    m = Regression()
    cfg = TrainConfig(steps=steps, lr=0.05, checkpoint_every=kw.pop("checkpoint_every", 3), **kw)
    Trainer(m, cfg, tmp_path, progress=False).run()
    return m.w.detach().clone()


def test_it_learns(tmp_path):
    w = _train(tmp_path, 200)
    assert torch.allclose(w, torch.tensor([1.0, -2.0, 0.5, 3.0]), atol=0.05)


def test_resume_equals_an_uninterrupted_run(tmp_path):
    full = _train(tmp_path / "full", 12, accumulation=2, ema_decay=0.9)
    # "Kill" after 7 steps: checkpoint at 6, then a new process resumes to 12.
    m = Regression()
    cfg = TrainConfig(steps=12, lr=0.05, checkpoint_every=3, accumulation=2, ema_decay=0.9)
    t = Trainer(m, cfg, tmp_path / "killed", progress=False)
    t.cfg = TrainConfig(steps=7, lr=0.05, checkpoint_every=3, accumulation=2, ema_decay=0.9)
    t.run()
    resumed = _train(tmp_path / "killed", 12, accumulation=2, ema_decay=0.9)
    assert torch.equal(full, resumed)
    rows = (tmp_path / "killed" / "train_log.csv").read_text().splitlines()
    steps = [int(r.split(",")[0]) for r in rows[1:]]
    assert steps == sorted(set(steps))  # no row logged twice across the kill


def test_a_longer_run_continues_from_where_the_last_one_ended(tmp_path):
    full = _train(tmp_path / "full", 12, accumulation=2, ema_decay=0.9, checkpoint_every=5)
    _train(tmp_path / "extended", 7, accumulation=2, ema_decay=0.9, checkpoint_every=5)
    _, meta = load_checkpoint(tmp_path / "extended" / "checkpoint", restore_rng=False)
    assert meta["step"] == 7  # the end is kept, not only step 5
    assert torch.equal(full, _train(tmp_path / "extended", 12, accumulation=2, ema_decay=0.9, checkpoint_every=5))


def test_a_setting_added_since_a_run_resumes_it_at_its_default_and_refuses_another(tmp_path):
    """A checkpoint written before a setting existed ran at that setting's default: a rerun at the default resumes,
    one that changes it is refused."""
    import dataclasses

    from unsee.trainer import run_settings

    @dataclasses.dataclass
    class Old:
        lr: float = 0.05

    @dataclasses.dataclass
    class New(Old):
        targets: tuple[str, ...] = ("a", "b")

    def run(out, settings, steps):
        Trainer(
            Regression(),
            TrainConfig(steps=steps, lr=0.05, checkpoint_every=2),
            out,
            progress=False,
            settings=settings,
        ).run()

    for out in (tmp_path / "kept", tmp_path / "changed"):
        run(out, run_settings(Old()), 2)
    run(tmp_path / "kept", run_settings(New()), 4)
    assert load_checkpoint(tmp_path / "kept" / "checkpoint", restore_rng=False)[1]["step"] == 4
    with pytest.raises(UnseeError, match=r"other settings \(targets: \['a', 'b'\] there, \['c'\] now\)"):
        run(tmp_path / "changed", run_settings(New(targets=("c",))), 4)


def test_ema_tracks_and_can_stand_in(tmp_path):
    m = Regression()
    t = Trainer(m, TrainConfig(steps=30, lr=0.05, ema_decay=0.8, checkpoint_every=0), tmp_path, progress=False)
    t.run()
    assert not torch.equal(t.ema["w"], m.w.detach())
    with t.ema_weights():
        assert torch.equal(m.w.detach(), t.ema["w"])
    assert not torch.equal(m.w.detach(), t.ema["w"])  # restored


def test_non_finite_loss_stops_with_a_message_and_keeps_the_checkpoint(tmp_path):
    m = Regression(blow_up_at=5)
    t = Trainer(m, TrainConfig(steps=10, lr=0.05, checkpoint_every=2), tmp_path, progress=False)
    with pytest.raises(UnseeError, match="loss became nan at step 5.*last good checkpoint"):
        t.run()
    tensors, meta = load_checkpoint(tmp_path / "checkpoint", restore_rng=False)
    assert meta["step"] == 4 and torch.isfinite(tensors["param.w"]).all()


def test_bad_config_is_refused():
    with pytest.raises(UnseeError, match="--steps must be >= 1"):
        TrainConfig(steps=0)
    with pytest.raises(UnseeError, match="--ema-decay"):
        TrainConfig(ema_decay=1.5)


def test_checkpoint_round_trips_optimizer_state(tmp_path):
    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=0.1)
    p.grad = torch.ones_like(p)
    opt.step()
    save_checkpoint(tmp_path / "c", {"p": p}, optimizer=opt, meta={"step": 1})
    q = torch.nn.Parameter(torch.zeros(3, 2))
    opt2 = torch.optim.AdamW([q], lr=0.5)
    tensors, meta = load_checkpoint(tmp_path / "c", optimizer=opt2)
    assert torch.equal(tensors["p"], p.detach()) and meta["step"] == 1
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s2["param_groups"][0]["lr"] == 0.1
    assert all(torch.equal(s1["state"][0][k], s2["state"][0][k]) for k in ("exp_avg", "exp_avg_sq"))
    assert not list(tmp_path.glob(".c.*"))  # no temp folder left
