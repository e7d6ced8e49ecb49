// tests/precision_list.hpp: the library's list of precisions (moe::Precisions) as the std::tuple that doctest's
// TEST_CASE_TEMPLATE_APPLY takes, so that a test over every precision follows the list.
#pragma once

#include <tuple>

#include <moe/precision.hpp>

namespace check {

template <class List>
struct tuple_of;
template <class... P>
struct tuple_of<moe::PrecisionList<P...>> {
  using type = std::tuple<P...>;
};
using AllPrecisions = tuple_of<moe::Precisions>::type;

}  // namespace check
