#!/usr/bin/env python3
"""Writes tests/fixtures/grpo_loss.json: GRPO's advantages, loss and gradient (with respect to the per-token
log-probabilities) as TRL computes them, for forge's parity test (`train::grpo`).

The reference below is TRL 1.16.0's code, copied from `trl/trainer/grpo_trainer.py` (the wheel on PyPI):
advantages from `_generate_and_score_completions` (lines 2763-2788, `multi_objective_aggregation =
"sum_then_normalize"`, `nanstd` from `trl/trainer/utils.py:1021`) and the loss from `_compute_loss` (lines
3055-3175, `importance_sampling_level = "token"`, no entropy mask, no vLLM correction, one process, no
gradient accumulation, `steps_per_generation = 1`). It is copied rather than called because `_compute_loss` is a
method of a trainer that needs a model, a dataset and accelerate; the tensors it reads are given here.

    pip install torch==2.15.0
    python3 scripts/grpo_fixtures.py
"""

import json
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "grpo_loss.json"


def nanstd(tensor, dim=None, keepdim=False):  # trl/trainer/utils.py:1021
    mean = torch.nanmean(tensor, dim=dim, keepdim=True)
    variance = torch.nanmean((tensor - mean) ** 2, dim=dim, keepdim=True)
    count = torch.sum(~torch.isnan(tensor), dim=dim, keepdim=True)
    correction = count / (count - 1)
    correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))
    variance *= correction
    std = torch.sqrt(variance)
    if keepdim:
        return std
    if dim is None:
        return std.squeeze()
    return std.squeeze(dim)


def advantages_of(rewards, num_generations, scale_rewards):  # grpo_trainer.py:2763-2788
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std_rewards = nanstd(rewards).expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return advantages


def loss_of(per_token_logps, old_per_token_logps, ref_per_token_logps, advantages, mask, beta, epsilon_low,
            epsilon_high, loss_type, max_completion_length):  # grpo_trainer.py:3055-3175
    advantages = advantages.unsqueeze(1)
    log_ratio = per_token_logps - old_per_token_logps
    log_importance_weights = log_ratio
    coef_1 = torch.exp(log_importance_weights)
    if beta != 0.0:
        per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss1 = coef_1 * advantages
    per_token_loss2 = coef_2 * advantages
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    elif loss_type == "dapo":
        normalizer = mask.sum().clamp(min=1.0)  # num_items_in_batch, one process, one accumulation step
        loss = (per_token_loss * mask).sum() / normalizer
    # metrics (grpo_trainer.py, after the loss): clipped shares over the completion tokens
    is_low_clipped = (coef_1 < 1 - epsilon_low) & (advantages < 0)
    is_high_clipped = (coef_1 > 1 + epsilon_high) & (advantages > 0)
    clip = ((is_low_clipped | is_high_clipped).float() * mask).sum() / mask.sum()
    return loss, clip


def main():
    torch.manual_seed(7)
    group, groups, width, max_completion_length = 4, 3, 7, 9
    b = group * groups
    lengths = torch.tensor([7, 3, 5, 1, 6, 7, 2, 4, 5, 5, 3, 7])
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()
    logps = (-torch.rand(b, width) * 3).double()
    old = logps + torch.randn(b, width).double() * 0.3  # ratios on both sides of the clip range
    ref = logps + torch.randn(b, width).double() * 0.5
    rewards = torch.tensor([1.0, 0.0, 0.2, 1.2, 0.0, 0.0, 1.0, 0.1, 0.5, 0.5, 0.5, 0.5], dtype=torch.float64)  # last group flat
    cases = []
    for loss_type in ["grpo", "bnpo", "dr_grpo", "dapo"]:
        for scale_rewards in ["group", "batch", "none"]:
            for beta in [0.0, 0.04]:
                for epsilon_low, epsilon_high in [(0.2, 0.2), (0.2, 0.28)]:
                    advantages = advantages_of(rewards, group, scale_rewards)
                    x = logps.clone().requires_grad_(True)
                    loss, clip = loss_of(x, old, ref, advantages, mask, beta, epsilon_low, epsilon_high, loss_type,
                                         max_completion_length)
                    loss.backward()
                    cases.append({
                        "loss_type": loss_type, "scale_rewards": scale_rewards, "beta": beta,
                        "epsilon_low": epsilon_low, "epsilon_high": epsilon_high,
                        "advantages": [round(float(a), 12) for a in advantages],
                        "loss": float(loss.detach()), "clip_fraction": float(clip),
                        "grad": [[round(float(g), 12) for g in row[:n]] for row, n in zip(x.grad, lengths)],
                    })
    cut = lambda t: [[round(float(v), 12) for v in row[:n]] for row, n in zip(t, lengths)]
    OUT.write_text(json.dumps({
        "reference": "trl 1.16.0 grpo_trainer.py _compute_loss (copied in scripts/grpo_fixtures.py)",
        "torch": torch.__version__,
        "group_size": group, "max_completion_length": max_completion_length,
        "rewards": rewards.tolist(), "logps": cut(logps), "old_logps": cut(old), "ref_logps": cut(ref),
        "cases": cases,
    }, indent=None) + "\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
