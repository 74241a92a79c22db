"""The language-model head: softmax weights over the vocabulary, full and sampled.

bilm-tf trains with `tf.nn.sampled_softmax_loss` and its defaults, reproduced here:
    LogUniformSampler      TF's `log_uniform_candidate_sampler(unique=True)`: P(k) =
                           log((k + 2) / (k + 1)) / log(V + 1) (a Zipfian prior, so the vocabulary
                           must be sorted by descending frequency), drawn without replacement
    sampled_softmax_loss   one set of negatives shared by every position of the batch, accidental
                           hits (a negative equal to the position's target) removed, each logit
                           corrected by minus the log of its expected count (`subtract_log_q`)
and evaluates with the full softmax. The sampler's RNG is a torch.Generator, saved with the
checkpoint so that a resumed run draws the same negatives.

Shapes: N positions, P the LSTM output (projection) size, V the vocabulary size, S negatives.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .data import IGNORE_INDEX
from .errors import UsageError


class LogUniformSampler:
    """Unique samples from the log-uniform distribution over [0, V), with TF's expected counts."""

    def __init__(self, vocab_size: int, seed: int = 0):
        self.vocab_size = vocab_size
        self.generator = torch.Generator().manual_seed(seed)
        self._log_range = math.log(vocab_size + 1)

    def probability(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.double()
        return (torch.log(ids + 2.0) - torch.log(ids + 1.0)) / self._log_range

    def _draw(self, n: int) -> torch.Tensor:
        u = torch.rand(n, generator=self.generator, dtype=torch.float64)
        return (torch.exp(u * self._log_range).floor().long() - 1).clamp_(0, self.vocab_size - 1)

    def sample(self, n: int) -> tuple[torch.Tensor, int]:
        """`n` distinct ids in the order first drawn, and the number of draws it took."""
        if not 0 < n <= self.vocab_size:
            raise UsageError(f"cannot draw {n} distinct negatives from a vocabulary of {self.vocab_size}")
        draws = self._draw(2 * n)
        while True:
            values, index = torch.sort(draws, stable=True)
            first = torch.ones_like(values, dtype=torch.bool)
            first[1:] = values[1:] != values[:-1]
            positions = index[first].sort().values  # where each distinct id first appears
            if len(positions) >= n:
                return draws[positions[:n]], int(positions[n - 1]) + 1
            draws = torch.cat([draws, self._draw(len(draws))])

    def expected_count(self, ids: torch.Tensor, num_tries: int) -> torch.Tensor:
        """TF's expected count of an id among `num_tries` draws: 1 - (1 - p)^tries."""
        return -torch.expm1(num_tries * torch.log1p(-self.probability(ids)))

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def sampled_softmax_loss(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                         sampled: torch.Tensor, true_expected: torch.Tensor,
                         sampled_expected: torch.Tensor) -> torch.Tensor:
    """Per-position loss (N,) of TF's `sampled_softmax_loss` (num_true 1, accidental hits removed).

    h (N, P), weight (V, P), bias (V,), targets (N,), sampled (S,) shared negatives with expected
    counts (S,), true_expected (N,) the targets' expected counts.
    """
    ids = torch.cat([targets, sampled])
    return _sampled_loss_of_rows(h, weight[ids], bias[ids], targets, sampled, true_expected, sampled_expected)


def _sampled_loss_of_rows(h: torch.Tensor, rows: torch.Tensor, row_bias: torch.Tensor, targets: torch.Tensor,
                          sampled: torch.Tensor, true_expected: torch.Tensor,
                          sampled_expected: torch.Tensor) -> torch.Tensor:
    """`sampled_softmax_loss` given the rows of the weight and bias already gathered: rows (N + S, P)
    and row_bias (N + S,) of the targets then the negatives. (Each gather's backward writes a dense
    (V, P) gradient, so the rows used are gathered once for all directions.)"""
    N = len(targets)
    true_logits = (h * rows[:N]).sum(-1) + row_bias[:N]  # (N,)
    true_logits = true_logits - torch.log(true_expected).to(true_logits.dtype)
    sampled_bias = row_bias[N:] - torch.log(sampled_expected).to(row_bias.dtype)  # (S,)
    # Accidental hits: the (position, negative) pairs where a negative is the position's target.
    sorted_ids, order = sampled.sort()
    index = torch.searchsorted(sorted_ids, targets).clamp_(max=len(sampled) - 1)
    hit_rows = (sorted_ids[index] == targets).nonzero().view(-1)
    hit_cols = order[index[hit_rows]]
    lse = _SampledLogSumExp.apply(h, rows[N:], sampled_bias, true_logits, hit_rows, hit_cols)
    return lse - true_logits


class _SampledLogSumExp(torch.autograd.Function):
    """log sum exp over each position's true logit and its S negatives' logits h W_s^T + b_s,
    hits removed: (N,).

    The (N, S) logits are the one large tensor of the sampled softmax (N = batch x unroll, S =
    8192 by default). Here they are made by one matmul, turned into probabilities in place and
    kept for the backward, which is one matmul each for h and W_s, with no other (N, S) tensor
    (autograd over cat / masked_fill / logsumexp makes several, whose passes over memory cost
    more than the matmuls; bench/train.py times the softmax part).
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, h, w_sampled, b_sampled, true_logits, hit_rows, hit_cols):
        probs = torch.addmm(b_sampled, h, w_sampled.T)  # (N, S) logits
        probs[hit_rows, hit_cols] = -math.inf
        top = torch.maximum(probs.amax(dim=1), true_logits)  # (N,)
        probs.sub_(top.unsqueeze(1)).exp_()
        p_true = torch.exp(true_logits - top)
        total = probs.sum(dim=1) + p_true
        probs.div_(total.unsqueeze(1))  # softmax over [true; negatives], the true one apart
        ctx.save_for_backward(h, w_sampled, probs, p_true / total)
        return top + torch.log(total)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        h, w_sampled, probs, p_true = ctx.saved_tensors
        grad_logits = probs.mul_(grad.unsqueeze(1))  # (N, S) in place (no new one): a second backward is refused
        return grad_logits @ w_sampled, grad_logits.T @ h, grad_logits.sum(dim=0), p_true * grad, None, None


def full_softmax_loss(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy -log softmax(h W^T + b)[target] (N,), 0 where the target is
    IGNORE_INDEX: h (N, P), weight (V, P), bias (V,), targets (N,)."""
    return _FullCrossEntropy.apply(h, weight, bias, targets)


class _FullCrossEntropy(torch.autograd.Function):
    """The full softmax's loss from h to the per-position cross-entropy, with one (N, V) tensor.

    The logits are made by one addmm, turned into probabilities in place and kept for the
    backward, which subtracts the targets' one-hot in place and is one matmul each for h and W.
    (F.linear + F.cross_entropy make three (N, V) tensors and zero-fill a fourth, whose
    elementwise passes are a large part of a small model's update.)
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, h, weight, bias, targets):
        keep = targets != IGNORE_INDEX
        safe = targets.clamp(min=0).unsqueeze(1)  # (N, 1)
        probs = torch.addmm(bias, h, weight.T)  # (N, V) logits
        target_logits = probs.gather(1, safe).squeeze(1)
        top = probs.amax(dim=1)  # (N,)
        probs.sub_(top.unsqueeze(1)).exp_()
        total = probs.sum(dim=1)
        probs.div_(total.unsqueeze(1))  # softmax
        ctx.save_for_backward(h, weight, probs, safe, keep)
        return (top + torch.log(total) - target_logits) * keep

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        h, weight, probs, safe, keep = ctx.saved_tensors
        g = (grad * keep).unsqueeze(1)  # (N, 1)
        grad_logits = probs.mul_(g)  # in place: a second backward is refused
        grad_logits.scatter_add_(1, safe, -g)  # minus the one-hot target
        return grad_logits @ weight, grad_logits.T @ h, grad_logits.sum(dim=0), None


class SoftmaxHead(nn.Module):
    """Output layer W (V, P), b (V,), initialised as bilm-tf does (normal, std 1 / sqrt(P); zero
    bias). One head serves both directions, as in the original."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(vocab_size, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    @property
    def vocab_size(self) -> int:
        return self.weight.shape[0]

    def full_loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-position cross-entropy (N,) over the whole vocabulary; 0 where targets are ignored."""
        return full_softmax_loss(h, self.weight, self.bias, targets)

    def sampled_loss(self, h: torch.Tensor, targets: torch.Tensor, sampler: LogUniformSampler,
                     n_samples: int) -> torch.Tensor:
        """Per-position sampled-softmax loss (N,); 0 where targets are ignored."""
        return self.sampled_losses(h.unsqueeze(0), targets.unsqueeze(0), sampler, n_samples)[0]

    def sampled_losses(self, h: torch.Tensor, targets: torch.Tensor, sampler: LogUniformSampler,
                       n_samples: int) -> torch.Tensor:
        """The sampled-softmax losses (D, N) of D directions, h (D, N, P), targets (D, N): each
        direction draws its own shared negatives (in order, as bilm-tf does), and the rows of all
        directions are gathered at once, so that the head's gradient is made once, not D times
        ((V, P) each: 1.6 GB for the original model's vocabulary)."""
        keep = targets != IGNORE_INDEX
        safe_targets = targets.clamp(min=0)
        draws = []
        for d in range(len(h)):
            sampled, tries = sampler.sample(n_samples)
            draws.append((sampled.to(h.device), sampler.expected_count(safe_targets[d].cpu(), tries).to(h.device),
                          sampler.expected_count(sampled, tries).to(h.device)))
        ids = torch.cat([t for d, (sampled, _, _) in enumerate(draws) for t in (safe_targets[d], sampled)])
        rows, row_bias = self.weight[ids], self.bias[ids]  # (D * (N + S), P), (D * (N + S),)
        per_direction = len(ids) // len(h)
        losses = [_sampled_loss_of_rows(h[d], rows_d, bias_d, safe_targets[d], *draws[d])
                  for d, (rows_d, bias_d) in enumerate(zip(rows.split(per_direction), row_bias.split(per_direction)))]
        stacked = torch.stack(losses)
        return stacked * keep.to(stacked.dtype)
