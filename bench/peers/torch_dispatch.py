# SPDX-License-Identifier: Apache-2.0
"""PyTorch peers for frugal's dispatch on the shapes of bench_dispatch.cu: planning with a stable
torch.sort of the expert ids (+ bincount, cumsum; in eager mode and under torch.compile), permute
as index_select and combine as a weighted index_add_ (eager mode). Writes JSON."""
import argparse
import json

import torch

from peer_timing import median_us


def plan(ids, experts):
    flat = ids.flatten()
    order = torch.sort(flat, stable=True)[1]
    counts = torch.bincount(flat, minlength=experts)
    offsets = torch.cumsum(counts, 0)
    return order, offsets


def permute(x, order, k):
    return x.index_select(0, order // k)


def combine(y, order, weights, tokens, k):
    out = torch.zeros(tokens, y.size(1), device=y.device, dtype=torch.float32)
    out.index_add_(0, order // k, y.float() * weights.flatten()[order].unsqueeze(1))
    return out.to(y.dtype)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = []
    compiled_plan = torch.compile(plan)
    for tokens, k, experts in ((1, 8, 256), (64, 8, 256), (1024, 8, 256), (8192, 8, 256), (16384, 8, 8), (16384, 8, 256),
                               (4096, 22, 512)):
        ids = torch.stack([torch.randperm(experts, device="cuda")[:k] for _ in range(tokens)]).int()
        for mode, fn in (("eager", plan), ("compile", compiled_plan)):
            us = median_us(lambda i: fn(i, experts), [ids])
            results.append({"op": "plan", "impl": f"torch.{mode}", "tokens": tokens, "k": k, "experts": experts,
                            "median_us": us})
            print(f"plan    torch.{mode:7s} T={tokens} k={k} E={experts}: {us:.1f} us")
    for tokens, k, hidden in ((4096, 8, 7168), (2048, 2, 4096), (16384, 2, 4096)):
        ids = torch.stack([torch.randperm(64, device="cuda")[:k] for _ in range(tokens)]).long()
        order, _ = plan(ids, 64)
        x = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
        y = torch.randn(tokens * k, hidden, device="cuda", dtype=torch.bfloat16)
        w = torch.rand(tokens, k, device="cuda")
        moved = tokens * hidden * 2 + tokens * k * hidden * 2
        for op, fn in (("permute", lambda _: permute(x, order, k)), ("combine", lambda _: combine(y, order, w, tokens, k))):
            us = median_us(fn, [None])
            results.append({"op": op, "impl": "torch.eager", "tokens": tokens, "k": k, "hidden": hidden, "median_us": us,
                            "GBps": moved / (us * 1e-6) / 1e9})
            print(f"{op:8s} torch.eager T={tokens} k={k} H={hidden}: {us:.1f} us")
    with open(args.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
