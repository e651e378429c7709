// The master's HTTP endpoint (docs/HTTP.md): Prometheus metrics, the dashboard and its JSON API.
// GNU libmicrohttpd serves connections on its own threads (a few epoll loops, with bounds on
// connections, per-connection memory and idle time); they check access (token, cookies, CSRF, Host)
// and hand each request to the master's loop, which answers it from MasterState
// (MasterState::http) on its own thread. This file moves bytes and checks access; the state
// decides the answers.
// Thread-safe where it says so.
#pragma once

#include <atomic>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "master/state.h"
#include "protocol/auth.h"

struct MHD_Daemon;

namespace taskmaster {

// "HOST:PORT", "[IPV6]:PORT", ":PORT" or "PORT" (then 127.0.0.1). Port 0: any free port.
struct HttpEndpoint {
  std::string host;
  int port = 0;
};
Expected<HttpEndpoint> parse_http_endpoint(std::string_view text);
bool is_loopback_host(std::string_view host);

class HttpServer {
 public:
  struct Options {
    HttpEndpoint endpoint;
    // From the shared key; nullopt: the master has no key (--insecure), so the endpoint is public.
    std::optional<protocol::HttpSecrets> secrets;
    bool is_public = false;  // --http-public: reading needs no token (changes still do)
  };
  // Binds and starts serving. Throws std::runtime_error if the address cannot be bound.
  explicit HttpServer(Options options);
  // Stops serving; requests still waiting for the loop are answered 503.
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // "http://127.0.0.1:8080": the address really bound.
  std::string url() const;
  // The dashboard's login link (the URL with the token), or the URL where no token is needed.
  std::string login_url() const;

  // The loop's side. fd() becomes readable when requests wait; take() returns them (and clears
  // it); answer each with Pending::answer.set_value.
  int fd() const { return event_fd_; }
  struct Pending {
    HttpQuery query;
    std::promise<HttpAnswer> answer;
    // kWaiting until the loop takes it (kTaken) or the HTTP side gives up waiting (kAbandoned, and
    // answers 503): whichever comes first; the loop acts only on what it took.
    static constexpr int kWaiting = 0, kTaken = 1, kAbandoned = 2;
    std::shared_ptr<std::atomic<int>> state = std::make_shared<std::atomic<int>>(kWaiting);
    // For the loop: true if it may act on it (and then must answer it).
    bool take_it() {
      int expected = kWaiting;
      return state->compare_exchange_strong(expected, kTaken);
    }
  };
  std::vector<std::unique_ptr<Pending>> take();

  // One request as read off the connection, and the answer to write: what handle() needs, without
  // the HTTP library's types.
  struct Request {
    std::string method, path;
    std::unordered_map<std::string, std::string> params;
    std::string host, origin, authorization, csrf_header, cookie_token, cookie_csrf;
  };
  struct Response {
    int status = 200;
    std::string body, content_type = "application/json";
    std::vector<std::pair<std::string, std::string>> headers;
  };
  Response handle(const Request& req);

 private:
  // Who may do what: nullopt if allowed, else the answer to send.
  std::optional<HttpAnswer> refuse(const Request& req, bool writes) const;
  bool has_token(const Request& req, bool* by_cookie) const;
  // Without the token (--insecure, --http-public), a Host that is a name other than localhost
  // (DNS rebinding: a page of another site that resolves to this address).
  bool host_allowed(const std::string& host) const;
  HttpAnswer ask_loop(HttpQuery q);

  Options options_;
  std::string csrf_;  // the secrets', or random for a master without a key
  MHD_Daemon* daemon_ = nullptr;
  int port_ = 0;
  int event_fd_ = -1;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Pending>> pending_;  // guarded by mutex_
  bool stopping_ = false;                          // guarded by mutex_
};

}  // namespace taskmaster
