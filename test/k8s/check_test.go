package k8s

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"maps"
	"net/netip"
	"path"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ration/ration/config"
	"github.com/ration/ration/test/k8s/manifest"
)

// expect is what differs between overlays on purpose.
type expect struct {
	// requiredAntiAffinity: one pod per host is a hard rule, not a wish.
	requiredAntiAffinity bool
	// placeholderGossipKey: the overlay ships a placeholder key that the
	// node must refuse (so an unconfigured install cannot start with a
	// key anyone can read); the checks substitute a real one after
	// confirming that.
	placeholderGossipKey bool
}

// The user and group of the image (Dockerfile's USER).
const imageUID = 65532

// The node's readiness and liveness endpoints (httpapi).
const (
	readyPath   = "/readyz"
	healthPath  = "/healthz"
	metricsPath = "/metrics"
)

// clientLabel is the label a pod wears to be let in on the APIs.
const clientLabel = "ration-client"

// checker collects every problem with one rendered overlay, so a broken
// manifest reports all it breaks at once.
type checker struct {
	set      *manifest.Set
	exp      expect
	problems []string
}

func (c *checker) addf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// check runs every rule on a rendered overlay.
func check(set *manifest.Set, exp expect) []string {
	c := &checker{set: set, exp: exp}
	if len(set.StatefulSets) == 0 {
		c.addf("no StatefulSet rendered")
	}
	for _, sts := range set.StatefulSets {
		c.statefulSet(sts)
	}
	c.namespaces()
	return c.problems
}

func (c *checker) statefulSet(sts *appsv1.StatefulSet) {
	spec := &sts.Spec.Template.Spec
	podLabels := labels.Set(sts.Spec.Template.Labels)
	where := "StatefulSet " + sts.Name

	if !selects(sts.Spec.Selector, podLabels) {
		c.addf("%s: selector %v does not match the pod template's labels %v", where, sts.Spec.Selector, podLabels)
	}
	replicas := 1
	if sts.Spec.Replicas != nil {
		replicas = int(*sts.Spec.Replicas)
	}
	if spec.EnableServiceLinks == nil || *spec.EnableServiceLinks {
		c.addf("%s: enableServiceLinks must be false: Kubernetes would inject RATION_* variables for the Service named ration", where)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		c.addf("%s: automountServiceAccountToken should be false: the node never calls the Kubernetes API", where)
	}
	c.securityContext(where, spec)
	c.antiAffinity(where, spec, podLabels)

	if len(spec.Containers) != 1 {
		c.addf("%s: want exactly one container, got %d", where, len(spec.Containers))
		return
	}
	ctr := &spec.Containers[0]
	cw := where + " container " + ctr.Name
	c.image(cw, ctr.Image)
	c.containerPorts(cw, ctr)
	c.probes(cw, ctr)
	c.resources(cw, ctr)
	c.volumes(where, sts, ctr)

	cfg := c.nodeConfig(sts, ctr, replicas)
	if cfg == nil {
		return
	}
	c.linkConfig(sts, ctr, cfg, replicas)
	c.services(sts, ctr, cfg)
	c.disruptionBudgets(sts, podLabels)
	c.networkPolicies(sts, ctr, podLabels)
	c.serviceMonitors(sts, ctr)
}

