// Package docker runs the ration:dev image as the dev overlay's StatefulSet
// would run it: three containers on a private Docker network, each with the
// arguments and environment the rendered manifests give its pod, a volume
// for /data, and the pod's security settings (read-only root, no
// capabilities, the non-root user, the memory and CPU limits). It then
// kills, restarts, rolls and reschedules the nodes under client load and
// checks that no acknowledged write is lost.
//
// The tests need a Docker engine and the image, so they skip unless
// RATION_DOCKER_TEST=1; `make docker-test` builds the image and sets it.
// RATION_IMAGE names another image.
//
// What Docker stands in for: the pod IP is a static address on the
// network; the headless Service's DNS names (the service name for --join,
// and <pod>.<service> for each pod) are network aliases, which Docker's
// resolver answers only while the container runs, as publishNotReadyAddresses
// answers only for pods that exist; docker stop -t is the termination grace
// period. Not emulated: probes (the test polls /readyz itself), the preStop
// pause, NetworkPolicy and the Service's load balancing (clients spread
// requests over the nodes themselves).
package docker
