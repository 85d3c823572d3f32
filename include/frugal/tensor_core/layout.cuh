// SPDX-License-Identifier: Apache-2.0
//! @file
//! The fragment layouts of the warp-level tensor-core instructions frugal uses, as constexpr
//! functions: which element of which matrix each lane's register element holds. One table,
//! shared by the host SIMT emulation, the tests and anyone who wants to check it; the formulas
//! are those of the PTX ISA (section numbers of PTX ISA 9.0; they shift between versions), and
//! docs/tensor_cores.md draws them.
//!
//! Conventions: `lane` is %laneid (0..31), g = lane / 4 ("groupID"), t = lane % 4
//! ("threadID_in_group"). Element `i` of a fragment counts 16-bit elements low to high (element
//! 2r is the low half of 32-bit register r) for f16/bf16 operands, and registers for tf32
//! operands and fp32 accumulators. Thread level: plain C++, compiles everywhere.
#pragma once

#include <frugal/config.cuh>

namespace frugal::tensor_core_layout {

//! A position in an operand's tile: (row, col) of A (m, k), B (k, n) or C/D (m, n).
struct position {
  int row;
  int col;
  friend constexpr bool operator==(position a, position b) { return a.row == b.row && a.col == b.col; }
};

FRUGAL_HOST_DEVICE constexpr int group_of(int lane) { return lane >> 2; }
FRUGAL_HOST_DEVICE constexpr int thread_in_group(int lane) { return lane & 3; }

// ---- mma.m16n8k16, .f16 / .bf16 (PTX 9.7.14.5.8, "Matrix Fragments for mma.m16n8k16 with
// floating point type") -------------------------------------------------------------------------

//! A, 16 x 16 (m, k), 8 elements in 4 registers: row g for a0 a1 a4 a5, g + 8 otherwise;
//! col 2t + (i & 1), + 8 for i >= 4.
FRUGAL_HOST_DEVICE constexpr position m16n8k16_a(int lane, int i) {
  return {group_of(lane) + 8 * ((i >> 1) & 1), 2 * thread_in_group(lane) + (i & 1) + 8 * (i >> 2)};
}
//! B, 16 x 8 (k, n), 4 elements in 2 registers: k = 2t + (i & 1), + 8 for i >= 2; n = g.
FRUGAL_HOST_DEVICE constexpr position m16n8k16_b(int lane, int i) {
  return {2 * thread_in_group(lane) + (i & 1) + 8 * (i >> 1), group_of(lane)};
}
//! C and D of every m16n8 shape with fp32 accumulators, 16 x 8 (m, n), 4 registers:
//! row g for c0 c1, g + 8 for c2 c3; col 2t + (i & 1). (9.7.14.5.7 / .8, and 9.7.14.6.2.2 for mma.sp.)
FRUGAL_HOST_DEVICE constexpr position m16n8_c(int lane, int i) {
  return {group_of(lane) + 8 * (i >> 1), 2 * thread_in_group(lane) + (i & 1)};
}

// ---- mma.m16n8k8, .tf32 (PTX 9.7.14.5.7, "Matrix Fragments for mma.m16n8k8") ----------------

//! A, 16 x 8 (m, k), 4 registers: row g for a0 a2, g + 8 for a1 a3; col t for a0 a1, t + 4 for a2 a3.
FRUGAL_HOST_DEVICE constexpr position m16n8k8_a(int lane, int i) {
  return {group_of(lane) + 8 * (i & 1), thread_in_group(lane) + 4 * (i >> 1)};
}
//! B, 8 x 8 (k, n), 2 registers: k = t for b0, t + 4 for b1; n = g.
FRUGAL_HOST_DEVICE constexpr position m16n8k8_b(int lane, int i) {
  return {thread_in_group(lane) + 4 * i, group_of(lane)};
}

// ---- mma.sp::ordered_metadata.m16n8k32, .f16 / .bf16 (PTX 9.7.14.6.1 "Sparse matrix storage",
// 9.7.14.6.2.2 "Matrix Fragments for sparse mma.m16n8k32 with .f16 and .bf16 types") ----------
//
// A is 16 x 32 (m, k) with at most two non-zeros in every chunk of 4 consecutive columns; only
// the two kept values of each chunk are stored (the compressed A is 16 x 16), and the metadata
// holds their column indices in the chunk (2 bits each, idx0 < idx1).

//! A: the chunk (of 4 logical columns) element i belongs to: row g for a0 a1 a4 a5, g + 8
//! otherwise; chunk t for i < 4, t + 4 for i >= 4. Element i is the (i & 1)-th kept value of it.
FRUGAL_HOST_DEVICE constexpr position m16n8k32_sp_a_chunk(int lane, int i) {
  return {group_of(lane) + 8 * ((i >> 1) & 1), thread_in_group(lane) + 4 * (i >> 2)};
}
//! A in compressed coordinates (16 x 16: column 2 * chunk + (i & 1)): the same as the dense
//! m16n8k16 A layout, so the compressed tile loads with the same ldmatrix.
FRUGAL_HOST_DEVICE constexpr position m16n8k32_sp_a(int lane, int i) {
  return {m16n8k32_sp_a_chunk(lane, i).row, 2 * m16n8k32_sp_a_chunk(lane, i).col + (i & 1)};
}
//! B, 32 x 8 (k, n), 8 elements in 4 registers: two m16n8k16 B fragments stacked along k,
//! k = 2t + (i & 1) + 8 * (i >> 1), n = g (Figure 121).
FRUGAL_HOST_DEVICE constexpr position m16n8k32_sp_b(int lane, int i) {
  return {2 * thread_in_group(lane) + (i & 1) + 8 * (i >> 1), group_of(lane)};
}

//! Where a nibble of the metadata lives: lane and lowest bit. The nibble is idx0 | idx1 << 2.
struct metadata_position {
  int lane;
  int bit;
};
//! The metadata nibble of (row, chunk) of A (row 0..15, chunk 0..7 = logical columns 4c..4c+3)
//! for sparsity selector s (0 or 1): lane 4 (row % 8) + 2 s + chunk / 4, bit 4 (chunk % 4), plus
//! 16 for rows 8..15 (Figure 122). Each lane pair serves one group's two rows; the selector
//! picks which pair of each group of four lanes supplies metadata, so one register per lane
//! can hold the metadata of two consecutive m16 tiles.
FRUGAL_HOST_DEVICE constexpr metadata_position m16n8k32_sp_metadata(int row, int chunk, int selector) {
  return {4 * (row & 7) + 2 * selector + (chunk >> 2), 4 * (chunk & 3) + 16 * (row >> 3)};
}
//! The six valid nibbles of mma.sp::ordered_metadata are those with idx0 < idx1:
//! 0x4 (0,1), 0x8 (0,2), 0xC (0,3), 0x9 (1,2), 0xD (1,3), 0xE (2,3).
FRUGAL_HOST_DEVICE constexpr bool is_ordered_metadata_nibble(unsigned nibble) {
  return (nibble & 3u) < ((nibble >> 2) & 3u);
}
FRUGAL_HOST_DEVICE constexpr unsigned metadata_nibble(int idx0, int idx1) {
  return unsigned(idx0) | unsigned(idx1) << 2;
}

// ---- ldmatrix.sync.aligned.m8n8{.x1,.x2,.x4}{,.trans}.shared.b16 (PTX 9.7.14.5.15) ----------
//
// Loads 1, 2 or 4 matrices of 8 x 8 16-bit elements; lane 8 j + r gives the address of row r of
// matrix j (16 bytes, 16-byte aligned); destination register j of every lane holds part of
// matrix j.

//! The lane that supplies the address of row `row` of matrix `matrix`.
FRUGAL_HOST_DEVICE constexpr int ldmatrix_address_lane(int matrix, int row) { return 8 * matrix + row; }
//! The element of its matrix that half `h` (0 low, 1 high) of a destination register of `lane`
//! holds: (g, 2t + h) without .trans, (2t + h, g) with .trans (the matrix read column-major).
FRUGAL_HOST_DEVICE constexpr position ldmatrix_element(int lane, int h, bool trans) {
  return trans ? position{2 * thread_in_group(lane) + h, group_of(lane)}
               : position{group_of(lane), 2 * thread_in_group(lane) + h};
}

}  // namespace frugal::tensor_core_layout
