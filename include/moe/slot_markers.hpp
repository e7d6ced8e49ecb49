// moe/slot_markers.hpp: the values a routing policy writes in a slot where no expert runs.
#pragma once

#include "config.hpp"

namespace moe {
inline namespace MOE_TARGET_NAMESPACE {

// Slot markers in a token's row of expert ids, for slots where no expert ran.
// kNoExpert: the slot is unused (top-p chose fewer than k_max experts, expert-choice routing gave the token
// fewer experts than the widest row). kDroppedExpert: the token chose an expert but a capacity limit dropped
// it; which expert is not recorded, so a dropped choice counts for no expert.
inline constexpr int kNoExpert = -1;
inline constexpr int kDroppedExpert = -2;

}  // namespace MOE_TARGET_NAMESPACE
}  // namespace moe
