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


def test_lazy_step_moves_only_the_touched_rows_as_a_dense_step_moves_them():
    """Rows touched at every step follow torch's AdamW exactly; the others never move."""
    ours, theirs = _tables(1), _tables(1)
    lean = LeanAdamW([{"params": ours, "weight_decay": 0.3}], lr=1e-2, betas=(0.9, 0.99), eps=1e-5)
    dense = torch.optim.AdamW([{"params": theirs, "weight_decay": 0.3}], lr=1e-2, betas=(0.9, 0.99), eps=1e-5)
    touched = [torch.tensor([0, 3, 6]), torch.tensor([1, 4])]
    untouched = [p.detach().clone() for p in ours]
    for _ in range(5):
        row_gradients = {}
        for p, q, rows in zip(ours, theirs, touched):
            grads = torch.randn(len(rows), p.shape[1])
            row_gradients[p] = (rows, grads)
            q.grad = torch.zeros_like(q).index_copy_(0, rows, grads)
        lean.step_rows(row_gradients)
        dense.step()
    for p, q, rows, before in zip(ours, theirs, touched, untouched):
        torch.testing.assert_close(p[rows], q[rows])
        others = torch.ones(len(p), dtype=torch.bool)
        others[rows] = False
        assert torch.equal(p[others], before[others])  # dense AdamW decays these; the lazy step leaves them
        assert not torch.equal(q[others], before[others])
