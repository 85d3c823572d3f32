// SPDX-License-Identifier: Apache-2.0
//! @file
//! Runtime router shapes onto compiled ones: an engine reads E, k, the scoring and the groups
//! from a model's config at run time, while frugal's routers are compile-time configurations.
//! route_table<Configs...> holds the configurations a build instantiates and routes a runtime
//! route_shape to the one that matches, or says that none does. docs/moe_routing.md.
#pragma once

#include <frugal/config.cuh>

#if !FRUGAL_KERNEL_CODE
#error "frugal: frugal/moe/route_table.cuh holds kernels; compile it with nvcc, or with the host compiler in host SIMT mode (frugal::host_simt)"
#endif

#include <frugal/moe/device_route.cuh>
#include <frugal/moe/route_backward.cuh>

#include <cstdint>
#include <cstring>

namespace frugal::moe {

//! A router's shape as known at run time (from a model's config).
struct route_shape {
  int experts = 0;                                //!< E
  int k = 0;                                      //!< top-k
  const char* scoring = "softmax";                //!< a scoring's `name`: softmax, topk_softmax, sigmoid, sqrt_softplus, none
  int groups = 1;                                 //!< group-limited routing: NumGroups
  int topk_groups = 0;                            //!< TopKGroups; 0: all groups
  group_score group_rule = group_score::automatic;
};

//! Whether `Config` has this shape.
template <class Config>
bool route_shape_matches(const route_shape& s) {
  const int topk_groups = s.topk_groups > 0 ? s.topk_groups : s.groups;
  return Config::experts == s.experts && Config::k == s.k && s.scoring != nullptr &&
         std::strcmp(Config::scoring::name, s.scoring) == 0 && Config::groups == s.groups && Config::topk_groups == topk_groups &&
         Config::group_rule == s.group_rule;
}

//! The configurations a build compiles, chosen at run time:
//!
//!   using routers = moe::route_table<moe::route_config<8, 2>, moe::route_config<128, 8>,
//!                                    moe::route_config<256, 8, moe::sigmoid_scoring, 8, 4>>;
//!   routers::route(in, out, T, moe::route_shape{cfg.E, cfg.k, cfg.scoring}, params, stream);
//!
//! The first configuration whose shape matches runs; none matching is errc::unsupported with a
//! message (nothing is launched). Each listed configuration instantiates its kernels.
template <class... Configs>
struct route_table {
  static_assert(sizeof...(Configs) >= 1, "frugal::moe::route_table: list at least one route_config");

  //! Whether a configuration of the table has this shape.
  static bool contains(const route_shape& s) { return (route_shape_matches<Configs>(s) || ...); }

  //! moe::route with the matching configuration.
  template <class T, class IdT, class WeightT>
  static status route(route_inputs<T> in, route_outputs<IdT, WeightT> out, std::int64_t tokens, const route_shape& shape,
                      const route_params& params = {}, cudaStream_t stream = nullptr) {
    status result = status::unsupported(no_match);
    ((route_shape_matches<Configs>(shape) && (result = moe::route<Configs>(in, out, tokens, params, stream), true)) || ...);
    return result;
  }

  //! moe::route_backward with the matching configuration.
  template <class T, class IdT, class G, class D>
  static status route_backward(route_inputs<T> in, const IdT* ids, const G* d_weights, D* d_logits, std::int64_t tokens,
                               const route_shape& shape, const route_params& params = {}, float clip = 0.0f, bool accumulate = false,
                               cudaStream_t stream = nullptr) {
    status result = status::unsupported(no_match);
    ((route_shape_matches<Configs>(shape) &&
      (result = moe::route_backward<Configs>(in, ids, d_weights, d_logits, tokens, params, clip, accumulate, stream), true)) ||
     ...);
    return result;
  }

 private:
  static constexpr const char* no_match =
      "frugal::moe::route_table: no compiled route_config has this route_shape (experts, k, scoring, groups, topk_groups, group_rule); "
      "add it to the table";
};

}  // namespace frugal::moe
