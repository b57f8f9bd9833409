// Completion: a move-only void() callable kept without allocation when it is
// small (a suspended coroutine's completion handler is one pointer), used
// for the handlers a Worker completes between progress passes. Larger
// callables go to the heap. Destroying an uninvoked Completion destroys the
// callable (for a coroutine: its frames, as when an io_context shuts down).
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace kvb::transport {

class Completion {
 public:
  Completion() noexcept = default;

  template <class F, class D = std::decay_t<F>, class = std::enable_if_t<!std::is_same_v<D, Completion>>>
  explicit Completion(F&& f) {
    if constexpr (sizeof(D) <= kInline && alignof(D) <= alignof(std::max_align_t) &&
                  std::is_nothrow_move_constructible_v<D>) {
      ::new (static_cast<void*>(buf_)) D(std::forward<F>(f));
      ops_ = &inline_ops<D>;
    } else {
      ::new (static_cast<void*>(buf_)) D*(new D(std::forward<F>(f)));
      ops_ = &heap_ops<D>;
    }
  }

  Completion(Completion&& other) noexcept : ops_(std::exchange(other.ops_, nullptr)) {
    if (ops_ != nullptr) ops_->relocate(buf_, other.buf_);
  }
  Completion& operator=(Completion&& other) noexcept {
    if (this != &other) {
      reset();
      ops_ = std::exchange(other.ops_, nullptr);
      if (ops_ != nullptr) ops_->relocate(buf_, other.buf_);
    }
    return *this;
  }
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;
  ~Completion() { reset(); }

  [[nodiscard]] explicit operator bool() const noexcept { return ops_ != nullptr; }

  /// Invokes the callable once and leaves this Completion empty.
  void operator()() && {
    const Ops* ops = std::exchange(ops_, nullptr);
    ops->invoke(buf_);  // moves the callable out first: it may destroy *this
  }

 private:
  static constexpr std::size_t kInline = 3 * sizeof(void*);
  struct Ops {
    void (*invoke)(void* storage);           // moves the callable out, destroys it, calls it
    void (*relocate)(void* dst, void* src);  // move-constructs dst from src, destroys src
    void (*destroy)(void* storage);
  };
  template <class D>
  static constexpr Ops inline_ops{[](void* s) {
                                    D f(std::move(*static_cast<D*>(s)));
                                    static_cast<D*>(s)->~D();
                                    std::move(f)();
                                  },
                                  [](void* dst, void* src) {
                                    ::new (dst) D(std::move(*static_cast<D*>(src)));
                                    static_cast<D*>(src)->~D();
                                  },
                                  [](void* s) { static_cast<D*>(s)->~D(); }};
  template <class D>
  static constexpr Ops heap_ops{[](void* s) {
                                  D* p = *static_cast<D**>(s);
                                  D f(std::move(*p));
                                  delete p;
                                  std::move(f)();
                                },
                                [](void* dst, void* src) { ::new (dst) D*(*static_cast<D**>(src)); },
                                [](void* s) { delete *static_cast<D**>(s); }};

  void reset() noexcept {
    if (const Ops* ops = std::exchange(ops_, nullptr)) ops->destroy(buf_);
  }

  alignas(std::max_align_t) unsigned char buf_[kInline];
  const Ops* ops_ = nullptr;
};

}  // namespace kvb::transport
