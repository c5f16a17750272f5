package docker

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/ration/ration/config"
	"github.com/ration/ration/test/k8s/manifest"
)

// docker runs the docker CLI and returns its trimmed stdout.
func docker(args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func mustDocker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// podTemplate is what the test takes from the rendered dev overlay.
type podTemplate struct {
	set       *manifest.Set
	sts       *appsv1.StatefulSet
	container *corev1.Container
	namespace string
	dataMount string
	minReady  time.Duration
}

// loadTemplate renders the dev overlay and picks out the ration container.
func loadTemplate(t *testing.T) *podTemplate {
	t.Helper()
	dir := filepath.Join(manifest.DeployDir(), "overlays", "dev")
	set, err := manifest.Render(dir)
	if err != nil {
		t.Fatal(err)
	}
	sts, err := set.StatefulSet("ration")
	if err != nil {
		t.Fatal(err)
	}
	c, err := manifest.Container(sts, "ration")
	if err != nil {
		t.Fatal(err)
	}
	p := &podTemplate{set: set, sts: sts, container: c, namespace: sts.Namespace,
		minReady: time.Duration(sts.Spec.MinReadySeconds) * time.Second}
	for _, m := range c.VolumeMounts {
		for _, vct := range sts.Spec.VolumeClaimTemplates {
			if vct.Name == m.Name {
				p.dataMount = m.MountPath
			}
		}
	}
	if p.dataMount == "" {
		t.Fatal("the container mounts no volumeClaimTemplate")
	}
	return p
}

// node is one container standing in for one pod.
type node struct {
	name   string // container name = pod name = node id
	volume string

	mu   sync.Mutex
	ip   string
	cfg  *config.Config
	runs int
}

// currentIP is the address the node's container has now.
func (n *node) currentIP() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ip
}

func (n *node) addr(port int) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return net.JoinHostPort(n.ip, strconv.Itoa(port))
}

// cluster is the StatefulSet's pods as containers on one network.
type cluster struct {
	t       *testing.T
	image   string
	tmpl    *podTemplate
	network string
	prefix  netip.Prefix
	nextIP  int
	nodes   []*node
}

// newCluster creates the network and volumes (removed when the test ends,
// whatever happens) but starts nothing.
func newCluster(t *testing.T, image string, tmpl *podTemplate) *cluster {
	t.Helper()
	var b [3]byte
	_, _ = rand.Read(b[:])
	run := hex.EncodeToString(b[:])
	c := &cluster{t: t, image: image, tmpl: tmpl, network: "ration-test-" + run, nextIP: 10}
	c.createNetwork()
	replicas := 3
	if r := tmpl.sts.Spec.Replicas; r != nil {
		replicas = int(*r)
	}
	for i := range replicas {
		n := &node{name: fmt.Sprintf("%s-%s-%d", tmpl.sts.Name, run, i), volume: fmt.Sprintf("ration-test-%s-data-%d", run, i)}
		mustDocker(t, "volume", "create", n.volume)
		t.Cleanup(func() {
			if _, err := docker("volume", "rm", "-f", n.volume); err != nil {
				t.Logf("cleanup: %v", err)
			}
		})
		c.nodes = append(c.nodes, n)
	}
	// Registered last, so it runs first: containers go before the volumes
	// and the network they use.
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if t.Failed() {
				logs, _ := exec.Command("docker", "logs", "--tail", "40", n.name).CombinedOutput()
				t.Logf("logs of %s:\n%s", n.name, logs)
			}
			_, _ = docker("rm", "-f", n.name)
		}
	})
	return c
}

// createNetwork makes a private bridge network on the first free subnet
// of a few candidates, so a busy host's existing networks do not collide.
func (c *cluster) createNetwork() {
	t := c.t
	var lastErr error
	for i := 0; i < 20; i++ {
		var b [1]byte
		_, _ = rand.Read(b[:])
		prefix := netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", b[0]))
		_, err := docker("network", "create", "--driver", "bridge", "--subnet", prefix.String(), c.network)
		if err == nil {
			c.prefix = prefix
			t.Cleanup(func() {
				if _, err := docker("network", "rm", c.network); err != nil {
					t.Logf("cleanup: %v", err)
				}
			})
			return
		}
		lastErr = err
	}
	t.Fatalf("no free subnet for the test network: %v", lastErr)
}

// allocIP hands out the next static address: the "pod IP".
func (c *cluster) allocIP() string {
	a := c.prefix.Addr().As4()
	a[3] = byte(c.nextIP)
	c.nextIP++
	return netip.AddrFrom4(a).String()
}

// dnsNames are the names the headless Service gives: the service itself
// (every pod) and <pod>.<service> (one pod), each also qualified by the
// namespace and cluster domain as a pod's resolver search path would be.
func (c *cluster) dnsNames(pod string) (service, own []string) {
	svc, ns := c.tmpl.sts.Spec.ServiceName, c.tmpl.namespace
	for _, suffix := range []string{"", "." + ns, "." + ns + ".svc", "." + ns + ".svc.cluster.local"} {
		service = append(service, svc+suffix)
		own = append(own, pod+"."+svc+suffix)
	}
	return service, own
}

