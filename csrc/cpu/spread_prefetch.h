// Prefetches a list of memory runs into the L2 cache a few lines at a time, spread over the calls
// of a compute loop: a reduction that walks its inputs chunk by chunk asks for the next chunk's
// while its register tiles work on this one, so that the next chunk's copies and transforms find
// it in cache rather than each waiting on DRAM.
#pragma once
#include <cstdint>
#include <vector>

namespace genfast::cpu {

class SpreadPrefetch {
 public:
  void add(const void* start, int64_t bytes) {
    if (bytes > 0) runs_.push_back({static_cast<const char*>(start), bytes});
  }
  int64_t lines() const {
    int64_t total = 0;
    for (const Run& r : runs_) total += (r.bytes + kLine - 1) / kLine;
    return total;
  }
  // Prefetches the next `count` lines of the runs (fewer at the end).
  void next(int64_t count) {
    for (; count > 0 && run_ < runs_.size(); --count) {
      __builtin_prefetch(runs_[run_].start + offset_, 0, 2);
      offset_ += kLine;
      if (offset_ >= runs_[run_].bytes) ++run_, offset_ = 0;
    }
  }
  void clear() { runs_.clear(), run_ = 0, offset_ = 0; }

 private:
  static constexpr int64_t kLine = 64;
  struct Run {
    const char* start;
    int64_t bytes;
  };
  std::vector<Run> runs_;
  size_t run_ = 0;
  int64_t offset_ = 0;
};

}  // namespace genfast::cpu
