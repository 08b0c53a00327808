#!/usr/bin/env python3
"""Parity fixtures for `forge train-distill`'s losses (tests/fixtures/kd_losses.json, read by the unit test
`train::distill::tests::losses_match_torch`).

For random student logits, teacher logits and the teacher's top-k (some positions with fewer entries, one
with none), every loss (forward KL, reverse KL, generalised JSD at beta 0, 0.3, 1, total variation) under
every teacher form (dense: the full distribution, as online distillation; sparse top-k with the `renorm`
and `bucket` tail rules, as offline), at temperatures 1 and 2, with a cross-entropy weight: the per-position
loss and the gradient of their sum with respect to the student's logits. Computed in float64 by PyTorch,
the dense JSD after TRL's `GKDTrainer.generalized_jsd_loss` (copied below), the sparse rules written out
position by position over the listed tokens only (no padding trick), so that forge's batched padding is
what is checked.

    pip install torch   # 2.x, CPU
    python3 scripts/kd_fixtures.py
"""

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
N, V = 7, 13


def generalized_jsd_loss(student_logits, teacher_logits, beta=0.5, temperature=1.0):
    """TRL's GKDTrainer.generalized_jsd_loss (trl 0.2x), per position (no reduction)."""
    student_logits = student_logits / temperature
    teacher_logits = teacher_logits / temperature
    student_log_probs = F.log_softmax(student_logits, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits, dim=-1)
    return jsd_of_log_probs(student_log_probs, teacher_log_probs, beta)


def jsd_of_log_probs(student_log_probs, teacher_log_probs, beta):
    if beta == 0:
        jsd = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True)
    elif beta == 1:
        jsd = F.kl_div(teacher_log_probs, student_log_probs, reduction="none", log_target=True)
    else:
        beta = torch.tensor(beta, dtype=student_log_probs.dtype)
        mixture_log_probs = torch.logsumexp(
            torch.stack([student_log_probs + torch.log(1 - beta), teacher_log_probs + torch.log(beta)]), dim=0
        )
        kl_teacher = F.kl_div(mixture_log_probs, teacher_log_probs, reduction="none", log_target=True)
        kl_student = F.kl_div(mixture_log_probs, student_log_probs, reduction="none", log_target=True)
        jsd = beta * kl_teacher + (1 - beta) * kl_student
    return jsd.sum(-1)


def divergence(loss, beta, s, t):
    """s, t: log-probabilities over one support, [m] or [n, m]."""
    if loss == "fkl":
        return jsd_of_log_probs(s, t, 0.0)
    if loss == "rkl":
        return jsd_of_log_probs(s, t, 1.0)
    if loss == "jsd":
        return jsd_of_log_probs(s, t, beta)
    if loss == "tvd":
        return 0.5 * (t.exp() - s.exp()).abs().sum(-1)
    raise ValueError(loss)


def sparse_pair(tail, temperature, z, ids, lps):
    """One position: student logits z [V], the teacher's listed ids and log-probabilities."""
    ids = torch.tensor(ids)
    lps = torch.tensor(lps, dtype=torch.float64)
    if tail == "renorm":
        s = F.log_softmax(z[ids] / temperature, -1)
        t = F.log_softmax(lps / temperature, -1)
        return s, t

    def with_tail(top):
        rest = torch.clamp(1 - top.exp().sum(), min=1e-10).log()
        return F.log_softmax(torch.cat([top, rest.view(1)]) / temperature, -1)

    return with_tail(F.log_softmax(z, -1)[ids]), with_tail(lps)


def main():
    gen = torch.Generator().manual_seed(7)
    student = (torch.randn(N, V, generator=gen) * 2).to(torch.float32).to(torch.float64)
    teacher = (torch.randn(N, V, generator=gen) * 2.5).to(torch.float32).to(torch.float64)
    targets = torch.randint(0, V, (N,), generator=gen)
    # the teacher's top-k as generate writes it: log-probabilities at temperature 1, most likely first
    t_logp = F.log_softmax(teacher, -1)
    ks = [5, 5, 3, 5, 0, 1, 4]  # fewer entries at some positions; none at position 4
    tops = []
    for i, k in enumerate(ks):
        order = torch.argsort(t_logp[i], descending=True)[:k]
        tops.append([[int(j), float(t_logp[i, j].to(torch.float32))] for j in order])
    has = torch.tensor([1.0 if k else 0.0 for k in ks], dtype=torch.float64)
    cases = []
    for mode in ["dense", "renorm", "bucket"]:
        for loss, beta in [("fkl", 0.5), ("rkl", 0.5), ("jsd", 0.0), ("jsd", 0.3), ("jsd", 1.0), ("tvd", 0.5)]:
            for temperature in [1.0, 2.0]:
                for ce_weight in [0.0, 0.25]:
                    z = student.clone().requires_grad_(True)
                    ce = -F.log_softmax(z, -1).gather(1, targets.view(-1, 1)).view(-1)
                    if mode == "dense":
                        if loss == "jsd":
                            kd = generalized_jsd_loss(z, teacher, beta, temperature)
                        else:
                            s = F.log_softmax(z / temperature, -1)
                            t = F.log_softmax(teacher / temperature, -1)
                            kd = divergence(loss, beta, s, t)
                        h = torch.ones(N, dtype=torch.float64)
                    else:
                        parts = []
                        for i in range(N):
                            if not tops[i]:
                                parts.append(torch.zeros((), dtype=torch.float64))
                                continue
                            ids = [e[0] for e in tops[i]]
                            lps = [e[1] for e in tops[i]]
                            s, t = sparse_pair(mode, temperature, z[i], ids, lps)
                            parts.append(divergence(loss, beta, s, t))
                        kd = torch.stack(parts)
                        h = has
                    per = h * ((1 - ce_weight) * kd + ce_weight * ce) + (1 - h) * ce
                    per.sum().backward()
                    cases.append(
                        {
                            "mode": mode,
                            "loss": loss,
                            "beta": beta,
                            "temperature": temperature,
                            "ce_weight": ce_weight,
                            "per_position": per.detach().tolist(),
                            "grad": z.grad.tolist(),
                        }
                    )
    out = {
        "about": "scripts/kd_fixtures.py (torch %s, float64)" % torch.__version__,
        "student_logits": student.tolist(),
        "teacher_logits": teacher.tolist(),
        "targets": targets.tolist(),
        "top": tops,
        "cases": cases,
    }
    path = ROOT / "tests" / "fixtures" / "kd_losses.json"
    path.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {len(cases)} cases to {path}")
    assert all(math.isfinite(x) for c in cases for x in c["per_position"])


if __name__ == "__main__":
    main()
