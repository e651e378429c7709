# taskmaster in a container: one image for the master, the workers and the CLI (compose.yaml runs
# them; docs/DEPLOY.md says more).
#   docker build -t taskmaster .
#   docker run --rm taskmaster --version

# Build stage: the compiler and the -dev packages only (scripts/setup.sh --build; no test tools).
FROM debian:12-slim AS build
COPY scripts/setup.sh /src/scripts/setup.sh
RUN bash /src/scripts/setup.sh --build
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
 && cmake --build /build --target taskmaster \
 && strip /build/cli/taskmaster

# Runtime stage: the binary, the shared libraries it links, and a user of its own (uid 10001: a key
# file given to the containers must be owned by it, see compose.yaml). /data is the master's journal.
FROM debian:12-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends libzmq5 libsodium23 libsqlite3-0 libmicrohttpd12 libprometheus-cpp-core1.0 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 taskmaster \
 && useradd --uid 10001 --gid 10001 --no-log-init --create-home --shell /usr/sbin/nologin taskmaster \
 && install -d -o 10001 -g 10001 -m 0700 /data
COPY --from=build /build/cli/taskmaster /usr/local/bin/taskmaster
# Fails the build here, not at the first start, if a library is missing.
RUN taskmaster --version
USER 10001:10001
WORKDIR /data
EXPOSE 5555
# No HEALTHCHECK here: the same image runs workers and one-shot CLI commands, which have no master
# on 127.0.0.1 to ask. The master's service gets one ("taskmaster health") in compose.yaml.
ENTRYPOINT ["taskmaster"]
CMD ["master", "--bind", "tcp://0.0.0.0:5555", "--data-dir", "/data"]
