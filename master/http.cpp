#include "master/http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <stdexcept>

#include <microhttpd.h>

#include "common/log.h"

namespace taskmaster {

extern const std::string_view kDashboardHtml;  // master/dashboard/index.html, embedded by CMake

namespace {

constexpr auto kLoopAnswerTimeout = std::chrono::seconds(10);
constexpr std::size_t kMaxBody = 4096;  // POSTs carry nothing; a body is never read

const char* kLoginPage = R"(<!doctype html><html><head><meta charset="utf-8"><title>taskmaster: log in</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:4em auto">
<h1>taskmaster</h1><p>Not logged in. Open the login link the master printed when it started, or run
<code>taskmaster dashboard</code> on a host that has the key: it prints the link.</p></body></html>
)";

HttpAnswer json_error(int status, const std::string& message) {
  HttpAnswer a;
  a.status = status;
  a.body = nlohmann::json{{"error", message}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return a;
}

bool equal_secret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && !a.empty() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string random_hex() {
  unsigned char bytes[16];
  randombytes_buf(bytes, sizeof bytes);
  char hex[33];
  sodium_bin2hex(hex, sizeof hex, bytes, sizeof bytes);
  return hex;
}

std::string url_host(const std::string& host) { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }

}  // namespace

Expected<HttpEndpoint> parse_http_endpoint(std::string_view text) {
  const auto bad = [&](const std::string& why) {
    return Error{ErrorCode::BadField, "--http " + std::string(text) + ": " + why + " (expected HOST:PORT, e.g. 127.0.0.1:8080)"};
  };
  HttpEndpoint e{"127.0.0.1", 0};
  std::string_view port = text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return bad("an IPv6 address needs [ADDR]:PORT");
    e.host = std::string(text.substr(1, close - 1));
    port = text.substr(close + 2);
  } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    if (text.find(':') != colon) return bad("write an IPv6 address in brackets");
    if (colon > 0) e.host = std::string(text.substr(0, colon));
    port = text.substr(colon + 1);
  }
  int p = -1;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || p < 0 || p > 65535)
    return bad("the port must be 0 to 65535");
  if (e.host.empty() || e.host.find_first_of("/ ") != std::string::npos) return bad("not a host");
  if (e.host == "*") e.host = "0.0.0.0";
  e.port = p;
  return e;
}

bool is_loopback_host(std::string_view host) { return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0; }

namespace {

// Bounds of the HTTP side: it holds no more than these whatever clients do.
constexpr unsigned kPollingThreads = 4;           // epoll loops; a request waits in one for the master's loop
constexpr unsigned kMaxConnections = 512;         // in all; past it new ones are closed at once
constexpr unsigned kMaxPerAddress = 64;           // from one client address
constexpr unsigned kIdleSeconds = 10;             // a connection silent this long is closed
constexpr std::size_t kConnectionMemory = 32768;  // a request's headers and buffers: past it, 431/413
constexpr std::size_t kMaxParams = 32;

// The listening socket, bound here so that a bad address is our error message.
int listen_on(const HttpEndpoint& e, int* port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(e.port);
  if (::getaddrinfo(e.host.c_str(), service.c_str(), &hints, &found) != 0 || !found) return -1;
  int fd = -1;
  for (addrinfo* a = found; a && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 128) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  if (fd < 0) return -1;
  sockaddr_storage sa{};
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  *port = ntohs(sa.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&sa)->sin6_port : reinterpret_cast<sockaddr_in*>(&sa)->sin_port);
  return fd;
}

std::string value(MHD_Connection* c, MHD_ValueKind kind, const char* key) {
  const char* v = MHD_lookup_connection_value(c, kind, key);
  return v ? v : "";
}

MHD_Result add_param(void* cls, MHD_ValueKind, const char* key, const char* v) {
  auto* params = static_cast<std::unordered_map<std::string, std::string>*>(cls);
  if (params->size() >= kMaxParams) return MHD_NO;
  params->emplace(key ? key : "", v ? v : "");
  return MHD_YES;
}

int g_seen = 0;  // a request's state once its headers are in: nothing is kept per request

