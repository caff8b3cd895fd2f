# syntax=docker/dockerfile:1
#
# Sluice in a container: `sluice serve` over the flows in /etc/sluice/flows.
#
#   docker build -t sluice .
#   docker run --rm -e SLUICE_DATABASE_URL=postgres://… -e GRAPH_CLIENT_SECRET=… sluice
#
# Stage 1 builds the built-in components (wasm32-wasip2, by the builtins
# crate's build script) and the host; stage 2 is a small runtime image
# (distroless, glibc, no shell) that runs as an unprivileged user. The
# shipped flows are baked in at /etc/sluice/flows; mount a folder there (a
# ConfigMap in Kubernetes) to serve your own. Configuration comes only from
# environment variables (SLUICE_DATABASE_URL, SLUICE_REPLICA, SLUICE_LEASE,
# the flows' own variables) and files; see README.md, "Running in a
# container".

FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip2
COPY . .
RUN cargo build --release --locked -p sluice \
    && install -D -m 0755 target/release/sluice /out/sluice \
    && install -d -m 0700 /out/data

# The runtime: glibc and CA roots, no shell, no package manager, user 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
COPY --from=build --chown=65532:65532 /out/data /var/lib/sluice
COPY flows /etc/sluice/flows
ENV SLUICE_DATA_DIR=/var/lib/sluice
USER 65532:65532
VOLUME ["/var/lib/sluice"]
# The console and its probes, when serve is given --http 0.0.0.0:8700.
EXPOSE 8700
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve", "/etc/sluice/flows"]
