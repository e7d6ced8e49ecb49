// moe/detail/team.hpp: the team of threads a stage of a forward pass runs on.
#pragma once

#include <algorithm>

#include "../config.hpp"
#include "../workspace.hpp"

#if MOE_HAS_OPENMP
#include <omp.h>
#endif

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {
namespace detail {

// Threads a pass with this many requested (0: the default) runs on.
inline int team_size(int requested) {
  return requested > 0 ? std::min(requested, MOE_MAX_THREADS) : default_thread_count();
}

// Runs body, whose worksharing loops split among the team that runs it, on a team of `threads`. With
// one thread it calls body directly: a parallel region of one thread still costs what a fork and a join
// do (libgomp ends every barrier with a futex wake, a system call), a visible share of a small layer's
// decode pass (docs/PERFORMANCE.md, decision "A pass on one thread runs without an OpenMP region").
// Directly is only right when the calling thread's team is a team of one; inside a caller's parallel
// region body's loops would be split among the caller's threads, so there a region (nested: one thread)
// is kept.
template <class Body>
void run_on_team(int threads, Body&& body) {
#if MOE_HAS_OPENMP
  if (threads > 1 || omp_get_num_threads() > 1) {
    MOE_OMP(omp parallel num_threads(threads))
    body();
    return;
  }
#endif
  (void)threads;
  body();
}

}  // namespace detail
}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
