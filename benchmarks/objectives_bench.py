"""Benchmark of rlx.objectives: time and peak memory of loss + backward per objective, and the
cost of the exact fp32 chunked entropy relative to the log-prob alone.

    python benchmarks/objectives_bench.py            # losses on 128 seqs x 256 tokens; vocab
                                                     # path on 16 x 256 x 32k (< 2 min on 2 CPUs)
    python benchmarks/objectives_bench.py --entropy-batch 128   # the full 128 x 256 x 32k
    python benchmarks/objectives_bench.py --small    # a quick run
    python benchmarks/objectives_bench.py --device cuda

The vocab-path cost is per position, so the default 16-sequence slice is extrapolated x8 to
128 x 256 in the last column; pass --entropy-batch 128 to measure it directly.

Peak memory is the memory allocated by the measured call beyond its live inputs (the
gradients it creates included): torch.cuda.max_memory_allocated on CUDA, torch's MemTracker
(every tensor storage, forward and backward) on CPU, in a separate untimed run.
Times: median and min of --repeats runs after one warm-up (min is the better estimate of the
code's own cost on a shared machine).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time

import torch

from rlx.objectives import (
    POLICY_LOSSES,
    logprobs_and_entropy,
    logprobs_from_logits,
    policy_loss,
    repo_d,
    repo_r,
)

MiB = 2 ** 20


# ----------------------------------------------------------------------------- memory
def peak_extra_bytes(fn, device, inputs):
    """Peak bytes allocated by fn() beyond its live inputs.

    CUDA: the caching allocator's max_memory_allocated. CPU: torch's MemTracker (a dispatch
    mode that follows every tensor storage, forward and backward), run separately from the
    timed calls because it slows them down.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(*inputs)
    with tracker:
        fn()
    total = tracker.get_tracker_snapshot("peak")[device]["Total"]
    live = sum(t.untyped_storage().nbytes() for t in inputs)
    return total - live


