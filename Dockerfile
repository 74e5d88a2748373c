# gridnode in an empty image. `make image` builds the static binary on the
# host (CGO_ENABLED=0) first, so nothing is pulled or compiled here.
FROM scratch
COPY bin/gridnode /gridnode
# gridctl too, for `docker exec <container> /gridctl status`: it reads
# SHOAL_ADDR below, which then points at the member in the same container.
COPY bin/gridctl /gridctl
# Listen on every interface of the container. The data address announced
# to other members is then the container's private IP (override it with
# SHOAL_ADVERTISE_ADDR, and the gossip one with SHOAL_ADVERTISE).
# Listening beyond loopback needs a cluster key (or TLS): mount one and set
# SHOAL_CLUSTER_KEY_FILE (e.g. -v ./shoal.key:/run/secrets/shoal.key:ro -e
# SHOAL_CLUSTER_KEY_FILE=/run/secrets/shoal.key; create it with
# head -c 32 /dev/urandom | base64). Without one gridnode exits 2, unless
# SHOAL_INSECURE=true says the network is trusted (docs/security.md).
ENV SHOAL_BIND=0.0.0.0:7946 \
    SHOAL_ADDR=0.0.0.0:5701 \
    SHOAL_HTTP=0.0.0.0:8080
# Keep the Go runtime's monitor thread from parking each time the member
# goes idle: waking it again on the next syscall costs a thread switch,
# which on small VMs was the largest single cost of a replicated put
# (docs/benchmarks.md, "The Go runtime's monitor thread"; golang/go#18236).
# A side effect of schedtrace: one scheduler trace line at most every
# 24.8 days, and a scheduler dump on a fatal crash.
ENV GODEBUG=schedtrace=2147483647
EXPOSE 5701/tcp 7946/tcp 7946/udp 8080/tcp
USER 65534:65534
ENTRYPOINT ["/gridnode"]
