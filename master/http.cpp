#include "master/http.h"

#include <sodium.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <stdexcept>

#include <httplib.h>

#include "common/log.h"

namespace taskmaster {

extern const std::string_view kDashboardHtml;  // master/dashboard/index.html, embedded by CMake

namespace {

constexpr auto kLoopAnswerTimeout = std::chrono::seconds(10);
constexpr std::size_t kMaxBody = 4096;  // POSTs carry nothing; a body is never read
constexpr std::size_t kThreads = 16;

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

// The value of one cookie in the Cookie header, or "".
std::string cookie(const httplib::Request& req, std::string_view name) {
  const std::string header = req.get_header_value("Cookie");
  std::string_view rest = header;
  while (!rest.empty()) {
    auto semi = rest.find(';');
    std::string_view part = rest.substr(0, semi);
    rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=')
      return std::string(part.substr(name.size() + 1));
  }
  return {};
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

HttpServer::HttpServer(Options options)
    : options_(std::move(options)),
      csrf_(options_.secrets ? options_.secrets->csrf : random_hex()),
      server_(std::make_unique<httplib::Server>()) {
  event_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) throw std::runtime_error(std::string("--http: eventfd: ") + std::strerror(errno));
  auto& s = *server_;
  // A connection holds a thread while it is open: enough threads for a few dashboards and scrapers
  // with keep-alive, and a short read timeout, so that silent or slow clients free them soon.
  s.new_task_queue = [] { return new httplib::ThreadPool(kThreads); };
  s.set_payload_max_length(kMaxBody);
  s.set_read_timeout(2, 0);
  s.set_write_timeout(5, 0);
  s.set_keep_alive_timeout(2);
  s.set_keep_alive_max_count(100);
  const auto handler = [this](const httplib::Request& req, httplib::Response& res) { handle(req, res); };
  s.Get(".*", handler);
  // POSTs carry no body. A route with a content reader is called before httplib reads one, so that a
  // POST without Content-Length (`curl -X POST`) is served rather than refused 400; the body, if any,
  // is never read, and the connection closes after the answer.
  s.Post(".*", [this](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader&) {
    res.set_header("Connection", "close");
    handle(req, res);
  });
  s.Put(".*", handler);
  s.Delete(".*", handler);
  s.Patch(".*", handler);
  s.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
    const auto a = json_error(500, "internal error");
    res.status = a.status;
    res.set_content(a.body, a.content_type);
  });
  const auto& e = options_.endpoint;
  port_ = e.port == 0 ? s.bind_to_any_port(e.host) : (s.bind_to_port(e.host, e.port) ? e.port : -1);
  if (port_ <= 0) {
    ::close(event_fd_);
    throw std::runtime_error("--http " + url_host(e.host) + ":" + std::to_string(e.port) +
                             ": cannot listen there (the address is in use, or not one of this host's)");
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
}

HttpServer::~HttpServer() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto& p : pending_) p->answer.set_value(json_error(503, "the master is stopping"));
    pending_.clear();
  }
  server_->stop();
  if (thread_.joinable()) thread_.join();
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
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return json_error(503, "the master is stopping");
    pending_.push_back(std::move(p));
  }
  const std::uint64_t one = 1;
  (void)!::write(event_fd_, &one, sizeof one);
  if (answer.wait_for(kLoopAnswerTimeout) != std::future_status::ready)
    return json_error(503, "the master's loop did not answer within 10 s; try again");
  try {
    return answer.get();
  } catch (const std::future_error&) {
    return json_error(503, "the master is stopping");
  }
}

bool HttpServer::has_token(const httplib::Request& req, bool* by_cookie) const {
  *by_cookie = false;
  if (!options_.secrets) return true;
  const std::string& token = options_.secrets->token;
  const std::string auth = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (auth.size() > kBearer.size() && std::string_view(auth).substr(0, kBearer.size()) == kBearer)
    return equal_secret(std::string_view(auth).substr(kBearer.size()), token);
  if (equal_secret(cookie(req, "tm_token"), token)) {
    *by_cookie = true;
    return true;
  }
  return false;
}

std::optional<HttpAnswer> HttpServer::refuse(const httplib::Request& req, bool writes) const {
  bool by_cookie = false;
  const bool token = has_token(req, &by_cookie);
  if (!token && (writes || !options_.is_public))
    return json_error(401, options_.secrets ? "no valid token: send Authorization: Bearer TOKEN, or log in with the link the master printed"
                                            : "no valid token");
  if (!writes) return std::nullopt;
  // A change asked with a cookie (a browser): a page of another origin must not be able to ask it.
  if (by_cookie || !options_.secrets) {
    const std::string origin = req.get_header_value("Origin");
    if (!origin.empty() && origin != "http://" + req.get_header_value("Host"))
      return json_error(403, "CSRF check failed: the request comes from another origin (" + origin.substr(0, 100) + ")");
    if (!equal_secret(req.get_header_value("X-CSRF-Token"), csrf_))
      return json_error(403, "CSRF check failed: X-CSRF-Token must carry the tm_csrf cookie's value");
  }
  return std::nullopt;
}

void HttpServer::handle(const httplib::Request& req, httplib::Response& res) {
  res.set_header("Cache-Control", "no-store");
  res.set_header("X-Content-Type-Options", "nosniff");
  res.set_header("Referrer-Policy", "no-referrer");
  res.set_header("X-Frame-Options", "DENY");
  const auto send = [&res](const HttpAnswer& a) {
    res.status = a.status;
    res.set_content(a.body, a.content_type);
  };
  const bool is_get = req.method == "GET" || req.method == "HEAD";
  const std::string cookie_attrs = "; Path=/; SameSite=Strict";
  if (req.path == "/login") {
    if (!is_get) return send(json_error(405, req.method + " /login: only GET"));
    if (options_.secrets && !equal_secret(req.get_param_value("token"), options_.secrets->token))
      return send(json_error(401, "wrong token: use the link the master printed, or run taskmaster dashboard"));
    if (options_.secrets) res.set_header("Set-Cookie", "tm_token=" + options_.secrets->token + cookie_attrs + "; HttpOnly");
    res.set_header("Set-Cookie", "tm_csrf=" + csrf_ + cookie_attrs);
    std::string to = "/";
    const std::string job = req.get_param_value("job");
    if (!job.empty() && job.size() < 17 && job.find_first_not_of("0123456789") == std::string::npos) to += "?job=" + job;
    res.status = 303;
    res.set_header("Location", to);
    return;
  }
  if (req.path == "/" || req.path == "/index.html") {
    if (!is_get) return send(json_error(405, req.method + " /: only GET"));
    bool by_cookie = false;
    if (!has_token(req, &by_cookie) && !options_.is_public) {
      res.status = 401;
      return res.set_content(kLoginPage, "text/html; charset=utf-8");
    }
    if (cookie(req, "tm_csrf") != csrf_) res.set_header("Set-Cookie", "tm_csrf=" + csrf_ + cookie_attrs);
    res.set_header(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'");
    return res.set_content(std::string(kDashboardHtml), "text/html; charset=utf-8");
  }
  if (req.path != "/metrics" && req.path.rfind("/api/", 0) != 0) return send(json_error(404, "no such path: " + req.path.substr(0, 100)));
  if (!is_get && req.method != "POST") return send(json_error(405, req.method + ": only GET and POST"));
  if (auto no = refuse(req, !is_get)) return send(*no);
  HttpQuery q;
  q.method = is_get ? "GET" : "POST";
  q.path = req.path;
  for (const auto& [k, v] : req.params) q.params.emplace(k, v);
  send(ask_loop(std::move(q)));
}

}  // namespace taskmaster
