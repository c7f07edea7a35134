"Tests of chapter 7's scaling-law code that need no training runs, and the solutions of its coding exercises."
from __future__ import annotations

import numpy as np
import pytest

from llm_from_scratch.scaling import LossLaw

CHINCHILLA = LossLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)   # Hoffmann et al. (2022), approach 3


@pytest.mark.parametrize("C", [1e15, 1e18, 1e21, 1e24])
def test_exercise_compute_optimal_by_brute_force(C):
    """Exercise 1 of chapter 7: the closed-form compute-optimal (N*, D*) of `LossLaw.optimum` equals a brute-force
    minimisation of L(N, C / 6N) over a fine grid of log N, and spends exactly the budget."""
    N_star, D_star = CHINCHILLA.optimum(C)
    logN = np.linspace(np.log(1e3), np.log(1e15), 2_000_001)
    N = np.exp(logN)
    L = CHINCHILLA(N, C / (6 * N))
    i = int(np.argmin(L))
    assert 0 < i < len(N) - 1, "the grid brackets the minimum"
    step = logN[1] - logN[0]
    assert abs(np.log(N_star) - logN[i]) <= step
    assert np.isclose(6 * N_star * D_star, C, rtol=1e-12)
    assert CHINCHILLA(N_star, D_star) <= L[i] + 1e-12


def test_optimum_exponents_match_the_law():
    "N*(C) grows as C^a with a = beta / (alpha + beta), D*(C) as C^b with a + b = 1."
    C = np.array([1e18, 1e20])
    (N1, D1), (N2, D2) = (CHINCHILLA.optimum(c) for c in C)
    assert np.isclose(np.log(N2 / N1) / np.log(C[1] / C[0]), CHINCHILLA.a, rtol=1e-12)
    assert np.isclose(np.log(D2 / D1) / np.log(C[1] / C[0]), CHINCHILLA.b, rtol=1e-12)
    assert np.isclose(CHINCHILLA.a + CHINCHILLA.b, 1.0)
