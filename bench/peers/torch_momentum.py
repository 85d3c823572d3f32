# SPDX-License-Identifier: Apache-2.0
"""PyTorch peer for frugal::contrast::momentum_update: torch._foreach_lerp_(keys, queries, 1 - m)
over the parameter list of a ViT (the shapes of bench_contrast.cu), fp32 and bf16, timed with
CUDA events. Writes JSON."""
import torch

from peer_timing import median_us, peer_main


def vit_tensor_sizes(blocks, width):
    sizes = [width * 3 * 16 * 16, width, width, width]
    for _ in range(blocks):
        sizes += [3 * width * width, 3 * width, width * width, width, width, width,
                  4 * width * width, 4 * width, 4 * width * width, width, width, width]
    return sizes


def collect():
    results = []
    for blocks, width in ((12, 768), (24, 1024)):
        sizes = vit_tensor_sizes(blocks, width)
        for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
            keys = [torch.randn(n, device="cuda", dtype=dtype) for n in sizes]
            queries = [torch.randn(n, device="cuda", dtype=dtype) for n in sizes]
            element = torch.finfo(dtype).bits // 8
            moved = sum(sizes) * 3 * element
            us = median_us(lambda _: torch._foreach_lerp_(keys, queries, 1 - 0.999), [None], iters=30)
            results.append({"op": "momentum_update", "impl": "torch._foreach_lerp_", "dtype": name, "blocks": blocks,
                            "width": width, "tensors": len(sizes), "median_us": us, "GBps": moved / (us * 1e-6) / 1e9})
            print(f"torch._foreach_lerp_ {name} ViT blocks={blocks} width={width}: {us:.1f} us")
    return results


if __name__ == "__main__":
    peer_main(collect)
