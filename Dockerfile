# Ration node image: two static binaries on an empty filesystem.
#
# Build it with `make image`, which compiles bin/image/ration-node and
# bin/image/rationctl with CGO_ENABLED=0 on the host and then runs
# `docker build -t ration:dev .`; .dockerignore keeps everything else out of
# the context. The image starts FROM scratch because no registry is
# reachable to pull a base from, and because a static Go binary needs
# nothing else: no shell, no libc, no CA bundle (the node dials only its
# peers, and TLS between them, once built, uses the CA mounted beside it).
FROM scratch

# /data is the node's state (raft logs and snapshots). It is created here,
# owned by the runtime user, because Docker seeds a new named volume with
# the image's directory and its ownership: a root-owned /data would make
# the volume unwritable for USER 65532. On Kubernetes the PVC mounted there
# is made writable by the pod's fsGroup instead.
COPY --chown=65532:65532 bin/image/data /data
COPY bin/image/ration-node /ration-node
COPY bin/image/rationctl /rationctl

# A numeric user needs no /etc/passwd and lets Kubernetes verify
# runAsNonRoot without guessing what a name maps to.
USER 65532:65532
VOLUME ["/data"]
WORKDIR /data

# http, grpc, gossip (tcp and udp), raft, and node-to-node actor traffic.
EXPOSE 8080/tcp 9090/tcp 7946/tcp 7946/udp 7000/tcp 7001/tcp

# The node's default --data-dir is ./data, relative to the working
# directory; /data is the working directory, so even without --data-dir the
# state lands in the volume (as /data/data). The manifests pass
# --data-dir /data explicitly.
ENTRYPOINT ["/ration-node"]
