// The safe pickle subset (pickle.h). Implementation in progress: this first version only declares.
#include "pyman/pickle.h"

namespace taskmaster::pickle {

Expected<Value> decode(std::string_view, const Limits&) { return make_error(ErrorCode::Internal, "pickle: not implemented yet"); }

}  // namespace taskmaster::pickle
