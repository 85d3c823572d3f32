# SPDX-License-Identifier: Apache-2.0
"""PyTorch eager peers for frugal's N:M sparsity on the shapes of bench_sparse.cu: magnitude
prune of an fp32 weight to N:M (topk of |w| over each window, gather, cast to bf16) and one
SR-STE step with SGD momentum (mask from |w|, g + decay (1 - mask) w, momentum update, new mask,
flips, compressed values). Writes JSON with the median time and the bytes frugal counts."""
import argparse
import json

import torch

from peer_timing import median_us


def prune(w, n, m):
    windows = w.view(w.size(0), -1, m)
    idx = windows.abs().topk(n, dim=-1).indices.sort(dim=-1).values
    values = windows.gather(-1, idx).to(torch.bfloat16)
    return values, idx.to(torch.uint8)


def mask_of(w, n, m):
    windows = w.view(w.size(0), -1, m)
    idx = windows.abs().topk(n, dim=-1).indices
    return torch.zeros_like(windows, dtype=torch.bool).scatter_(-1, idx, True).view_as(w)


def srste_sgd(w, g, buf, n, m, lr=0.01, momentum=0.9, decay=2e-4):
    before = mask_of(w, n, m)
    refined = g.float() + decay * (~before) * w
    buf.mul_(momentum).add_(refined)
    w.add_(buf, alpha=-lr)
    after = mask_of(w, n, m)
    flips = (before ^ after).sum()
    values, idx = prune(w, n, m)
    return values, idx, flips


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = []
    for rows, k in ((4096, 4096), (6144, 4096), (14336, 4096), (4096, 14336)):
        w = torch.randn(rows, k, device="cuda") * 0.02
        g = (torch.randn(rows, k, device="cuda") * 1e-3).to(torch.bfloat16)
        buf = torch.zeros_like(w)
        for n, m in ((2, 4), (2, 8)):
            us = median_us(lambda x: prune(x, n, m), [w])
            moved = rows * k * 4 + rows * k * n // m * 2
            results.append({"op": "prune", "impl": "torch.eager", "n": n, "m": m, "rows": rows, "k": k, "median_us": us,
                            "GBps": moved / (us * 1e-6) / 1e9})
            print(f"prune {n}:{m} torch.eager {rows}x{k}: {us:.1f} us")
        us = median_us(lambda x: srste_sgd(x, g, buf, 2, 4), [w])
        moved = rows * k * (8 + 2 + 8) + rows * k // 2 * 2
        results.append({"op": "srste_sgd", "impl": "torch.eager", "n": 2, "m": 4, "rows": rows, "k": k, "median_us": us,
                        "GBps": moved / (us * 1e-6) / 1e9})
        print(f"srste sgd 2:4 torch.eager {rows}x{k}: {us:.1f} us")
    with open(args.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
