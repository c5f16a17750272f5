// Package k8s checks the Kubernetes manifests under deploy/k8s: every
// overlay renders with kustomize, every object decodes strictly into its
// Kubernetes type, and the objects agree with each other and with the
// node's configuration (see check_test.go for the rules).
package k8s

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ration/ration/test/k8s/manifest"
)

// overlays lists every overlay with what is expected of it; an overlay
// directory missing here fails the test, so a new one gets a decision.
var overlays = map[string]expect{
	"dev":  {},
	"prod": {requiredAntiAffinity: true, placeholderGossipKey: true},
}

// checkDir renders dir and runs every rule; a render or decode error is
// a problem like any other.
func checkDir(dir string, exp expect) []string {
	set, err := manifest.Render(dir)
	if err != nil {
		return []string{err.Error()}
	}
	return check(set, exp)
}

func TestOverlays(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join(manifest.DeployDir(), "overlays", "*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no overlays under %s: %v", manifest.DeployDir(), err)
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			exp, ok := overlays[name]
			if !ok {
				t.Fatalf("overlay %s has no entry in the overlays table of %s", name, "manifests_test.go")
			}
			for _, p := range checkDir(dir, exp) {
				t.Error(p)
			}
		})
	}
}

// The optional ServiceMonitor component, added to (a copy of) the prod
// overlay the way its kustomization.yaml says to.
func TestServiceMonitorComponent(t *testing.T) {
	root := copyTree(t, manifest.DeployDir())
	file := filepath.Join(root, "overlays", "prod", "kustomization.yaml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	const components = "components:\n"
	if !strings.Contains(string(b), components) {
		t.Fatalf("%s has no components list to add to", file)
	}
	b = []byte(strings.Replace(string(b), components, components+"  - ../../components/servicemonitor\n", 1))
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := manifest.Render(filepath.Dir(file))
	if err != nil {
		t.Fatal(err)
	}
	if len(set.ServiceMonitors) != 1 {
		t.Fatalf("want 1 ServiceMonitor, got %d", len(set.ServiceMonitors))
	}
	for _, p := range check(set, overlays["prod"]) {
		t.Error(p)
	}
}

// The checks must fail on broken manifests: each case breaks one thing in
// a copy of deploy/k8s and wants a problem that names it.
func TestChecksCatchBrokenManifests(t *testing.T) {
	const sts = "base/statefulset.yaml"
	for _, tc := range []struct {
		name      string
		overlay   string
		file      string
		old, new  string
		wantFound string
	}{
		{"readiness probe on an undeclared port", "dev", sts,
			"path: /readyz\n              port: http", "path: /readyz\n              port: metrics",
			"readinessProbe port metrics is not a port the container declares"},
		{"Service targetPort typo", "dev", "base/services.yaml",
			"targetPort: raft", "targetPort: rafts", "targetPort rafts"},
		{"unknown flag", "dev", sts,
			"--bootstrap-expect=3", "--bootstrap-expected=3", "unknown flag --bootstrap-expected"},
		{"unknown variable in the ConfigMap", "dev", "base/config.env",
			"RATION_REPLICAS=3", "RATION_REPLICA=3", "unknown environment variable RATION_REPLICA "},
		{"misspelt variable in an overlay literal", "dev", "overlays/dev/kustomization.yaml",
			"RATION_LOG_FORMAT=text", "RATION_LOGFORMAT=text", "RATION_LOGFORMAT"},
		{"bad value in the ConfigMap", "prod", "base/config.env",
			"RATION_DEAD_NODE_GRACE=30s", "RATION_DEAD_NODE_GRACE=30", "RATION_DEAD_NODE_GRACE: not a duration"},
		{"setting given as flag and variable", "dev", "base/config.env",
			"RATION_REPLICAS=3", "RATION_REPLICAS=3\nRATION_DATA_DIR=/data", "--data-dir is set twice"},
		{"node listens on another port than the container declares", "dev", "base/config.env",
			"RATION_HTTP_PORT=8080", "RATION_HTTP_PORT=8081", `container port "http" is 8080 but the node listens on --http-port 8081`},
		{"headless Service hides unready pods", "dev", "base/services.yaml",
			"publishNotReadyAddresses: true", "publishNotReadyAddresses: false", "publishNotReadyAddresses must be true"},
		{"unknown field fails the strict decode", "dev", "base/services.yaml",
			"publishNotReadyAddresses: true", "publishNotReadyAddress: true", `unknown field "publishNotReadyAddress"`},
		{"PDB selects other pods", "prod", "base/poddisruptionbudget.yaml",
			"matchLabels:\n      app.kubernetes.io/name: ration\n      app.kubernetes.io/instance: ration",
			"matchLabels:\n      app.kubernetes.io/name: ration\n      app.kubernetes.io/instance: other",
			"no PodDisruptionBudget selects"},
		{"writable root filesystem", "dev", sts,
			"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "readOnlyRootFilesystem must be true"},
		{"capabilities not dropped", "dev", sts,
			"drop:\n                - ALL", "drop:\n                - NET_RAW", "capabilities must drop ALL"},
		{"advertising a DNS name, not the pod IP", "dev", sts,
			"valueFrom:\n                fieldRef:\n                  fieldPath: status.podIP", "value: $(RATION_NODE_ID).ration-peers",
			"want its pod IP"},
		{"advertising the host IP", "dev", sts,
			"fieldPath: status.podIP", "fieldPath: status.hostIP", `fieldRef "status.hostIP" is not emulated`},
		{"advertise host missing", "dev", sts,
			"            - name: RATION_ADVERTISE_HOST\n              valueFrom:\n                fieldRef:\n                  fieldPath: status.podIP\n", "",
			"--advertise-host: required when --bind-host is the wildcard"},
		{"node id not the pod name", "dev", sts,
			"fieldPath: metadata.name", "fieldPath: spec.nodeName", `fieldRef "spec.nodeName" is not emulated`},
		{"service links on", "dev", sts,
			"enableServiceLinks: false", "enableServiceLinks: true", "enableServiceLinks must be false"},
		{"replicas differ from bootstrap-expect", "dev", sts,
			"replicas: 3", "replicas: 5", "--bootstrap-expect 3 differs from replicas 5"},
		{"OrderedReady never forms", "dev", sts,
			"podManagementPolicy: Parallel", "podManagementPolicy: OrderedReady", "podManagementPolicy must be Parallel"},
		{"join names no headless Service", "dev", sts,
			"--join=ration-peers", "--join=ration-peer", `--join seed "ration-peer:7946" is not the headless Service`},
		{"prod anti-affinity only preferred", "prod", "overlays/prod/statefulset-patch.yaml",
			"requiredDuringSchedulingIgnoredDuringExecution:\n            - topologyKey: kubernetes.io/hostname",
			"requiredDuringSchedulingIgnoredDuringExecution:\n            - topologyKey: kubernetes.io/os",
			"needs a required pod anti-affinity"},
		{"scrape annotation on the wrong port", "dev", sts,
			`prometheus.io/port: "8080"`, `prometheus.io/port: "9999"`, "prometheus.io/port is \"9999\""},
		{"shutdown longer than the grace period", "dev", sts,
			"--shutdown-timeout=45s", "--shutdown-timeout=58s", "must be below terminationGracePeriodSeconds"},
		{"data dir off the volume", "dev", sts,
			"- name: data\n              mountPath: /data", "- name: data\n              mountPath: /var/lib/ration",
			`--data-dir "/data" is not on a writable volumeClaimTemplate mount`},
		{"network policy drops raft", "dev", "base/networkpolicy.yaml",
			"        - port: raft\n          protocol: TCP\n", "", "not admitted on raft/TCP"},
		{"network policy drops actor traffic", "dev", "base/networkpolicy.yaml",
			"        - port: actor\n          protocol: TCP\n", "", "not admitted on actor/TCP"},
		{"actor port is not the one after raft", "dev", sts,
			"name: actor\n              containerPort: 7001", "name: actor\n              containerPort: 7002",
			`container port "actor" is 7002 but the node listens on --raft-port + 1 7001`},
		{"network policy opens gossip to all", "dev", "base/networkpolicy.yaml",
			"    # Prometheus, from the namespace labelled for monitoring.\n", "    - ports:\n        - port: gossip\n",
			"port gossip/TCP is open to pods that are neither peers nor declared clients"},
		{"a usable gossip key committed for prod", "prod", "overlays/prod/secrets/gossip.env",
			"REPLACE_ME_with_base64_of_32_random_bytes", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "meant to be a placeholder"},
		{"missing Secret", "dev", "overlays/dev/kustomization.yaml",
			"- name: ration-gossip\n", "- name: ration-gossip-dev\n", "secretKeyRef ration-gossip/RATION_GOSSIP_KEY not found"},
		{"probe over plain HTTP with TLS on", "prod", "components/tls/kustomization.yaml",
			"                readinessProbe:\n                  httpGet:\n                    scheme: HTTPS\n", "",
			"readinessProbe scheme HTTP, but the node serves HTTPS"},
		{"scrapes over plain HTTP with TLS on", "prod", "components/tls/kustomization.yaml",
			`prometheus.io/scheme: "https"`, `prometheus.io/scheme: "http"`, `prometheus.io/scheme is "http", want "https"`},
		{"TLS files off the mount", "prod", "components/tls/kustomization.yaml",
			"value: /etc/ration/tls/tls.key", "value: /etc/tls.key", `--tls-key "/etc/tls.key" is not on a read-only volume mount`},
		{"latest image", "prod", "overlays/prod/kustomization.yaml",
			"newTag: v0.1.0", "newTag: latest", "needs an explicit tag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := copyTree(t, manifest.DeployDir())
			file := filepath.Join(root, tc.file)
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(string(b), tc.old); n != 1 {
				t.Fatalf("the text to break occurs %d times in %s, want once: %q", n, tc.file, tc.old)
			}
			if err := os.WriteFile(file, []byte(strings.Replace(string(b), tc.old, tc.new, 1)), 0o644); err != nil {
				t.Fatal(err)
			}
			problems := checkDir(filepath.Join(root, "overlays", tc.overlay), overlays[tc.overlay])
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.wantFound) }) {
				t.Errorf("no problem mentions %q; problems:\n%s", tc.wantFound, strings.Join(problems, "\n"))
			}
		})
	}
}

// copyTree copies deploy/k8s into a temporary directory.
func copyTree(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "k8s")
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	return dst
}
