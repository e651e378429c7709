// Overloaded{lambdas...}: one visitor for std::visit made of several lambdas.
#pragma once

namespace taskmaster {

template <class... F> struct Overloaded : F... { using F::operator()...; };
template <class... F> Overloaded(F...) -> Overloaded<F...>;

}  // namespace taskmaster
