# taskmaster in a container: one image for the master, workers and the CLI (see compose.yaml).
FROM debian:12 AS build
COPY scripts/setup.sh /src/scripts/setup.sh
RUN bash /src/scripts/setup.sh
COPY . /src
RUN cmake -S /src -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
 && cmake --build /build --target taskmaster

FROM debian:12
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libzmq5 libsodium23 libsqlite3-0 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/cli/taskmaster /usr/local/bin/taskmaster
ENTRYPOINT ["taskmaster"]