// selects reports whether sel is non-empty and matches set; an empty
// selector selects everything, which is never what is meant here.
func selects(sel *metav1.LabelSelector, set labels.Set) bool {
	if sel == nil || (len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0) {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && s.Matches(set)
}

func selectsMap(sel map[string]string, set labels.Set) bool {
	return len(sel) > 0 && labels.SelectorFromSet(sel).Matches(set)
}

func (c *checker) securityContext(where string, spec *corev1.PodSpec) {
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if psc.FSGroup == nil {
		c.addf("%s: pod securityContext.fsGroup is unset: the data volume would not be writable by the node's group", where)
	}
	for _, ctr := range spec.Containers {
		cw := where + " container " + ctr.Name
		sc := ctr.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		nonRoot := cmp.Or(sc.RunAsNonRoot, psc.RunAsNonRoot)
		if nonRoot == nil || !*nonRoot {
			c.addf("%s: securityContext.runAsNonRoot must be true", cw)
		}
		user := cmp.Or(sc.RunAsUser, psc.RunAsUser)
		if user == nil || *user != imageUID {
			c.addf("%s: securityContext.runAsUser must be %d (the image's user)", cw, imageUID)
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			c.addf("%s: securityContext.readOnlyRootFilesystem must be true", cw)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			c.addf("%s: securityContext.allowPrivilegeEscalation must be false", cw)
		}
		if sc.Privileged != nil && *sc.Privileged {
			c.addf("%s: securityContext.privileged must not be set", cw)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			c.addf("%s: securityContext.capabilities must drop ALL and add none", cw)
		}
		seccomp := cmp.Or(sc.SeccompProfile, psc.SeccompProfile)
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			c.addf("%s: seccompProfile must be RuntimeDefault", cw)
		}
	}
}

// antiAffinity wants a hostname anti-affinity term selecting the
// StatefulSet's own pods: required where exp says so, else at least
// preferred.
func (c *checker) antiAffinity(where string, spec *corev1.PodSpec, podLabels labels.Set) {
	var required, preferred bool
	if a := spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			required = required || term.TopologyKey == corev1.LabelHostname && selects(term.LabelSelector, podLabels)
		}
		for _, w := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			term := w.PodAffinityTerm
			preferred = preferred || term.TopologyKey == corev1.LabelHostname && selects(term.LabelSelector, podLabels)
		}
	}
	switch {
	case c.exp.requiredAntiAffinity && !required:
		c.addf("%s: needs a required pod anti-affinity on %s selecting its own pods", where, corev1.LabelHostname)
	case !required && !preferred:
		c.addf("%s: needs a pod anti-affinity (preferred at least) on %s selecting its own pods", where, corev1.LabelHostname)
	}
}

func (c *checker) image(where, image string) {
	if strings.Contains(image, "@sha256:") {
		return
	}
	slash := strings.LastIndex(image, "/")
	colon := strings.LastIndex(image, ":")
	if colon < slash+1 || strings.HasSuffix(image, ":latest") {
		c.addf("%s: image %q needs an explicit tag (not latest) or digest", where, image)
	}
}

func (c *checker) containerPorts(where string, ctr *corev1.Container) {
	seen := map[string]bool{}
	for _, p := range ctr.Ports {
		switch {
		case p.Name == "":
			c.addf("%s: port %d has no name; Services, probes and policies refer to ports by name", where, p.ContainerPort)
		case len(p.Name) > 15:
			c.addf("%s: port name %q is longer than 15 characters", where, p.Name)
		case seen[p.Name]:
			c.addf("%s: port name %q declared twice", where, p.Name)
		}
		seen[p.Name] = true
	}
}

// findPort resolves a port reference (name or number) with protocol proto
// against the container's declared ports.
func findPort(ctr *corev1.Container, ref intstr.IntOrString, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	proto = cmp.Or(proto, corev1.ProtocolTCP)
	for _, p := range ctr.Ports {
		if cmp.Or(p.Protocol, corev1.ProtocolTCP) != proto {
			continue
		}
		if ref.Type == intstr.String && p.Name == ref.StrVal || ref.Type == intstr.Int && p.ContainerPort == ref.IntVal {
			return p, true
		}
	}
	return corev1.ContainerPort{}, false
}

// namedPort returns the container's port called name with proto.
func namedPort(ctr *corev1.Container, name string, proto corev1.Protocol) (corev1.ContainerPort, bool) {
	return findPort(ctr, intstr.FromString(name), proto)
}

