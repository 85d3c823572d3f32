# SPDX-License-Identifier: Apache-2.0
"""PyTorch peers for frugal::moe::route, on the shapes of bench_route.cu: softmax top-8 of 256
and the DeepSeek-V3 gate (as in deepseek-ai/DeepSeek-V3 inference/model.py Gate.forward), in
eager mode and under torch.compile; bf16 logits, fp32 math, inputs rotated past L2, CUDA events,
median of 50. Writes JSON."""
import argparse
import json

import torch

from peer_timing import median_us, rotation_count


def softmax_top8(logits):
    scores = logits.float().softmax(dim=-1)
    weights, ids = scores.topk(8, dim=-1)
    return ids.int(), weights


def deepseek_v3(logits, bias):
    scores = logits.float().sigmoid()
    original = scores
    scores = scores + bias
    groups = scores.view(logits.size(0), 8, -1)
    group_scores = groups.topk(2, dim=-1)[0].sum(dim=-1)
    keep = group_scores.topk(4, dim=-1)[1]
    mask = torch.ones(logits.size(0), 8, dtype=torch.bool, device=logits.device).scatter_(1, keep, False)
    scores = groups.masked_fill(mask.unsqueeze(-1), float("-inf")).flatten(1)
    ids = scores.topk(8, dim=-1)[1]
    weights = original.gather(1, ids)
    weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20) * 2.5
    return ids.int(), weights


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    props = torch.cuda.get_device_properties(0)
    bias = (0.01 * torch.randn(256, device="cuda")).float()
    gates = {"softmax_top8_of_256": (softmax_top8, False), "deepseek_v3_grouped_sigmoid": (deepseek_v3, True)}
    results = []
    for name, (fn, needs_bias) in gates.items():
        compiled = torch.compile(fn)
        for tokens in (1, 64, 256, 4096, 16384, 65536, 262144):
            nbytes = tokens * 256 * 2
            copies = rotation_count(nbytes)
            inputs = [torch.randn(tokens, 256, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
            moved = nbytes + tokens * 8 * 8
            for mode, impl in (("eager", fn), ("compile", compiled)):
                call = (lambda x, impl=impl: impl(x, bias)) if needs_bias else impl
                us = median_us(call, inputs)
                results.append({"op": "route", "gate": name, "impl": f"torch.{mode}", "tokens": tokens,
                                "median_us": us, "GBps": moved / (us * 1e-6) / 1e9})
                print(f"{name:28s} torch.{mode:7s} T={tokens:6d}: {us:9.2f} us")
    with open(args.out, "w") as f:
        json.dump({"gpu": props.name, "torch": torch.__version__, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
