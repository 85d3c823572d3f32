#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the test vectors of frugal's CUTLASS / PyTorch 2:4 metadata converters.

PyTorch's own conversion, torch.sparse._semi_structured_conversions.sparse_semi_structured_from_dense_cutlass,
compresses 2:4 matrices on the CPU; this script saves its inputs and outputs as text so that the
host tests (tests/host/test_sparse_nm.cpp) can check frugal's converters against them without
PyTorch. Run it with a PyTorch from PyPI (the file records the version):

    python3 -m venv /tmp/torch && /tmp/torch/bin/pip install torch
    /tmp/torch/bin/python tests/data/make_semi_structured_vectors.py > tests/data/semi_structured_vectors.txt

Format, one case after another:
    case <dtype> <rows> <cols> <set>           set: exact (2 non-zeros per chunk) or sparser (0..2 per chunk)
    dense <rows * cols hex uint16, row-major>
    values <rows * cols / 2 hex uint16>         PyTorch's kept values
    meta <rows * cols / 16 hex uint16>          PyTorch's reordered int16 metadata, flat
"""
import random
import sys

import torch
from torch.sparse._semi_structured_conversions import sparse_semi_structured_from_dense_cutlass


def hex_words(t):
    return " ".join("%04x" % (int(x) & 0xFFFF) for x in t.view(torch.int16).flatten().tolist())


def make_dense(rows, cols, dtype, sparser, rng):
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    dense = torch.zeros(rows, cols, dtype=torch.float32)
    for r in range(rows):
        for c in range(0, cols, 4):
            i0, i1 = pairs[rng.randrange(6)]
            keep = [i0, i1] if not sparser else rng.choice([[], [i0], [i1], [i0, i1]])
            for i in keep:
                value = 0.0
                while value == 0.0:  # distinct from zero, exact in bf16 and fp16
                    value = rng.randint(-64, 64) / 8.0
                dense[r, c + i] = value
    return dense.to(dtype)


def main():
    rng = random.Random(20261202)
    print("# frugal 2:4 metadata vectors, made by tests/data/make_semi_structured_vectors.py with PyTorch %s" % torch.__version__)
    # The metadata does not depend on the element type; each type is checked once for the values.
    cases = (("bf16", 32, 64, False), ("bf16", 64, 128, False), ("f16", 32, 96, False), ("bf16", 32, 64, True), ("f16", 64, 64, True))
    for dtype_name, rows, cols, sparser in cases:
        dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float16
        dense = make_dense(rows, cols, dtype, sparser, rng)
        values, meta = sparse_semi_structured_from_dense_cutlass(dense)
        print("case %s %d %d %s" % (dtype_name, rows, cols, "sparser" if sparser else "exact"))
        print("dense " + hex_words(dense))
        print("values " + hex_words(values))
        print("meta " + hex_words(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
