// SPDX-License-Identifier: Apache-2.0
//! @file
//! Options of the contrastive losses (docs/contrastive.md): the learnable temperature with CLIP's
//! clamp, the SigLIP bias, label smoothing, fused L2 normalisation and the rank offset of the
//! distributed "local loss". Plain C++: the host references use it too.
#pragma once

#include <cstdint>

namespace frugal::contrast {

//! How the logits are formed from the embeddings: Z_ij = scale * <x_i, y_j> + bias with
//! scale = exp(clamp(log_scale, min_log_scale, max_log_scale)), on the L2-normalised rows when
//! `normalize` is set. The clamp is CLIP's (the scale is at most 100); its gradient is that of
//! torch.clamp: passed through inside [min, max] (bounds included), 0 outside.
struct logit_options {
  float log_scale = 2.6592600f;      //!< ln(1 / 0.07), CLIP's initial temperature 0.07
  float min_log_scale = 0.0f;        //!< scale >= 1
  float max_log_scale = 4.6051702f;  //!< ln 100: scale <= 100 (temperature >= 0.01)
  float bias = 0.0f;                 //!< SigLIP's learnable bias b (0 for the softmax losses)
  //! x / max(||x||, 1e-12) on every row first (F.normalize), with its backward.
  bool normalize = false;
};

//! The softmax losses' extra options.
struct softmax_options {
  //! eps of label smoothing: the target of row i is (1 - eps) on its positive plus eps / M on
  //! every column (InfoNCE and CLIP).
  float label_smoothing = 0.0f;
  //! The global index of local row 0 (the "local loss" of distributed training: a rank scores
  //! its N rows against all M gathered columns; row i's positive is column row_offset + i).
  std::int64_t row_offset = 0;
};

//! The clamped log-scale in use and whether its gradient passes (torch.clamp's rule).
struct clamped_log_scale {
  float value;
  bool passes_gradient;
};

inline clamped_log_scale clamp_log_scale(const logit_options& o) {
  const float t = o.log_scale < o.min_log_scale ? o.min_log_scale : o.log_scale > o.max_log_scale ? o.max_log_scale : o.log_scale;
  return {t, o.log_scale >= o.min_log_scale && o.log_scale <= o.max_log_scale};
}

}  // namespace frugal::contrast