func (c *checker) probes(where string, ctr *corev1.Container) {
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", ctr.ReadinessProbe, readyPath},
		{"livenessProbe", ctr.LivenessProbe, healthPath},
		{"startupProbe", ctr.StartupProbe, healthPath},
	} {
		if pr.probe == nil {
			c.addf("%s: %s is missing", where, pr.name)
			continue
		}
		h := pr.probe.ProbeHandler
		switch {
		case h.HTTPGet != nil:
			if h.HTTPGet.Path != pr.path {
				c.addf("%s: %s path %q, want %q", where, pr.name, h.HTTPGet.Path, pr.path)
			}
			if _, ok := findPort(ctr, h.HTTPGet.Port, corev1.ProtocolTCP); !ok {
				c.addf("%s: %s port %s is not a port the container declares", where, pr.name, h.HTTPGet.Port.String())
			}
		default:
			c.addf("%s: %s must be an httpGet of %s", where, pr.name, pr.path)
		}
	}
}

func (c *checker) resources(where string, ctr *corev1.Container) {
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, okReq := ctr.Resources.Requests[r]
		lim, okLim := ctr.Resources.Limits[r]
		if !okReq || !okLim {
			c.addf("%s: resources need both a request and a limit for %s", where, r)
			continue
		}
		if req.Cmp(lim) > 0 {
			c.addf("%s: %s request %s exceeds its limit %s", where, r, req.String(), lim.String())
		}
	}
}

// volumes: every mount names a volume or claim template, and every Secret
// or ConfigMap volume names an object the overlay renders.
func (c *checker) volumes(where string, sts *appsv1.StatefulSet, ctr *corev1.Container) {
	known := map[string]bool{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		known[v.Name] = true
		if s := v.Secret; s != nil && c.set.Secret(s.SecretName) == nil && (s.Optional == nil || !*s.Optional) {
			c.addf("%s: volume %s: Secret %q is not in the overlay", where, v.Name, s.SecretName)
		}
		if cm := v.ConfigMap; cm != nil && c.set.ConfigMap(cm.Name) == nil && (cm.Optional == nil || !*cm.Optional) {
			c.addf("%s: volume %s: ConfigMap %q is not in the overlay", where, v.Name, cm.Name)
		}
	}
	for _, t := range sts.Spec.VolumeClaimTemplates {
		known[t.Name] = true
	}
	for _, m := range ctr.VolumeMounts {
		if !known[m.Name] {
			c.addf("%s: volumeMount %s names no volume or claim template", where, m.Name)
		}
	}
}

// nodeConfig resolves each pod's arguments and environment and has the
// node's config loader judge them; it returns the first pod's config.
func (c *checker) nodeConfig(sts *appsv1.StatefulSet, ctr *corev1.Container, replicas int) *config.Config {
	where := "StatefulSet " + sts.Name
	flags := config.Flags()
	envs := config.EnvVars()
	envToFlag := map[string]string{}
	for _, f := range flags {
		envToFlag["RATION_"+strings.ToUpper(strings.ReplaceAll(f, "-", "_"))] = f
	}
	for _, e := range envs {
		if _, ok := envToFlag[e]; !ok {
			c.addf("config.EnvVars has %s, which is no flag's variable: the checks' mapping is out of date", e)
		}
	}

	var first *config.Config
	var explicit map[string]bool
	for i := range replicas {
		pod := manifest.Pod{
			Name:      fmt.Sprintf("%s-%d", sts.Name, i),
			Namespace: cmp.Or(sts.Namespace, "default"),
			IP:        fmt.Sprintf("10.244.%d.%d", i, 10+i),
		}
		rt, err := c.set.Resolve(sts, ctr, pod)
		if err != nil {
			c.addf("%s: %v", where, err)
			return nil
		}
		if explicit == nil {
			// Names are the same for every pod; judge them once.
			explicit = c.settingNames(where, rt, flags, envToFlag)
			for _, req := range []string{"node-id", "data-dir", "join", "bootstrap-expect"} {
				if !explicit[req] {
					c.addf("%s: --%s is required in a cluster and must be set explicitly (flag or RATION_ variable)", where, req)
				}
			}
		}
		env := rt.Environ()
		if c.exp.placeholderGossipKey {
			env = c.replacePlaceholderKey(where, env)
		}
		cfg, err := config.Load(rt.Args, env)
		if err != nil {
			c.addf("%s: pod %s: the node refuses its configuration:\n%v", where, pod.Name, err)
			return nil
		}
		c.podIdentity(where, sts, pod, cfg)
		if first == nil {
			first = cfg
		}
	}
	// config fills the advertise host from a specific bind host; with a
	// wildcard it must come from the manifest, per pod.
	if first != nil && isWildcard(first.BindHost) && !explicit["advertise-host"] {
		c.addf("%s: --bind-host %s needs --advertise-host set explicitly", where, first.BindHost)
	}
	return first
}

