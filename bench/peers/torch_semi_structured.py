# SPDX-License-Identifier: Apache-2.0
"""PyTorch's semi-structured sparse linear (to_sparse_semi_structured, its cuSPARSELt backend when
available, else CUTLASS) on the shapes of bench_sparse.cu's sparse/linear_2of4: Y = X W^T with W
2:4-pruned, bf16, against torch's dense F.linear. Inputs are padded by PyTorch to its minimum
sizes. Writes JSON."""
import argparse
import json

import torch
import torch.nn.functional as F

from peer_timing import median_us


def prune_2of4(w):
    windows = w.view(w.size(0), -1, 4)
    idx = windows.abs().topk(2, dim=-1).indices
    mask = torch.zeros_like(windows, dtype=torch.bool).scatter_(-1, idx, True)
    return (windows * mask).view_as(w)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = []
    try:
        from torch.sparse import to_sparse_semi_structured, SparseSemiStructuredTensor
        SparseSemiStructuredTensor._FORCE_CUTLASS = False
    except ImportError as e:
        print(f"no semi-structured sparsity in this torch: {e}")
        to_sparse_semi_structured = None
    for tokens in (1, 8, 16, 128, 4096):
        for out, k in ((4096, 4096), (14336, 4096), (4096, 14336), (8192, 8192)):
            w = prune_2of4(torch.randn(out, k, device="cuda", dtype=torch.bfloat16) * 0.02)
            x = torch.randn(tokens, k, device="cuda", dtype=torch.bfloat16)
            entry = {"tokens": tokens, "out": out, "k": k}
            entry["dense_us"] = median_us(lambda a: F.linear(a, w), [x])
            if to_sparse_semi_structured is not None:
                try:
                    ws = to_sparse_semi_structured(w)
                    entry["semi_structured_us"] = median_us(lambda a: F.linear(a, ws), [x])
                    entry["backend"] = type(ws).__name__
                except Exception as e:  # shapes or dtypes the backend refuses
                    entry["error"] = str(e)[:200]
            results.append(entry)
            print(entry)
    with open(args.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