// runtime resolves the pod's arguments and environment from the render
// and checks them with the node's own config loader.
func (c *cluster) runtime(n *node, ip string) (*manifest.Runtime, *config.Config) {
	t := c.t
	rt, err := c.tmpl.set.Resolve(c.tmpl.sts, c.tmpl.container, manifest.Pod{Name: n.name, Namespace: c.tmpl.namespace, IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(rt.Args, rt.Environ())
	if err != nil {
		t.Fatalf("the rendered dev pod's configuration is refused:\n%v", err)
	}
	// Every name the node dials must be one Docker can answer, or the
	// emulation is not the deployment.
	service, own := c.dnsNames(n.name)
	known := func(host string) bool {
		_, err := netip.ParseAddr(host)
		return err == nil || slices.Contains(service, host) || slices.Contains(own, host)
	}
	if !known(cfg.AdvertiseHost) {
		t.Fatalf("advertise host %q is neither an IP nor a name of the headless Service", cfg.AdvertiseHost)
	}
	for _, j := range cfg.JoinAddrs() {
		host, _, _ := net.SplitHostPort(j)
		if !known(host) {
			t.Fatalf("join seed %q is neither an IP nor a name of the headless Service", j)
		}
	}
	return rt, cfg
}

// run starts n's container on ip, as the kubelet would start the pod:
// same image, arguments, environment, volume, user, read-only root,
// capabilities and limits.
func (c *cluster) run(n *node, ip string) {
	t := c.t
	rt, cfg := c.runtime(n, ip)
	tmpl := c.tmpl
	args := []string{"run", "-d", "--name", n.name, "--hostname", n.name,
		"--network", c.network, "--ip", ip}
	service, own := c.dnsNames(n.name)
	for _, a := range append(service, own...) {
		args = append(args, "--network-alias", a)
	}
	args = append(args, "-v", n.volume+":"+tmpl.dataMount)
	args = append(args, securityArgs(tmpl.sts.Spec.Template.Spec.SecurityContext, tmpl.container.SecurityContext)...)
	if q, ok := tmpl.container.Resources.Limits[corev1.ResourceMemory]; ok {
		args = append(args, "--memory", strconv.FormatInt(q.Value(), 10)+"b")
	}
	if q, ok := tmpl.container.Resources.Limits[corev1.ResourceCPU]; ok {
		args = append(args, "--cpus", strconv.FormatFloat(q.AsApproximateFloat64(), 'f', 3, 64))
	}
	// An env file keeps the gossip key out of the host's process list.
	envFile := filepath.Join(t.TempDir(), "env")
	var env bytes.Buffer
	for _, kv := range rt.Environ() {
		if strings.ContainsAny(kv, "\n\r") {
			t.Fatalf("env %q: a multi-line value cannot be passed to docker run", strings.SplitN(kv, "=", 2)[0])
		}
		env.WriteString(kv + "\n")
	}
	if err := os.WriteFile(envFile, env.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	args = append(args, "--env-file", envFile, c.image)
	args = append(args, rt.Args...)
	mustDocker(t, args...)
	n.mu.Lock()
	n.ip, n.cfg = ip, cfg
	n.runs++
	n.mu.Unlock()
}

// securityArgs maps the pod's and container's securityContext to docker
// run options; the container's settings win, as in Kubernetes.
func securityArgs(pod *corev1.PodSecurityContext, ctr *corev1.SecurityContext) []string {
	var user, group *int64
	if pod != nil {
		user, group = pod.RunAsUser, pod.RunAsGroup
	}
	var out []string
	if ctr != nil {
		if ctr.RunAsUser != nil {
			user = ctr.RunAsUser
		}
		if ctr.RunAsGroup != nil {
			group = ctr.RunAsGroup
		}
		if ctr.ReadOnlyRootFilesystem != nil && *ctr.ReadOnlyRootFilesystem {
			out = append(out, "--read-only")
		}
		if ctr.AllowPrivilegeEscalation != nil && !*ctr.AllowPrivilegeEscalation {
			out = append(out, "--security-opt", "no-new-privileges")
		}
		if ctr.Capabilities != nil {
			for _, c := range ctr.Capabilities.Drop {
				out = append(out, "--cap-drop", string(c))
			}
			for _, c := range ctr.Capabilities.Add {
				out = append(out, "--cap-add", string(c))
			}
		}
	}
	if user != nil {
		u := strconv.FormatInt(*user, 10)
		if group != nil {
			u += ":" + strconv.FormatInt(*group, 10)
		}
		out = append(out, "--user", u)
	}
	if pod != nil && pod.FSGroup != nil {
		// fsGroup makes the volume group-writable in Kubernetes; in
		// Docker the volume is seeded from the image's /data, owned by
		// the user, and the group is added for parity.
		out = append(out, "--group-add", strconv.FormatInt(*pod.FSGroup, 10))
	}
	return out
}

var probeClient = &http.Client{Timeout: time.Second}

// waitReady polls the node's /readyz until it answers 200, and fails the
// test, with the node's log, if the container exits or timeout passes.
func (c *cluster) waitReady(n *node, timeout time.Duration) {
	t := c.t
	t.Helper()
	n.mu.Lock()
	url := "http://" + net.JoinHostPort(n.ip, strconv.Itoa(n.cfg.HTTPPort)) + "/readyz"
	n.mu.Unlock()
	deadline := time.Now().Add(timeout)
	for i := 0; ; i++ {
		resp, err := probeClient.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if i%20 == 19 {
			if state, _ := docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", n.name); !strings.HasPrefix(state, "running") {
				t.Fatalf("%s is not running (%s) while waiting for it to be ready", n.name, state)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %v", n.name, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exitCode is the container's last exit code.
func exitCode(t *testing.T, name string) int {
	t.Helper()
	out := mustDocker(t, "inspect", "-f", "{{.State.ExitCode}}", name)
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("exit code of %s: %q", name, out)
	}
	return n
}
