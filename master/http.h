// The master's HTTP endpoint (docs/HTTP.md): Prometheus metrics, the dashboard and its JSON API.
// cpp-httplib serves connections on its own threads; they check access (token, cookies, CSRF) and
// hand each request to the master's loop, which answers it from MasterState (MasterState::http)
// on its own thread. This file moves bytes and checks access; the state decides the answers.
// Thread-safe where it says so.
#pragma once

#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "master/state.h"
#include "protocol/auth.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

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
  };
  std::vector<std::unique_ptr<Pending>> take();

 private:
  void handle(const httplib::Request& req, httplib::Response& res);
  // Who may do what: nullopt if allowed, else the answer to send.
  std::optional<HttpAnswer> refuse(const httplib::Request& req, bool writes) const;
  bool has_token(const httplib::Request& req, bool* by_cookie) const;
  HttpAnswer ask_loop(HttpQuery q);

  Options options_;
  std::string csrf_;  // the secrets', or random for a master without a key
  std::unique_ptr<httplib::Server> server_;
  int port_ = 0;
  int event_fd_ = -1;
  std::thread thread_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Pending>> pending_;  // guarded by mutex_
  bool stopping_ = false;                          // guarded by mutex_
};

}  // namespace taskmaster