// settingNames checks every flag and RATION_ variable name against the
// node's and returns the settings given explicitly.
func (c *checker) settingNames(where string, rt *manifest.Runtime, flags []string, envToFlag map[string]string) map[string]bool {
	explicit := map[string]bool{}
	source := map[string]string{}
	for i := 0; i < len(rt.Args); i++ {
		a := rt.Args[i]
		if !strings.HasPrefix(a, "-") {
			c.addf("%s: argument %q is not a flag; the node takes only --flags", where, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !hasValue {
			i++ // every option of the node takes a value
		}
		if !slices.Contains(flags, name) {
			c.addf("%s: unknown flag --%s (config.Flags has no such option)", where, name)
			continue
		}
		if prev, ok := source[name]; ok && prev != "flag" {
			c.addf("%s: --%s is set twice (%s and flag)", where, name, prev)
		}
		explicit[name], source[name] = true, "flag"
	}
	for _, e := range rt.Env {
		if !strings.HasPrefix(e.Name, "RATION_") {
			continue
		}
		flag, ok := envToFlag[e.Name]
		if !ok {
			c.addf("%s: unknown environment variable %s (from %s): config.EnvVars has no such option", where, e.Name, e.Source)
			continue
		}
		if srcs, twice := rt.Overridden[e.Name]; twice {
			c.addf("%s: %s is set twice (%s); Kubernetes keeps the last", where, e.Name, strings.Join(srcs, " and "))
		}
		if prev, ok := source[flag]; ok {
			c.addf("%s: --%s is set twice (%s and %s from %s); the flag silently wins", where, flag, prev, e.Name, e.Source)
		}
		explicit[flag], source[flag] = true, e.Name
	}
	return explicit
}

// replacePlaceholderKey confirms that the overlay's gossip key is a
// placeholder the node refuses, then swaps in a real key so that the
// remaining settings can be judged.
func (c *checker) replacePlaceholderKey(where string, env []string) []string {
	out := slices.Clone(env)
	for i, kv := range out {
		name, value, _ := strings.Cut(kv, "=")
		if name != "RATION_GOSSIP_KEY" {
			continue
		}
		if _, err := config.Load(nil, []string{"RATION_NODE_ID=x", kv}); err == nil {
			c.addf("%s: the gossip key %q is meant to be a placeholder the node refuses, but it is a valid key", where, value)
		}
		out[i] = name + "=" + base64.StdEncoding.EncodeToString(make([]byte, 32))
		return out
	}
	c.addf("%s: no RATION_GOSSIP_KEY in the environment", where)
	return out
}

// podIdentity: the node id is the pod name, and the pod advertises its
// own IP. Peers find a recreated pod's new IP by its node id in gossip, so
// the IP need not be stable, but it must be this pod's.
func (c *checker) podIdentity(where string, sts *appsv1.StatefulSet, pod manifest.Pod, cfg *config.Config) {
	if cfg.NodeID != pod.Name {
		c.addf("%s: pod %s gets node id %q, want the pod name (metadata.name)", where, pod.Name, cfg.NodeID)
	}
	if cfg.AdvertiseHost != pod.IP {
		c.addf("%s: pod %s advertises %q, want its pod IP (status.podIP through the downward API)", where, pod.Name, cfg.AdvertiseHost)
	}
}

// dnsNames are the spellings of a name under a namespace's search path.
func dnsNames(name, ns string) []string {
	return []string{name, name + "." + ns, name + "." + ns + ".svc", name + "." + ns + ".svc.cluster.local"}
}

// linkConfig ties the node's settings to the rest of the StatefulSet.
func (c *checker) linkConfig(sts *appsv1.StatefulSet, ctr *corev1.Container, cfg *config.Config, replicas int) {
	where := "StatefulSet " + sts.Name
	spec := &sts.Spec.Template.Spec

	if cfg.BootstrapExpect != replicas {
		c.addf("%s: --bootstrap-expect %d differs from replicas %d: the shards form only when exactly that many nodes meet",
			where, cfg.BootstrapExpect, replicas)
	}
	if cfg.BootstrapExpect > 1 && sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		c.addf("%s: podManagementPolicy must be Parallel: with OrderedReady the first pod waits to be ready before the "+
			"next is created, and it is ready only once --bootstrap-expect nodes have met", where)
	}

	headless := c.set.Service(sts.Spec.ServiceName)
	switch {
	case headless == nil:
		c.addf("%s: serviceName %q names no rendered Service", where, sts.Spec.ServiceName)
	case headless.Spec.ClusterIP != corev1.ClusterIPNone:
		c.addf("Service %s: the StatefulSet's serviceName must be headless (clusterIP: None)", headless.Name)
	case !headless.Spec.PublishNotReadyAddresses:
		c.addf("Service %s: publishNotReadyAddresses must be true: nodes must find each other before any is ready", headless.Name)
	}
	ns := cmp.Or(sts.Namespace, "default")
	peers := dnsNames(sts.Spec.ServiceName, ns)
	if len(cfg.Join) == 0 {
		c.addf("%s: --join is empty", where)
	}
	for _, seed := range cfg.JoinAddrs() {
		host, port, _ := strings.Cut(seed, ":")
		if a, err := netip.ParseAddrPort(seed); err == nil {
			host, port = a.Addr().String(), fmt.Sprint(a.Port())
		}
		if !slices.Contains(peers, host) {
			c.addf("%s: --join seed %q is not the headless Service %q (want one of %v)", where, seed, sts.Spec.ServiceName, peers)
		}
		if port != fmt.Sprint(cfg.GossipPort) {
			c.addf("%s: --join seed %q: port differs from --gossip-port %d", where, seed, cfg.GossipPort)
		}
	}

	// The node's ports, as the config loader sees them, against the ports
	// the container declares by name.
	for _, p := range []struct {
		name  string
		proto corev1.Protocol
		want  int
		flag  string
	}{
		{"http", corev1.ProtocolTCP, cfg.HTTPPort, "--http-port"},
		{"grpc", corev1.ProtocolTCP, cfg.GRPCPort, "--grpc-port"},
		{"gossip", corev1.ProtocolTCP, cfg.GossipPort, "--gossip-port"},
		{"gossip-udp", corev1.ProtocolUDP, cfg.GossipPort, "--gossip-port"},
		{"raft", corev1.ProtocolTCP, cfg.RaftPort, "--raft-port"},
		{"actor", corev1.ProtocolTCP, cfg.ActorPort(), "--raft-port + 1"},
	} {
		cp, ok := namedPort(ctr, p.name, p.proto)
		switch {
		case !ok:
			c.addf("%s: the container declares no %s port named %q (%s %d)", where, p.proto, p.name, p.flag, p.want)
		case int(cp.ContainerPort) != p.want:
			c.addf("%s: container port %q is %d but the node listens on %s %d", where, p.name, cp.ContainerPort, p.flag, p.want)
		}
	}

	// The data dir must be on the claim, or the ledger lives in the
	// container's (read-only) filesystem and dies with it.
	onClaim := false
	for _, m := range ctr.VolumeMounts {
		for _, t := range sts.Spec.VolumeClaimTemplates {
			if m.Name == t.Name && isUnder(cfg.DataDir, m.MountPath) && !m.ReadOnly {
				onClaim = true
			}
		}
	}
	if !onClaim {
		c.addf("%s: --data-dir %q is not on a writable volumeClaimTemplate mount", where, cfg.DataDir)
	}
	// With TLS the HTTP port speaks only HTTPS: probes and scrapes over
	// plain HTTP would fail, and the pods never become ready.
	scheme, metricsScheme := corev1.URISchemeHTTP, ""
	if cfg.TLSCert != "" {
		scheme, metricsScheme = corev1.URISchemeHTTPS, "https"
	}
	for name, pr := range map[string]*corev1.Probe{"readinessProbe": ctr.ReadinessProbe, "livenessProbe": ctr.LivenessProbe, "startupProbe": ctr.StartupProbe} {
		if pr == nil || pr.HTTPGet == nil {
			continue
		}
		if got := cmp.Or(pr.HTTPGet.Scheme, corev1.URISchemeHTTP); got != scheme {
			c.addf("%s: %s scheme %s, but the node serves %s (--tls-cert %q)", where, name, got, scheme, cfg.TLSCert)
		}
	}
	if got := sts.Spec.Template.Annotations["prometheus.io/scheme"]; got != metricsScheme && !(got == "http" && metricsScheme == "") {
		c.addf("%s: pod annotation prometheus.io/scheme is %q, want %q", where, got, cmp.Or(metricsScheme, "http or none"))
	}
	for _, f := range []struct{ flag, path string }{{"--tls-cert", cfg.TLSCert}, {"--tls-key", cfg.TLSKey}, {"--tls-ca", cfg.TLSCA}} {
		if f.path == "" {
			continue
		}
		mounted := false
		for _, m := range ctr.VolumeMounts {
			mounted = mounted || m.ReadOnly && isUnder(f.path, m.MountPath)
		}
		if !mounted {
			c.addf("%s: %s %q is not on a read-only volume mount", where, f.flag, f.path)
		}
	}

	grace := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if spec.TerminationGracePeriodSeconds != nil {
		grace = *spec.TerminationGracePeriodSeconds
	}
	var preStop time.Duration
	if l := ctr.Lifecycle; l != nil && l.PreStop != nil && l.PreStop.Sleep != nil {
		preStop = time.Duration(l.PreStop.Sleep.Seconds) * time.Second
	}
	if budget := time.Duration(grace) * time.Second; cfg.ShutdownTimeout+preStop >= budget {
		c.addf("%s: --shutdown-timeout %v plus the preStop pause %v must be below terminationGracePeriodSeconds (%ds), "+
			"or the kubelet kills the node mid-shutdown", where, cfg.ShutdownTimeout, preStop, grace)
	}

	ann := sts.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" {
		c.addf("%s: pod annotation prometheus.io/scrape must be \"true\"", where)
	}
	if ann["prometheus.io/port"] != fmt.Sprint(cfg.HTTPPort) {
		c.addf("%s: pod annotation prometheus.io/port is %q, but metrics are served on --http-port %d", where, ann["prometheus.io/port"], cfg.HTTPPort)
	}
	if ann["prometheus.io/path"] != metricsPath {
		c.addf("%s: pod annotation prometheus.io/path is %q, want %s", where, ann["prometheus.io/path"], metricsPath)
	}
}

