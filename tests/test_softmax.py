"""The softmax head: TF's log-uniform sampler and sampled_softmax_loss (torch_elmo.softmax)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from torch_elmo.data import IGNORE_INDEX
from torch_elmo.softmax import LogUniformSampler, SoftmaxHead, full_softmax_loss, sampled_softmax_loss


def test_log_uniform_draws_follow_zipf():
    V = 50
    sampler = LogUniformSampler(V, seed=1)
    draws = sampler._draw(200_000)
    freq = torch.bincount(draws, minlength=V).double() / len(draws)
    p = sampler.probability(torch.arange(V))
    assert abs(p.sum().item() - 1.0) < 1e-12
    assert p[0].item() == math.log(2) / math.log(V + 1)  # P(k) = log((k + 2) / (k + 1)) / log(V + 1)
    assert torch.allclose(freq, p, atol=3e-3)


def test_samples_are_unique_with_tf_expected_counts():
    sampler = LogUniformSampler(1000, seed=0)
    ids, tries = sampler.sample(64)
    assert len(ids) == 64 == len(set(ids.tolist())) and tries >= 64
    p = sampler.probability(ids)
    assert torch.allclose(sampler.expected_count(ids, tries), 1 - (1 - p) ** tries)
    # the same generator state gives the same negatives (resume); a new draw differs
    state = sampler.state_dict()
    nxt = sampler.sample(64)[0]
    sampler.load_state_dict(state)
    assert torch.equal(sampler.sample(64)[0], nxt) and not torch.equal(nxt, ids)


def setup(N=6, V=10, P=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, P, generator=g)
    w = torch.randn(V, P, generator=g, requires_grad=True)
    b = torch.randn(V, generator=g, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)
    return h, w, b, targets


def test_all_classes_sampled_without_correction_is_the_full_softmax():
    """With every class a negative and q = 1, removing accidental hits leaves each position's
    true class once among the logits: exactly the full softmax cross-entropy."""
    h, w, b, targets = setup()
    V = w.shape[0]
    ones_n, ones_v = torch.ones(len(targets)), torch.ones(V)
    sampled = sampled_softmax_loss(h, w, b, targets, torch.arange(V), ones_n, ones_v)
    full = F.cross_entropy(h @ w.T + b, targets, reduction="none")
    assert torch.allclose(sampled, full, atol=1e-6)


def test_accidental_hits_are_removed_and_log_q_subtracted():
    h, w, b, targets = setup(N=1)
    t = int(targets[0])
    negatives = torch.tensor([k for k in range(3) if k != t][:2])
    q_true, q_neg = torch.tensor([0.5]), torch.tensor([0.25, 0.125])
    without = sampled_softmax_loss(h, w, b, targets, negatives, q_true, q_neg)
    with_hit = sampled_softmax_loss(h, w, b, targets, torch.cat([negatives, targets]), q_true,
                                    torch.cat([q_neg, torch.tensor([0.9])]))
    assert torch.allclose(without, with_hit)
    logits = torch.cat([(h @ w[targets].T + b[targets]).view(1) - math.log(0.5),
                        (h @ w[negatives].T + b[negatives]).view(-1) - torch.log(q_neg)])
    assert torch.allclose(without, torch.logsumexp(logits, 0) - logits[0])


def test_loss_and_gradients_equal_autograd_over_tf_formula():
    """The fused logits-to-loss function against autograd over TF's formula written plainly
    (concatenated logits, hits masked, logsumexp), hits on several positions included."""
    g = torch.Generator().manual_seed(3)
    N, V, P = 40, 30, 6
    h = torch.randn(N, P, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, P, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)
    sampled = torch.randperm(V, generator=g)[:12]
    q_true, q_sampled = torch.rand(N, generator=g, dtype=torch.float64), torch.rand(12, generator=g, dtype=torch.float64)

    true_logits = (h * w[targets]).sum(-1) + b[targets] - torch.log(q_true)
    sampled_logits = h @ w[sampled].T + b[sampled] - torch.log(q_sampled)
    hits = targets.unsqueeze(1) == sampled.unsqueeze(0)
    assert 3 < hits.sum() < N
    logits = torch.cat([true_logits.unsqueeze(1), sampled_logits.masked_fill(hits, -math.inf)], dim=1)
    expected = torch.logsumexp(logits, dim=1) - true_logits

    loss = sampled_softmax_loss(h, w, b, targets, sampled, q_true, q_sampled)
    torch.testing.assert_close(loss, expected, atol=1e-12, rtol=0)
    weights = torch.randn(N, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((weights * loss).sum(), (h, w, b))
    for a, e in zip(ours, torch.autograd.grad((weights * expected).sum(), (h, w, b))):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=0)


def test_negatives_are_shared_across_the_batch():
    torch.manual_seed(0)
    V, P = 200, 8
    head = SoftmaxHead(V, P)
    sampler = LogUniformSampler(V, seed=5)
    targets = torch.tensor([3, 7, 150, IGNORE_INDEX])
    state = sampler.state_dict()
    loss = head.sampled_loss(torch.randn(4, P), targets, sampler, 16)
    assert loss[3] == 0
    loss.sum().backward()
    sampler.load_state_dict(state)
    negatives, _ = sampler.sample(16)
    touched = set(head.weight.grad.abs().sum(1).nonzero().view(-1).tolist())
    assert touched <= set(negatives.tolist()) | {3, 7, 150}
    assert set(negatives.tolist()) - {3, 7, 150} <= touched  # every position saw all negatives


def test_full_loss_ignores_padding():
    head = SoftmaxHead(7, 3)
    h = torch.randn(3, 3)
    loss = head.full_loss(h, torch.tensor([1, IGNORE_INDEX, 4]))
    assert loss[1] == 0 and loss[0] > 0


def test_full_softmax_loss_and_gradients_equal_cross_entropy():
    """The fused full softmax against F.cross_entropy over F.linear, ignored targets included."""
    g = torch.Generator().manual_seed(4)
    N, V, P = 50, 37, 6
    h = torch.randn(N, P, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(V, P, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(V, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=g)
    targets[[3, 17, 40]] = IGNORE_INDEX
    expected = F.cross_entropy(F.linear(h, w, b), targets, ignore_index=IGNORE_INDEX, reduction="none")
    loss = full_softmax_loss(h, w, b, targets)
    torch.testing.assert_close(loss, expected, atol=1e-12, rtol=0)
    assert loss[[3, 17, 40]].eq(0).all()
    weights = torch.randn(N, generator=g, dtype=torch.float64)
    ours = torch.autograd.grad((weights * loss).sum(), (h, w, b))
    for a, e in zip(ours, torch.autograd.grad((weights * expected).sum(), (h, w, b))):
        torch.testing.assert_close(a, e, atol=1e-12, rtol=0)
    # float32, large logits: the same as cross_entropy to rounding
    h32, w32, b32 = (10 * t.detach().float() for t in (h, w, b))
    torch.testing.assert_close(full_softmax_loss(h32, w32, b32, targets),
                               F.cross_entropy(F.linear(h32, w32, b32), targets, ignore_index=IGNORE_INDEX,
                                               reduction="none"), atol=1e-4, rtol=1e-6)


@pytest.mark.parametrize("loss_fn", ["sampled", "full"])
def test_a_second_backward_through_the_softmax_is_refused(loss_fn):
    """Its backward reuses the saved probabilities' buffer, so a retained graph must not run twice:
    autograd's version check says so."""
    h, w, b, targets = setup()
    if loss_fn == "sampled":
        loss = sampled_softmax_loss(h.requires_grad_(), w, b, targets, torch.arange(3, 8), torch.ones(6),
                                    torch.ones(5)).sum()
    else:
        loss = full_softmax_loss(h.requires_grad_(), w, b, targets).sum()
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_directions_gathered_at_once_equal_each_on_its_own():
    """sampled_losses (both directions, one gather of the rows used) gives each direction's loss
    and the head's gradient as two sampled_loss calls drawing the same negatives."""
    torch.manual_seed(0)
    V, P, N = 300, 8, 12
    head = SoftmaxHead(V, P).double()
    h = torch.randn(2, N, P, dtype=torch.float64)
    targets = torch.randint(0, V, (2, N))
    targets[1, -2:] = IGNORE_INDEX
    sampler = LogUniformSampler(V, seed=3)
    state = sampler.state_dict()
    together = head.sampled_losses(h, targets, sampler, 40)
    (together * torch.arange(1.0, N + 1)).sum().backward()
    grads_together = [p.grad.clone() for p in head.parameters()]
    head.zero_grad()
    sampler.load_state_dict(state)
    apart = torch.stack([head.sampled_loss(h[d], targets[d], sampler, 40) for d in range(2)])
    (apart * torch.arange(1.0, N + 1)).sum().backward()
    torch.testing.assert_close(together, apart, atol=1e-12, rtol=0)
    assert (together[1, -2:] == 0).all() and (together[:, :-2] > 0).all()
    for a, b in zip(grads_together, (p.grad for p in head.parameters())):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
