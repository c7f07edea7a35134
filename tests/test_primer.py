"""Solutions of the coding exercises of chapter 0, the PyTorch primer."""
import pytest
import torch
import torch.nn.functional as F


def test_exercise_cross_entropy_grad():
    """Exercise 1 of chapter 0: the gradient of the mean cross-entropy with respect to the logits is
    (softmax(z) - onehot(y)) / N, computed without autograd and checked against PyTorch's autograd."""
    def cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z = logits - logits.max(dim=-1, keepdim=True).values
        p = z.exp() / z.exp().sum(dim=-1, keepdim=True)
        onehot = torch.zeros_like(p)
        onehot[torch.arange(len(targets)), targets] = 1.0
        return (p - onehot) / len(targets)

    g = torch.Generator().manual_seed(0)
    for n, v, scale in [(1, 2, 1.0), (7, 10, 3.0), (64, 103, 10.0), (5, 4, 300.0)]:
        logits = (torch.randn(n, v, generator=g, dtype=torch.float64) * scale).requires_grad_()
        targets = torch.randint(0, v, (n,), generator=g)
        F.cross_entropy(logits, targets).backward()
        torch.testing.assert_close(cross_entropy_grad(logits.detach(), targets), logits.grad)
    # each row of the gradient sums to zero: probabilities and the one-hot both sum to one
    torch.testing.assert_close(logits.grad.sum(-1), torch.zeros(5, dtype=torch.float64))


def test_exercise_broadcast_shape():
    """Exercise 2 of chapter 0: the shape two shapes broadcast to, by the three rules of the chapter, checked against
    torch.broadcast_shapes and against the shape of an actual sum."""
    def broadcast_shape(a: tuple, b: tuple) -> tuple:
        n = max(len(a), len(b))
        a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)   # rule 3
        out = []
        for x, y in zip(a, b):
            if x != y and 1 not in (x, y):                                     # rule 1
                raise ValueError(f"sizes {x} and {y} do not broadcast")
            out.append(y if x == 1 else x)                                     # rule 2
        return tuple(out)

    cases = [((3, 1), (1, 4)), ((2, 1, 3), (4, 1)), ((3,), (3, 1)), ((), (2, 3)), ((5, 1, 1), (1, 0)),
             ((1,), (1,)), ((8, 1, 6, 1), (7, 1, 5))]
    for a, b in cases:
        assert broadcast_shape(a, b) == tuple(torch.broadcast_shapes(a, b))
        assert broadcast_shape(a, b) == tuple((torch.zeros(a) + torch.zeros(b)).shape)
    for a, b in [((3,), (4,)), ((2, 3), (3, 2)), ((4, 1, 2), (3, 3))]:
        with pytest.raises(ValueError):
            broadcast_shape(a, b)
        with pytest.raises(RuntimeError):
            torch.broadcast_shapes(a, b)