func isUnder(p, dir string) bool {
	p, dir = path.Clean(p), path.Clean(dir)
	return path.IsAbs(p) && (p == dir || strings.HasPrefix(p, dir+"/"))
}

func isWildcard(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}

// services: each Service selects the StatefulSet's pods and targets ports
// the container declares; the peers Service carries gossip and raft, and
// a client Service carries gRPC and HTTP.
func (c *checker) services(sts *appsv1.StatefulSet, ctr *corev1.Container, cfg *config.Config) {
	podLabels := labels.Set(sts.Spec.Template.Labels)
	var clientAPIs bool
	for _, svc := range c.set.Services {
		where := "Service " + svc.Name
		if !selectsMap(svc.Spec.Selector, podLabels) {
			c.addf("%s: selector %v does not select the StatefulSet's pods %v", where, svc.Spec.Selector, podLabels)
		}
		targets := map[string]bool{}
		for _, p := range svc.Spec.Ports {
			target := p.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(p.Port)
			}
			cp, ok := findPort(ctr, target, p.Protocol)
			if !ok {
				c.addf("%s: port %s targetPort %s (%s) is not a port the container declares", where, p.Name, target.String(), cmp.Or(p.Protocol, corev1.ProtocolTCP))
				continue
			}
			targets[cp.Name] = true
		}
		if svc.Name == sts.Spec.ServiceName {
			for _, want := range []string{"gossip", "gossip-udp", "raft"} {
				if !targets[want] {
					c.addf("%s: the peers Service must carry the %s port", where, want)
				}
			}
		} else if targets["grpc"] && targets["http"] {
			clientAPIs = true
		}
	}
	if !clientAPIs {
		c.addf("no client Service carries both the grpc and http ports of StatefulSet %s", sts.Name)
	}
}

