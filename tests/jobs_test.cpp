// Jobs: ids, idempotency keys, when a job ends, and when its results' time is up.
#include "master/jobs.h"

#include <doctest/doctest.h>

#include <vector>

namespace taskmaster {
namespace {

using namespace std::chrono_literals;

const TimePoint t0{};

long long ms(const std::optional<TimePoint>& t) { return t ? std::chrono::duration_cast<std::chrono::milliseconds>(*t - t0).count() : -1; }

// A new job with one task, which finished at `at`; sealed at `at` too.
const Job& ended_job(JobTable& jobs, TimePoint at, std::string key = "") {
  const Job& job = jobs.create(std::move(key));
  jobs.add_batch(job.id, {100 + job.id, 1}, false, at);
  jobs.task_finished(job.id, 100 + job.id, false, at);
  jobs.seal(job.id, at);
  REQUIRE(job.ended());
  return job;
}

// What a JobListener hears, one line per change.
struct Heard : JobListener {
  std::vector<std::string> lines;
  void on_job_change(const Job& job, JobChange change) override {
    const char* what = change == JobChange::BatchAdded ? "batch" : change == JobChange::Updated ? "updated" : "erased";
    lines.push_back(std::to_string(job.id) + " " + what + " total " + std::to_string(job.total) + (job.sealed ? " sealed" : "") +
                    (job.cancelled ? " cancelled" : "") + (job.ended_at ? " ended" : ""));
  }
};

TEST_SUITE("jobs") {

TEST_CASE("create gives increasing ids, and find and find_by_key return the job") {
  JobTable jobs;
  const Job& a = jobs.create("");
  const Job& b = jobs.create("key-b");
  const Job& c = jobs.create("");
  CHECK(a.id == 1);
  CHECK(b.id == 2);
  CHECK(c.id == 3);
  CHECK(jobs.size() == 3);
  CHECK(jobs.find(2) == &b);
  CHECK(jobs.find(4) == nullptr);
  CHECK(jobs.find(0) == nullptr);
  CHECK(jobs.find_by_key("key-b") == &b);
  CHECK(b.idempotency_key == "key-b");
  CHECK(jobs.find_by_key("key-a") == nullptr);
  CHECK(jobs.find_by_key("") == nullptr);  // jobs without a key are not found by ""
  CHECK_FALSE(a.sealed);
  CHECK_FALSE(a.ended_at.has_value());
}

TEST_CASE("a job ends when it is sealed and every task finished, whichever comes last") {
  JobTable jobs;
  const Job& job = jobs.create("");
  jobs.add_batch(job.id, {1, 2}, false, t0);

  SUBCASE("sealed after the last task finished") {
    jobs.task_finished(job.id, 1, false, t0 + 1s);
    jobs.task_finished(job.id, 2, true, t0 + 2s);
    CHECK_FALSE(job.ended());
    CHECK(ms(job.ended_at) == -1);
    jobs.seal(job.id, t0 + 3s);
    CHECK(job.ended());
    CHECK(ms(job.ended_at) == 3000);
  }
  SUBCASE("the last task finishes after the seal") {
    jobs.seal(job.id, t0 + 1s);
    CHECK(job.sealed);
    CHECK_FALSE(job.ended());
    jobs.task_finished(job.id, 1, false, t0 + 2s);
    CHECK_FALSE(job.ended());
    CHECK(ms(job.ended_at) == -1);
    jobs.task_finished(job.id, 2, true, t0 + 3s);
    CHECK(job.ended());
    CHECK(ms(job.ended_at) == 3000);
    // Sealing again (a cancel after the end) keeps the first end time.
    jobs.seal(job.id, t0 + 4s);
    CHECK(ms(job.ended_at) == 3000);
  }
  CHECK(job.finished == std::vector<TaskId>{1, 2});
  CHECK(job.failed == 1);
}

TEST_CASE("an empty job ends when it is sealed") {
  JobTable jobs;
  const Job& job = jobs.create("");
  jobs.seal(job.id, t0 + 5s);
  CHECK(job.ended());
  CHECK(ms(job.ended_at) == 5000);
  CHECK(jobs.expired(t0 + 5s, 0ms) == std::vector<JobId>{job.id});
}

TEST_CASE("expired lists the jobs that ended at least the TTL ago, oldest first") {
  JobTable jobs;
  const JobId open = jobs.create("").id;  // never ends
  const JobId a = ended_job(jobs, t0 + 1s).id;
  const JobId b = ended_job(jobs, t0 + 2s).id;
  const JobId c = ended_job(jobs, t0 + 2s).id;
  const JobId d = ended_job(jobs, t0 + 5s).id;
  (void)open;

  CHECK(jobs.expired(t0 + 10999ms, 10s).empty());
  CHECK(jobs.expired(t0 + 11s, 10s) == std::vector<JobId>{a});
  CHECK(jobs.expired(t0 + 12s - 1ms, 10s) == std::vector<JobId>{a});
  CHECK(jobs.expired(t0 + 12s, 10s) == std::vector<JobId>{a, b, c});
  CHECK(jobs.expired(t0 + 1h, 10s) == std::vector<JobId>{a, b, c, d});
  CHECK(jobs.expired(t0 + 5s, 0ms) == std::vector<JobId>{a, b, c, d});
  CHECK(jobs.expired(t0 + 5s - 1ms, 0ms) == std::vector<JobId>{a, b, c});
  // Listing does not remove.
  CHECK(jobs.size() == 5);
  CHECK(jobs.expired(t0 + 12s, 10s).size() == 3);
}

TEST_CASE("erase forgets the job, its key and its end") {
  JobTable jobs;
  const JobId a = ended_job(jobs, t0 + 1s, "ka").id;
  const JobId b = ended_job(jobs, t0 + 2s, "kb").id;
  const JobId c = ended_job(jobs, t0 + 3s, "kc").id;

  jobs.erase(b);  // not the oldest
  CHECK(jobs.find(b) == nullptr);
  CHECK(jobs.find_by_key("kb") == nullptr);
  CHECK(jobs.size() == 2);
  CHECK(jobs.expired(t0 + 1h, 0ms) == std::vector<JobId>{a, c});

  jobs.erase(a);  // the oldest
  CHECK(jobs.find(a) == nullptr);
  CHECK(jobs.find_by_key("ka") == nullptr);
  CHECK(jobs.find_by_key("kc") == jobs.find(c));
  CHECK(jobs.expired(t0 + 1h, 0ms) == std::vector<JobId>{c});

  jobs.erase(999);  // unknown: nothing happens
  CHECK(jobs.size() == 1);

  // The key is free again, and the new job gets a new id.
  const Job& again = jobs.create("kb");
  CHECK(again.id == 4);
  CHECK(jobs.find_by_key("kb") == &again);
}

TEST_CASE("restore puts a job back with its id and key, and new ids continue past it") {
  JobTable jobs;
  const Job& r = jobs.restore(10, "k10", 0, false, false);
  CHECK(r.id == 10);
  CHECK(jobs.find(10) == &r);
  CHECK(jobs.find_by_key("k10") == &r);
  CHECK(jobs.create("").id == 11);
  jobs.restore(5, "", 0, false, false);  // an older job: the next id stays past every restored one
  CHECK(jobs.find(5) != nullptr);
  CHECK(jobs.create("").id == 12);
  CHECK(jobs.size() == 4);
}

TEST_CASE("every change of a job is told to the listener once, and replay and undo tell nothing") {
  Heard heard;
  JobTable jobs(&heard);
  const JobId a = jobs.create("").id;
  CHECK(heard.lines.empty());  // a job without a batch is nothing yet
  jobs.add_batch(a, {1, 2}, false, t0);
  jobs.task_finished(a, 1, false, t0);  // not the end: nothing to tell
  jobs.add_batch(a, {3, 1}, true, t0);
  jobs.task_finished(a, 2, false, t0 + 1s);
  jobs.task_finished(a, 3, true, t0 + 2s);  // the end
  jobs.seal(a, t0 + 3s);                    // sealed already: no change
  const JobId b = jobs.create("").id;
  jobs.add_batch(b, {4, 1}, false, t0);
  jobs.cancel(b, t0);
  jobs.cancel(b, t0);  // again: no change
  jobs.erase(a);
  CHECK(heard.lines == std::vector<std::string>{"1 batch total 2", "1 batch total 3 sealed", "1 updated total 3 sealed ended",
                                                "2 batch total 1", "2 updated total 1 sealed cancelled", "1 erased total 3 sealed ended"});
  heard.lines.clear();
  jobs.restore(7, "k", 2, true, false);
  jobs.restore_batch(7, 0, {10, 2});
  jobs.restore_finished(7, 10, false);
  jobs.restore_ended(7, t0);
  jobs.drop_last_batch(b, false, t0);
  jobs.discard(7);
  CHECK(heard.lines.empty());
  CHECK(jobs.find(7) == nullptr);
  CHECK(jobs.find_by_key("k") == nullptr);
}

}  // TEST_SUITE

}  // namespace
}  // namespace taskmaster
