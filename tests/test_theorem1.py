"""Theorem 1 on exact softmax policies: take a small gradient step with each objective and
compare the measured entropy change with the prediction -eta * E_{a~pi}[A * L * pi].

Set-up (tabular softmax, float64): states s = 1..S, logits theta[s, :], every (s, a) pair is a
one-token "sequence" whose advantage is weighted by pi(a|s) (detached), so one policy_loss call
is the EXACT expected policy gradient (no sampling noise) and each state gets a full step eta.
The mean entropy over states then moves by eta * predicted_entropy_change(A, lp, H, weights=pi)
to first order, when A is a true advantage (E_pi[A] = 0); a baseline does not change the
expected step, so a transformed advantage is centred before predicting.
Clip-Cov is left out: its random token dropping changes the effective advantage.
"""

import pytest
import torch

from rlx.objectives import (
    decorrelating_beta,
    policy_loss,
    predicted_entropy_change,
    repo_d,
    repo_r,
)

LOSSES = ["reinforce", "ppo", "loop", "gspo", "cispo", "kl_cov"]


def entropy(theta):
    lp = torch.log_softmax(theta, -1)
    return -(lp.exp() * lp).sum(-1)


def policy(seed, s=1, v=6, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    theta = scale * torch.randn(s, v, generator=g, dtype=torch.float64)
    q = torch.randn(s, v, generator=g, dtype=torch.float64)
    return theta, q


def centred(a, theta):
    pi = torch.softmax(theta, -1)
    return a - (pi * a).sum(-1, keepdim=True)


def rows(theta):
    """(lp [S*V, 1], H [S*V, 1], pi weights [S*V, 1]) for one-token rows (s, a)."""
    lp = torch.log_softmax(theta, -1)
    h = entropy(theta)[:, None].expand_as(lp)
    return lp.reshape(-1, 1), h.reshape(-1, 1), lp.exp().reshape(-1, 1)


def step(theta, a, eta, name="reinforce"):
    """theta - eta * grad of the pi-weighted loss (exact expected gradient, full step per state)."""
    th = theta.clone().requires_grad_()
    lp = torch.log_softmax(th, -1).reshape(-1, 1)
    pi = lp.detach().exp()
    n = lp.numel()
    a_w = n * pi * a.reshape(-1, 1)
    loss, m = policy_loss(name, lp, lp.detach(), a_w, torch.ones_like(lp, dtype=torch.bool),
                          loss_agg_mode="token-mean")
    assert m["clipfrac"] == 0  # first step: r = 1 everywhere
    (g,) = torch.autograd.grad(loss, th)
    return theta - eta * g


def measured(theta, a, eta, name="reinforce"):
    return (entropy(step(theta, a, eta, name)) - entropy(theta)).mean()


def predicted(theta, a):
    lp, h, pi = rows(theta)
    return predicted_entropy_change(centred(a, theta).reshape(-1, 1), lp, h, pi)


@pytest.mark.parametrize("n_states", [1, 4])
@pytest.mark.parametrize("name", LOSSES)
def test_prediction_matches_measured_change(name, n_states):
    theta, q = policy(0, s=n_states)
    a = centred(q, theta)
    pred = predicted(theta, a)
    assert abs(pred) > 1e-3
    err = {}
    for eta in (1e-2, 1e-3, 1e-4):
        dh = measured(theta, a, eta, name)
        err[eta] = abs(dh - eta * pred) / abs(eta * pred)
    assert err[1e-3] < 0.05
    # first-order agreement: the relative error shrinks ~linearly with the step size
    assert err[1e-3] < err[1e-2] / 5 and err[1e-4] < err[1e-3] / 5


def test_prediction_is_the_covariance_form():
    """E_pi[A L pi] = Cov_pi(log pi, pi A) for a true advantage (E_pi L = 0)."""
    theta, q = policy(1)
    a = centred(q, theta)[0]
    p = torch.softmax(theta, -1)[0]
    cov = (p * p.log() * p * a).sum() - (p * p.log()).sum() * (p * p * a).sum()
    assert torch.allclose(predicted(theta, a[None]), -cov)


def test_sampled_token_estimate_converges_to_expectation():
    """The per-token estimate over sampled actions is unbiased for the exact expectation."""
    theta, q = policy(2, s=3)
    a = centred(q, theta)
    lp_all, h_all, _ = rows(theta)
    g = torch.Generator().manual_seed(0)
    n = 20000
    idx = torch.cat([torch.multinomial(torch.softmax(theta[s], -1), n, replacement=True, generator=g) + s * theta.shape[1]
                     for s in range(theta.shape[0])])
    lp, h, adv = lp_all[idx], h_all[idx], a.reshape(-1, 1)[idx]
    est = predicted_entropy_change(adv, lp, h, torch.ones_like(lp, dtype=torch.bool))
    terms = -(adv * (lp + h) * lp.exp())
    se = terms.std() / terms.numel() ** 0.5
    assert abs(est - predicted(theta, a)) < 4 * se


@pytest.mark.parametrize("zeta", [0.5, -0.5, 0.05])
@pytest.mark.parametrize("variant", ["signed", "positive_only"])
def test_prediction_holds_for_repo_r_advantages(zeta, variant):
    theta, q = policy(3, s=3)
    a = centred(q, theta)
    lp, _, _ = rows(theta)
    a_r = repo_r(a.reshape(-1, 1), lp, zeta, variant).reshape(a.shape)
    pred = predicted(theta, a_r)
    eta = 1e-4
    assert abs(measured(theta, a_r, eta, "ppo") - eta * pred) < 0.01 * abs(eta * pred)


def test_repo_r_moves_entropy_the_signed_way_on_a_calibrated_policy():
    """Calibrated policy (the likely answers are the rewarded ones): plain PG lowers entropy;
    REPO-R with zeta > 0 lowers it less (or raises it), zeta < 0 lowers it more."""
    theta = torch.tensor([[3.0, 2.5, 1.0, 0.0, -0.5, -1.0]], dtype=torch.float64)
    a = centred(torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0, 0.0]], dtype=torch.float64), theta)
    lp, _, _ = rows(theta)
    eta = 1e-3
    base = measured(theta, a, eta)
    assert base < 0
    up = measured(theta, repo_r(a.reshape(-1, 1), lp, 0.5).reshape(a.shape), eta)
    down = measured(theta, repo_r(a.reshape(-1, 1), lp, -0.5).reshape(a.shape), eta)
    assert down < base < up


