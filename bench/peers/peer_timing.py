# SPDX-License-Identifier: Apache-2.0
"""Shared by the PyTorch peer scripts: timing with CUDA events, inputs rotated past L2."""
import torch


def rotation_count(nbytes):
    """Copies of an input of nbytes that together exceed twice the L2 cache (1 to 64)."""
    l2 = getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 50 << 20)
    return max(1, min(64, (2 * l2) // max(1, nbytes) + 1))


def median_us(fn, inputs, iters=50, warmup=5):
    """Median time of fn(input) in microseconds, cycling through inputs."""
    for i in range(warmup):
        fn(inputs[i % len(inputs)])
    torch.cuda.synchronize()
    times = []
    for i in range(iters):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(inputs[i % len(inputs)])
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3)
    times.sort()
    return times[len(times) // 2]


def peer_main(collect):
    """The peers' command line: --out PATH; collect() returns the list of result dicts, written
    as JSON with the GPU's name and PyTorch's version."""
    import argparse
    import json
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = collect()
    with open(args.out, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_properties(0).name, "torch": torch.__version__, "results": results}, f, indent=1)