// libmicrohttpd's access handler: called once the headers are in, then for each piece of a body
// (discarded: requests carry none), then to answer.
MHD_Result on_request(void* cls, MHD_Connection* c, const char* url, const char* method, const char*, const char*, std::size_t* upload_size,
                      void** state) {
  if (!*state) {
    *state = &g_seen;
    return MHD_YES;
  }
  if (*upload_size) {
    const bool too_big = *upload_size > kMaxBody;
    *upload_size = 0;
    return too_big ? MHD_NO : MHD_YES;
  }
  HttpServer::Request r;
  r.method = method ? method : "";
  r.path = url ? url : "";
  MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, &add_param, &r.params);
  r.host = value(c, MHD_HEADER_KIND, "Host");
  r.origin = value(c, MHD_HEADER_KIND, "Origin");
  r.authorization = value(c, MHD_HEADER_KIND, "Authorization");
  r.csrf_header = value(c, MHD_HEADER_KIND, "X-CSRF-Token");
  r.cookie_token = value(c, MHD_COOKIE_KIND, "tm_token");
  r.cookie_csrf = value(c, MHD_COOKIE_KIND, "tm_csrf");
  HttpServer::Response a;
  try {
    a = static_cast<HttpServer*>(cls)->handle(r);
  } catch (const std::exception&) {
    const auto e = json_error(500, "internal error");
    a.status = e.status;
    a.body = e.body;
  }
  MHD_Response* m = MHD_create_response_from_buffer(a.body.size(), a.body.data(), MHD_RESPMEM_MUST_COPY);
  if (!m) return MHD_NO;
  MHD_add_response_header(m, "Content-Type", a.content_type.c_str());
  MHD_add_response_header(m, "Cache-Control", "no-store");
  MHD_add_response_header(m, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(m, "Referrer-Policy", "no-referrer");
  MHD_add_response_header(m, "X-Frame-Options", "DENY");
  for (const auto& [k, v] : a.headers) MHD_add_response_header(m, k.c_str(), v.c_str());
  const MHD_Result queued = MHD_queue_response(c, static_cast<unsigned>(a.status), m);
  MHD_destroy_response(m);
  return queued;
}

}  // namespace

HttpServer::HttpServer(Options options) : options_(std::move(options)), csrf_(options_.secrets ? options_.secrets->csrf : random_hex()) {
  const auto& e = options_.endpoint;
  const int listen_fd = listen_on(e, &port_);
  if (listen_fd < 0)
    throw std::runtime_error("--http " + url_host(e.host) + ":" + std::to_string(e.port) +
                             ": cannot listen there (the address is in use, or not one of this host's)");
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL;
  if (e.host.find(':') != std::string::npos) flags |= MHD_USE_IPv6;
  daemon_ = event_fd_ < 0 ? nullptr
                          : MHD_start_daemon(flags, 0, nullptr, nullptr, &on_request, this, MHD_OPTION_LISTEN_SOCKET, listen_fd,
                                             MHD_OPTION_THREAD_POOL_SIZE, kPollingThreads, MHD_OPTION_CONNECTION_LIMIT, kMaxConnections,
                                             MHD_OPTION_PER_IP_CONNECTION_LIMIT, kMaxPerAddress, MHD_OPTION_CONNECTION_TIMEOUT,
                                             kIdleSeconds, MHD_OPTION_CONNECTION_MEMORY_LIMIT, kConnectionMemory, MHD_OPTION_END);
  if (!daemon_) {
    ::close(listen_fd);
    if (event_fd_ >= 0) ::close(event_fd_);
    throw std::runtime_error("--http: cannot start the HTTP server (libmicrohttpd)");
  }
}

HttpServer::~HttpServer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& p : pending_) p->answer.set_value(json_error(503, "the master is stopping"));
    pending_.clear();
  }
  MHD_stop_daemon(daemon_);  // waits for its threads; closes the listening socket
  ::close(event_fd_);
}

std::string HttpServer::url() const { return "http://" + url_host(options_.endpoint.host) + ":" + std::to_string(port_); }

std::string HttpServer::login_url() const {
  if (!options_.secrets) return url() + "/";
  return url() + "/login?token=" + options_.secrets->token;
}

std::vector<std::unique_ptr<HttpServer::Pending>> HttpServer::take() {
  std::uint64_t n;
  while (::read(event_fd_, &n, sizeof n) > 0) {
  }
  std::lock_guard lock(mutex_);
  return std::exchange(pending_, {});
}

HttpAnswer HttpServer::ask_loop(HttpQuery q) {
  auto p = std::make_unique<Pending>();
  p->query = std::move(q);
  auto answer = p->answer.get_future();
  auto state = p->state;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return json_error(503, "the master is stopping");
    pending_.push_back(std::move(p));
  }
  const std::uint64_t one = 1;
  (void)!::write(event_fd_, &one, sizeof one);
  if (answer.wait_for(kLoopAnswerTimeout) != std::future_status::ready) {
    int expected = Pending::kWaiting;
    if (state->compare_exchange_strong(expected, Pending::kAbandoned))
      return json_error(503, "the master's loop did not take the request within 10 s; nothing was done; try again");
    // The loop took it: its answer comes once the turn's commit is done.
    if (answer.wait_for(kLoopAnswerTimeout) != std::future_status::ready)
      return json_error(503, "the master's loop took the request but did not answer within 20 s; see the master's log");
  }
  try {
    return answer.get();
  } catch (const std::future_error&) {
    return json_error(503, "the master is stopping");
  }
}