@pytest.mark.parametrize("per_state", [True, False])
def test_decorrelating_beta_cancels_first_order_change(per_state):
    theta, q = policy(4, s=4)
    a = centred(q, theta)
    lp, h, pi = rows(theta)
    big_l = (lp + h).reshape(a.shape)
    if per_state:  # beta_s from each state's own expectation: every state's entropy is held
        beta = torch.stack([decorrelating_beta(a[s], lp.reshape(a.shape)[s], h.reshape(a.shape)[s],
                                               pi.reshape(a.shape)[s]) for s in range(a.shape[0])])[:, None]
    else:  # one batch-wide beta: the mean entropy is held
        beta = decorrelating_beta(a.reshape(-1, 1), lp, h, pi)
    a_d = a - beta * big_l
    assert torch.allclose(predicted(theta, a_d), torch.zeros((), dtype=torch.float64), atol=1e-12)
    ratio = {}
    for eta in (1e-2, 1e-3):
        base = measured(theta, a, eta)
        dh = step(theta, a_d, eta)
        d_states = entropy(dh) - entropy(theta)
        ratio[eta] = abs(d_states.mean()) / abs(base)
        if per_state:
            assert (d_states.abs() < 0.05 * abs(base)).all()
    assert ratio[1e-3] < 1e-2
    assert ratio[1e-3] < ratio[1e-2] / 5  # the remaining change is second order in eta


def test_repo_d_adds_the_predicted_beta_term():
    """A_d = A - beta L adds +eta * beta * E[pi L^2] to the change (docs/method.md, "REPO-D")."""
    theta, q = policy(5, s=3)
    # make the policy calibrated so the prediction is a decrease and beta > 0
    a = centred(theta.detach() + 0.3 * q, theta)
    lp, h, pi = rows(theta)
    a_flat = a.reshape(-1, 1)
    base_pred = predicted_entropy_change(a_flat, lp, h, pi)
    assert base_pred < 0
    a_d, beta = repo_d(a_flat, lp, h, pi, zeta=2.0)
    assert beta == pytest.approx(2.0 * float(-base_pred))
    l2 = ((pi * (lp + h) ** 2 * pi).sum() / pi.sum())
    expected = base_pred + beta * l2
    assert torch.allclose(predicted(theta, a_d.reshape(a.shape)), expected)
    eta = 1e-4
    dh = measured(theta, a_d.reshape(a.shape), eta)
    assert abs(dh - eta * expected) < 0.01 * abs(eta * expected)
    assert dh > measured(theta, a, eta)
    # no predicted decrease -> beta = 0 -> A unchanged
    a_d0, beta0 = repo_d(-a_flat, lp, h, pi, zeta=2.0)
    assert beta0 == 0 and torch.equal(a_d0, -a_flat)