func (c *checker) disruptionBudgets(sts *appsv1.StatefulSet, podLabels labels.Set) {
	found := false
	for _, pdb := range c.set.PodDisruptionBudgets {
		where := "PodDisruptionBudget " + pdb.Name
		if !selects(pdb.Spec.Selector, podLabels) {
			c.addf("%s: selector does not select the StatefulSet %s's pods", where, sts.Name)
			continue
		}
		found = true
		if pdb.Spec.MinAvailable != nil {
			c.addf("%s: use maxUnavailable, not minAvailable", where)
		}
		if mu := pdb.Spec.MaxUnavailable; mu == nil || *mu != intstr.FromInt32(1) {
			c.addf("%s: maxUnavailable must be 1: two voters down is a lost majority", where)
		}
	}
	if !found {
		c.addf("no PodDisruptionBudget selects the StatefulSet %s's pods", sts.Name)
	}
}

// networkPolicies: a policy selecting the pods admits peers on every
// node-to-node port, declared clients on the APIs and Prometheus on HTTP,
// and names only ports the container declares.
func (c *checker) networkPolicies(sts *appsv1.StatefulSet, ctr *corev1.Container, podLabels labels.Set) {
	type grant struct{ port, proto string }
	peers, clients, anyone := map[grant]bool{}, map[grant]bool{}, map[grant]bool{}
	found := false
	for _, np := range c.set.NetworkPolicies {
		where := "NetworkPolicy " + np.Name
		if !selects(&np.Spec.PodSelector, podLabels) {
			continue
		}
		found = true
		if !slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
			c.addf("%s: policyTypes must include Ingress", where)
		}
		for i, rule := range np.Spec.Ingress {
			var ports []grant
			for _, p := range rule.Ports {
				proto := corev1.ProtocolTCP
				if p.Protocol != nil {
					proto = *p.Protocol
				}
				if p.Port == nil {
					c.addf("%s: ingress rule %d admits every port", where, i)
					continue
				}
				cp, ok := findPort(ctr, *p.Port, proto)
				if !ok {
					c.addf("%s: ingress rule %d: port %s (%s) is not a port the container declares", where, i, p.Port.String(), proto)
					continue
				}
				ports = append(ports, grant{cp.Name, string(proto)})
			}
			if len(rule.From) == 0 {
				// No from: every source.
				for _, g := range ports {
					anyone[g] = true
				}
			}
			for _, from := range rule.From {
				ps := from.PodSelector
				for _, g := range ports {
					switch {
					case ps != nil && from.NamespaceSelector == nil && selects(ps, podLabels):
						peers[g] = true
					case ps != nil && ps.MatchLabels[clientLabel] == "true":
						clients[g] = true
					default:
						anyone[g] = true
					}
				}
			}
		}
	}
	if !found {
		c.addf("no NetworkPolicy selects the StatefulSet %s's pods", sts.Name)
		return
	}
	for _, g := range []grant{{"gossip", "TCP"}, {"gossip-udp", "UDP"}, {"raft", "TCP"}, {"actor", "TCP"}, {"grpc", "TCP"}} {
		if !peers[g] {
			c.addf("NetworkPolicy: peers (pods matching %v) are not admitted on %s/%s", podLabels, g.port, g.proto)
		}
	}
	for _, g := range []grant{{"grpc", "TCP"}, {"http", "TCP"}} {
		if !clients[g] {
			c.addf("NetworkPolicy: clients labelled %s=true are not admitted on %s", clientLabel, g.port)
		}
	}
	if !anyone[grant{"http", "TCP"}] {
		c.addf("NetworkPolicy: no rule admits Prometheus on http")
	}
	for g := range anyone {
		if g.port != "http" {
			c.addf("NetworkPolicy: port %s/%s is open to pods that are neither peers nor declared clients", g.port, g.proto)
		}
	}
}