bool HttpServer::has_token(const Request& req, bool* by_cookie) const {
  *by_cookie = false;
  if (!options_.secrets) return true;
  const std::string& token = options_.secrets->token;
  constexpr std::string_view kBearer = "Bearer ";
  const std::string& auth = req.authorization;
  if (auth.size() > kBearer.size() && std::string_view(auth).substr(0, kBearer.size()) == kBearer)
    return equal_secret(std::string_view(auth).substr(kBearer.size()), token);
  if (equal_secret(req.cookie_token, token)) {
    *by_cookie = true;
    return true;
  }
  return false;
}

bool HttpServer::host_allowed(const std::string& host_header) const {
  if (options_.secrets && !options_.is_public) return true;  // the token is the guard
  std::string host = host_header;
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.find(']') - 1);
  else if (auto colon = host.rfind(':'); colon != std::string::npos) host = host.substr(0, colon);
  if (host.empty() || host == "localhost" || host == options_.endpoint.host) return true;
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buf) == 1 || ::inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

std::optional<HttpAnswer> HttpServer::refuse(const Request& req, bool writes) const {
  bool by_cookie = false;
  const bool token = has_token(req, &by_cookie);
  if (!token && (writes || !options_.is_public))
    return json_error(401, options_.secrets ? "no valid token: send Authorization: Bearer TOKEN, or log in with the link the master printed"
                                            : "no valid token");
  if (!writes) return std::nullopt;
  // A change asked with a cookie (a browser): a page of another origin must not be able to ask it.
  if (by_cookie || !options_.secrets) {
    if (!req.origin.empty() && req.origin != "http://" + req.host)
      return json_error(403, "CSRF check failed: the request comes from another origin (" + req.origin.substr(0, 100) + ")");
    if (!equal_secret(req.csrf_header, csrf_))
      return json_error(403, "CSRF check failed: X-CSRF-Token must carry the tm_csrf cookie's value");
  }
  return std::nullopt;
}

HttpServer::Response HttpServer::handle(const Request& req) {
  Response res;
  const auto send = [&res](const HttpAnswer& a) {
    res.status = a.status;
    res.body = a.body;
    res.content_type = a.content_type;
    return res;
  };
  const bool is_get = req.method == "GET" || req.method == "HEAD";
  const std::string cookie_attrs = "; Path=/; SameSite=Strict";
  if (!host_allowed(req.host))
    return send(json_error(421, "Host " + req.host.substr(0, 100) + " is not this master's: use its address or localhost"));
  if (req.path == "/login") {
    if (!is_get) return send(json_error(405, req.method.substr(0, 20) + " /login: only GET"));
    const auto param = [&](const char* k) {
      auto it = req.params.find(k);
      return it == req.params.end() ? std::string() : it->second;
    };
    if (options_.secrets && !equal_secret(param("token"), options_.secrets->token))
      return send(json_error(401, "wrong token: use the link the master printed, or run taskmaster dashboard"));
    if (options_.secrets) res.headers.emplace_back("Set-Cookie", "tm_token=" + options_.secrets->token + cookie_attrs + "; HttpOnly");
    res.headers.emplace_back("Set-Cookie", "tm_csrf=" + csrf_ + cookie_attrs);
    std::string to = "/";
    const std::string job = param("job");
    if (!job.empty() && job.size() < 17 && job.find_first_not_of("0123456789") == std::string::npos) to += "?job=" + job;
    res.status = 303;
    res.headers.emplace_back("Location", to);
    res.content_type = "text/plain";
    return res;
  }
  if (req.path == "/" || req.path == "/index.html") {
    if (!is_get) return send(json_error(405, req.method.substr(0, 20) + " /: only GET"));
    bool by_cookie = false;
    res.content_type = "text/html; charset=utf-8";
    if (!has_token(req, &by_cookie) && !options_.is_public) {
      res.status = 401;
      res.body = kLoginPage;
      return res;
    }
    if (req.cookie_csrf != csrf_) res.headers.emplace_back("Set-Cookie", "tm_csrf=" + csrf_ + cookie_attrs);
    res.headers.emplace_back("Content-Security-Policy",
                             "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; "
                             "frame-ancestors 'none'");
    res.body = std::string(kDashboardHtml);
    return res;
  }
  if (req.path != "/metrics" && req.path.rfind("/api/", 0) != 0) return send(json_error(404, "no such path: " + req.path.substr(0, 100)));
  if (!is_get && req.method != "POST") return send(json_error(405, req.method.substr(0, 20) + ": only GET and POST"));
  if (auto no = refuse(req, !is_get)) return send(*no);
  HttpQuery q;
  q.method = is_get ? "GET" : "POST";
  q.path = req.path;
  q.params = req.params;
  return send(ask_loop(std::move(q)));
}

}  // namespace taskmaster