def measure(fn, device, repeats, inputs):
    """(median seconds, min seconds over `repeats` after one warm-up, peak extra bytes) of fn()."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    times = []
    for _ in range(repeats):
        _clear_grads(inputs)
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    _clear_grads(inputs)
    peak = peak_extra_bytes(fn, device, inputs)
    _clear_grads(inputs)
    return statistics.median(times), min(times), peak


def _clear_grads(inputs):
    for t in inputs:
        t.grad = None


# ----------------------------------------------------------------------------- inputs
def loss_inputs(b, t, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(t // 2, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(device)
    lp = (-3 * torch.rand(b, t, generator=g)).to(device).requires_grad_()
    old = (lp.detach() + 0.05 * torch.randn(b, t, generator=g).to(device))
    adv = torch.randn(b, generator=g).to(device)[:, None].expand(b, t).contiguous()
    ent = (2 * torch.rand(b, t, generator=g)).to(device).requires_grad_()
    return lp, old, adv, mask, ent


def objective_cases(lp, old, adv, mask, ent):
    glob = dict(global_tokens=float(mask.sum()), global_seqs=float(mask.any(-1).sum()))
    cases = {}
    for name in POLICY_LOSSES:
        cases[name] = lambda name=name: policy_loss(name, lp, old, adv, mask, **glob)[0].backward()
    cases["ppo + repo_r"] = lambda: policy_loss(
        "ppo", lp, old, repo_r(adv, lp, 0.05), mask, **glob)[0].backward()
    cases["ppo + repo_d"] = lambda: policy_loss(
        "ppo", lp, old, repo_d(adv, lp, ent, mask, 1.0)[0], mask, **glob)[0].backward()
    cases["ppo + entropy bonus + k3 KL"] = lambda: policy_loss(
        "ppo", lp, old, adv, mask, entropy=ent, entropy_coeff=1e-3, ref_logprobs=old,
        kl_loss_coef=1e-3, **glob)[0].backward()
    return cases


def make_logits(b, t, v, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    out = torch.empty(b, t, v, dtype=dtype, device=device)
    for i in range(b):  # row by row: never a full-size fp32 temporary
        out[i] = (2 * torch.randn(t, v, generator=g, device=device)).to(dtype)
    return out.requires_grad_()


def entropy_cases(logits, labels, chunk, naive_ok):
    def lp_only():
        logprobs_from_logits(logits, labels, chunk).sum().backward()

    def lp_and_entropy_monitor():
        lp, h = logprobs_and_entropy(logits, labels, chunk)
        lp.sum().backward()  # entropy logged, not differentiated

    def lp_and_entropy_grad():
        lp, h = logprobs_and_entropy(logits, labels, chunk)
        (lp.sum() + 1e-3 * h.sum()).backward()

    def naive_fp32():
        logp = torch.log_softmax(logits.float(), -1)
        lp = logp.gather(-1, labels[..., None]).squeeze(-1)
        h = -(logp.exp() * logp).sum(-1)
        (lp.sum() + 1e-3 * h.sum()).backward()

    @torch.no_grad()
    def lp_only_nograd():
        logprobs_from_logits(logits, labels, chunk)

    @torch.no_grad()
    def lp_and_entropy_nograd():
        logprobs_and_entropy(logits, labels, chunk)

    cases = {
        "log-prob (fwd+bwd)": lp_only,
        "log-prob + entropy, entropy monitored (fwd+bwd)": lp_and_entropy_monitor,
        "log-prob + entropy, both differentiated (fwd+bwd)": lp_and_entropy_grad,
        "log-prob (no grad)": lp_only_nograd,
        "log-prob + entropy (no grad)": lp_and_entropy_nograd,
    }
    if naive_ok:
        cases["unchunked fp32 log_softmax, lp + entropy (fwd+bwd)"] = naive_fp32
    return cases


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="32 seqs x 128 tokens, vocab 8k")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--seq", type=int, default=None)
    p.add_argument("--vocab", type=int, default=None)
    p.add_argument("--entropy-batch", type=int, default=None,
                   help="sequences for the vocab path (default 16, --small: 8)")
    p.add_argument("--chunk", type=int, default=1024, help="positions per fp32 chunk")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    b = args.batch or (32 if args.small else 128)
    t = args.seq or (128 if args.small else 256)
    v = args.vocab or (8192 if args.small else 32000)
    eb = args.entropy_batch or (8 if args.small else 16)
    repeats = args.repeats or (5 if args.small else 3)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# rlx objectives benchmark: torch {torch.__version__}, {where}")

    print(f"\n## loss + backward on log-probs [{b} x {t}] fp32 ({repeats} repeats)")
    print(f"{'objective':<34}{'median ms':>10}{'min ms':>10}{'peak MiB':>10}")
    lp, old, adv, mask, ent = loss_inputs(b, t, device)
    for name, fn in objective_cases(lp, old, adv, mask, ent).items():
        med, best, peak = measure(fn, device, repeats, [lp, old, adv, mask, ent])
        print(f"{name:<34}{1e3 * med:>10.2f}{1e3 * best:>10.2f}{peak / MiB:>10.2f}")
    del lp, old, adv, mask, ent

    n_pos = eb * t
    print(f"\n## vocab path: logits [{eb} x {t} x {v}] {args.dtype}, chunk {args.chunk} positions "
          f"({repeats} repeats)")
    logits = make_logits(eb, t, v, dtype, device)
    labels = torch.randint(0, v, (eb, t), device=device)
    logits_mib = logits.numel() * logits.element_size() / MiB
    print(f"logits: {logits_mib:.0f} MiB; one fp32 chunk x V: {args.chunk * v * 4 / MiB:.0f} MiB; "
          f"full fp32 copy would be {n_pos * v * 4 / MiB:.0f} MiB")
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    naive_ok = 5 * n_pos * v * 4 < 0.6 * free
    scale = b / eb
    print(f"{'path':<54}{'median ms':>10}{'min ms':>10}{'vs lp':>7}{'peak MiB':>10}"
          f"{f'min ms @{b}x{t}':>16}")
    ref = {}
    for name, fn in entropy_cases(logits, labels, args.chunk, naive_ok).items():
        med, best, peak = measure(fn, device, repeats, [logits, labels])
        kind = "nograd" if "no grad" in name else "grad"
        ref.setdefault(kind, best)
        print(f"{name:<54}{1e3 * med:>10.1f}{1e3 * best:>10.1f}{best / ref[kind]:>6.2f}x"
              f"{peak / MiB:>10.0f}{1e3 * best * scale:>16.0f}")
    if not naive_ok:
        print("(unchunked fp32 baseline skipped: it would not fit in 60% of free memory)")
    print("peak = memory allocated beyond the logits; the gradient w.r.t. the logits "
          f"({logits_mib:.0f} MiB, in the logits dtype) is part of every fwd+bwd peak")


if __name__ == "__main__":
    main()