// serviceMonitors scrape /metrics through a Service port that reaches the
// container's http port.
func (c *checker) serviceMonitors(sts *appsv1.StatefulSet, ctr *corev1.Container) {
	for _, sm := range c.set.ServiceMonitors {
		where := "ServiceMonitor " + sm.Name
		var matched []*corev1.Service
		for _, svc := range c.set.Services {
			if selects(&sm.Spec.Selector, labels.Set(svc.Labels)) {
				matched = append(matched, svc)
			}
		}
		if len(matched) != 1 {
			c.addf("%s: selector should match exactly one Service, matches %d", where, len(matched))
			continue
		}
		svc := matched[0]
		for _, ep := range sm.Spec.Endpoints {
			if ep.Path != metricsPath {
				c.addf("%s: endpoint path %q, want %s", where, ep.Path, metricsPath)
			}
			ok := false
			for _, p := range svc.Spec.Ports {
				if p.Name == ep.Port {
					cp, found := findPort(ctr, p.TargetPort, p.Protocol)
					ok = found && cp.Name == "http"
				}
			}
			if !ok {
				c.addf("%s: endpoint port %q is not a port of Service %s that reaches the container's http port", where, ep.Port, svc.Name)
			}
		}
	}
}

// namespaces: everything lands in one namespace, and a Namespace the
// overlay creates enforces the restricted Pod Security Standard the pods
// are written to meet.
func (c *checker) namespaces() {
	seen := map[string]bool{}
	add := func(m metav1.ObjectMeta) { seen[m.Namespace] = true }
	for _, o := range c.set.StatefulSets {
		add(o.ObjectMeta)
	}
	for _, o := range c.set.Services {
		add(o.ObjectMeta)
	}
	for _, o := range c.set.ConfigMaps {
		add(o.ObjectMeta)
	}
	for _, o := range c.set.Secrets {
		add(o.ObjectMeta)
	}
	for _, o := range c.set.PodDisruptionBudgets {
		add(o.ObjectMeta)
	}
	for _, o := range c.set.NetworkPolicies {
		add(o.ObjectMeta)
	}
	for _, o := range c.set.ServiceMonitors {
		add(o.ObjectMeta)
	}
	if len(seen) != 1 {
		c.addf("objects are spread over namespaces %v", slices.Sorted(maps.Keys(seen)))
	}
	for _, ns := range c.set.Namespaces {
		if !seen[ns.Name] {
			c.addf("Namespace %s is created but nothing is deployed in it", ns.Name)
		}
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			c.addf("Namespace %s: label pod-security.kubernetes.io/enforce should be restricted", ns.Name)
		}
	}
}
