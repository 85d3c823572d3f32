# SPDX-License-Identifier: Apache-2.0
"""PyTorch peers for frugal::topk: torch.topk in eager mode and under torch.compile, timed with
CUDA events on the same shapes as bench_topk.cu, inputs rotated past L2. Writes JSON."""
import torch

from peer_timing import median_us, peer_main, rotation_count


def collect():
    results = []
    compiled = torch.compile(lambda x, k: torch.topk(x, k, dim=-1, sorted=True))
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "f32")):
        for rows in (256, 16384, 65536):
            for cols in (256, 1024):
                for k in (8, 32):
                    bytes_in = rows * cols * torch.finfo(dtype).bits // 8
                    copies = rotation_count(bytes_in)
                    inputs = [torch.randn(rows, cols, device="cuda", dtype=dtype) for _ in range(copies)]
                    moved = bytes_in + rows * k * (torch.finfo(dtype).bits // 8 + 8)
                    for mode, fn in (("eager", lambda x: torch.topk(x, k, dim=-1, sorted=True)),
                                     ("compile", lambda x: compiled(x, k))):
                        us = median_us(fn, inputs)
                        results.append({"op": "topk", "impl": f"torch.{mode}", "dtype": name, "rows": rows,
                                        "cols": cols, "k": k, "median_us": us, "GBps": moved / (us * 1e-6) / 1e9})
                        print(f"torch.topk {mode:7s} {name} rows={rows} cols={cols} k={k}: {us:.1f} us")
    return results


if __name__ == "__main__":
    peer_main(collect)
