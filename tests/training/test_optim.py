import pytest
import torch

from cfmodel.training.optim import LeanAdamW, one_cycle


def _tables(seed: int = 0) -> list[torch.nn.Parameter]:
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(7, 3)), torch.nn.Parameter(torch.randn(5, 1))]


@pytest.mark.parametrize("steps", [1, 40])
def test_lean_adamw_makes_torchs_fused_adamw_updates(steps):
    """Same state, same updates as torch's own AdamW, under the one-cycle schedule that moves the
    learning rate and beta1 every step, with two groups of their own weight decay."""
    ours, theirs = _tables(), _tables()

    def groups(params):
        return [{"params": params[:1], "weight_decay": 0.5}, {"params": params[1:], "weight_decay": 0.01}]

    lean = LeanAdamW(groups(ours), lr=1e-2, betas=(0.9, 0.99), eps=1e-5)
    torch_adamw = torch.optim.AdamW(groups(theirs), lr=1e-2, betas=(0.9, 0.99), eps=1e-5, fused=True)
    schedules = [one_cycle(opt, 1e-2, steps) for opt in (lean, torch_adamw)]
    for _ in range(steps):
        grads = [torch.randn_like(p) for p in ours]
        for params in (ours, theirs):
            for p, g in zip(params, grads):
                p.grad = g.clone()
        lean.step()
        torch_adamw.step()
        for schedule in schedules:
            schedule.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
    for a, b in zip(ours, theirs):
        for key in ("step", "exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(lean.state[a][key], torch_adamw.state[b][key])


def test_lean_adamw_skips_parameters_without_gradients_and_refuses_sparse_ones():
    params = _tables()
    lean = LeanAdamW(params, lr=1e-2)
    params[0].grad = torch.ones_like(params[0])
    before = params[1].detach().clone()
    lean.step()
    assert torch.equal(params[1], before) and params[1] not in lean.state
    params[0].grad = params[0].grad.to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        lean.step()
