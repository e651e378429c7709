// The test and fuzz builds keep assert() on (TASKMASTER_ASSERTS, CMakeLists.txt), though their
// build type (RelWithDebInfo) defines NDEBUG. These cases pass only when asserts really are on: in
// this file, and in a library built apart from it (taskmaster::master).
#include "common/expected.h"
#include "master/task_table.h"

#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>

namespace taskmaster {
namespace {

// Runs `f` in a child process; true if the child died of SIGABRT (what a failed assert does). An
// exception does not count: without asserts, Expected::value() of an error throws (std::get).
bool aborts(const std::function<void()>& f) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int null = open("/dev/null", O_WRONLY);  // the assert's message is expected: keep it out of the log
    if (null >= 0) dup2(null, STDERR_FILENO);
    try {
      f();
    } catch (...) {
    }
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

TEST_CASE("asserts are on in the test build: NDEBUG is not defined") {
#ifdef NDEBUG
  FAIL("NDEBUG is defined: assert() is compiled out (configure with -DTASKMASTER_ASSERTS=ON)");
#else
  CHECK(true);
#endif
}

TEST_CASE("asserts are on in the test build: a broken precondition aborts, here and in a library") {
  SUBCASE("Expected::value() of an error (a header, compiled into this test)") {
    CHECK(aborts([] { (void)Expected<int>(Error{ErrorCode::Internal, "x"}).value(); }));
  }
  SUBCASE("TaskTable::restore of an id that exists (master/task_table.cpp, compiled into taskmaster::master)") {
    CHECK(aborts([] {
      TaskTable table;
      Task t;
      t.id = 7;
      table.restore(t, "f", "q", "", TimePoint{});
      table.restore(t, "f", "q", "", TimePoint{});
    }));
  }
  SUBCASE("a child that does not abort is told apart") {
    CHECK_FALSE(aborts([] {}));
  }
}

}  // namespace
}  // namespace taskmaster
