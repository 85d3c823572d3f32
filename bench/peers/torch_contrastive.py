# SPDX-License-Identifier: Apache-2.0
"""PyTorch peers for frugal's fused contrastive losses (bench_contrast.cu, contrast/*_train_step):
one training step (forward and backward) of CLIP's loss in open_clip's formulation (normalise,
logits = scale x y^T, cross-entropy both ways) and of SigLIP's (logits = scale x y^T + bias,
-logsigmoid(labels * logits) summed per row), bf16, eager and torch.compile, timed with CUDA
events, with the peak memory each holds. N in {4K, 16K, 64K} (and 256K, where eager runs out of
memory or time), D in {512, 1024}. Stops early rather than overrun its time. Writes JSON."""
import time

import torch
import torch.nn.functional as F

from peer_timing import median_us, peer_main

BUDGET_S = 80


def clip_loss(x, y, log_scale):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = log_scale.exp() * x @ y.t()
    labels = torch.arange(x.shape[0], device=x.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2


def siglip_loss(x, y, log_scale, bias):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    logits = log_scale.exp() * x @ y.t() + bias
    labels = 2 * torch.eye(x.shape[0], device=x.device, dtype=logits.dtype) - 1
    return -F.logsigmoid(labels * logits).sum() / x.shape[0]


def step_fn(loss_fn):
    def step(args):
        x, y, params = args
        loss = loss_fn(x, y, *params)
        loss.backward()
        return loss
    return step


def collect():
    started = time.time()
    results = []
    shapes = [(n, d) for n in (4096, 16384, 65536) for d in (512, 1024)] + [(262144, 512)]
    for loss_name, loss_fn, params in (("clip", clip_loss, (2.6592600,)), ("siglip", siglip_loss, (2.3025851, -10.0))):
        for impl in ("eager", "torch.compile"):
            fn = loss_fn if impl == "eager" else torch.compile(loss_fn, dynamic=False)
            for n, d in shapes:
                if time.time() - started > BUDGET_S:
                    results.append({"op": loss_name, "impl": impl, "n": n, "dim": d, "skipped": "time budget"})
                    continue
                if impl == "torch.compile" and d != 512:
                    continue  # one compile per shape: the budget allows D = 512 only
                row = {"op": f"{loss_name}_train_step", "impl": impl, "dtype": "bf16", "n": n, "dim": d}
                try:
                    torch.cuda.empty_cache()
                    x = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                    y = torch.randn(n, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                    p = tuple(torch.tensor(v, device="cuda", requires_grad=True) for v in params)
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                    us = median_us(step_fn(fn), [(x, y, p)], iters=5 if n >= 65536 else 20, warmup=2)
                    row.update({"median_us": us, "useful_TFLOPs": 3 * 2 * n * n * d / (us * 1e-6) / 1e12,
                                "peak_extra_bytes": torch.cuda.max_memory_allocated() - base})
                    print(f"{loss_name} {impl} N={n} D={d}: {us / 1e3:.2f} ms, peak +{row['peak_extra_bytes'] / 2**30:.2f} GiB")
                except torch.cuda.OutOfMemoryError:
                    row["oom"] = True
                    print(f"{loss_name} {impl} N={n} D={d}: out of memory")
                results.append(row)
                x = y = p = None
    return results


if __name__ == "__main__":
    peer_main(collect)
