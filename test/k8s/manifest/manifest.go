// Package manifest renders the kustomizations under deploy/k8s with the
// kustomize Go API and decodes every object strictly into its
// k8s.io/api type, so the tests in test/k8s and test/docker read the same
// objects kubectl apply -k would send. It also works out what a pod's
// container would actually be started with (arguments and environment,
// downward API and references resolved), so that the node's own
// configuration loader can judge the manifests.
package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// DeployDir is deploy/k8s in this checkout, found from this file's path so
// that tests work from any working directory.
func DeployDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "deploy", "k8s")
}

// Set is one rendered kustomization, by kind.
type Set struct {
	Dir string

	StatefulSets         []*appsv1.StatefulSet
	Services             []*corev1.Service
	ConfigMaps           []*corev1.ConfigMap
	Secrets              []*corev1.Secret
	Namespaces           []*corev1.Namespace
	PodDisruptionBudgets []*policyv1.PodDisruptionBudget
	NetworkPolicies      []*networkingv1.NetworkPolicy
	ServiceMonitors      []*ServiceMonitor
}

// ServiceMonitor mirrors the part of the Prometheus Operator's
// monitoring.coreos.com/v1 ServiceMonitor that the component uses. Its Go
// types live in a module this repository does not depend on; a field the
// mirror lacks fails the strict decode, which is the point: add it here
// deliberately.
type ServiceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              ServiceMonitorSpec `json:"spec"`
}

// ServiceMonitorSpec is the mirrored spec.
type ServiceMonitorSpec struct {
	Selector          metav1.LabelSelector      `json:"selector"`
	NamespaceSelector *ServiceMonitorNamespaces `json:"namespaceSelector,omitempty"`
	Endpoints         []ServiceMonitorEndpoint  `json:"endpoints"`
	JobLabel          string                    `json:"jobLabel,omitempty"`
}

// ServiceMonitorNamespaces is the mirrored namespaceSelector.
type ServiceMonitorNamespaces struct {
	Any        bool     `json:"any,omitempty"`
	MatchNames []string `json:"matchNames,omitempty"`
}

// ServiceMonitorEndpoint is one mirrored scrape endpoint.
type ServiceMonitorEndpoint struct {
	Port          string `json:"port,omitempty"`
	Path          string `json:"path,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
}

// kinds maps each kind the deployment may contain to its only accepted
// apiVersion and a strict decoder. A kind missing here fails the render:
// whoever adds one must also decide what the tests check about it.
var kinds = map[string]struct {
	apiVersion string
	decode     func(doc []byte, s *Set) error
}{
	"StatefulSet": {"apps/v1", func(b []byte, s *Set) error { return into(b, &s.StatefulSets) }},
	"Service":     {"v1", func(b []byte, s *Set) error { return into(b, &s.Services) }},
	"ConfigMap":   {"v1", func(b []byte, s *Set) error { return into(b, &s.ConfigMaps) }},
	"Secret":      {"v1", func(b []byte, s *Set) error { return into(b, &s.Secrets) }},
	"Namespace":   {"v1", func(b []byte, s *Set) error { return into(b, &s.Namespaces) }},
	"PodDisruptionBudget": {"policy/v1", func(b []byte, s *Set) error {
		return into(b, &s.PodDisruptionBudgets)
	}},
	"NetworkPolicy": {"networking.k8s.io/v1", func(b []byte, s *Set) error {
		return into(b, &s.NetworkPolicies)
	}},
	"ServiceMonitor": {"monitoring.coreos.com/v1", func(b []byte, s *Set) error {
		return into(b, &s.ServiceMonitors)
	}},
}

// into decodes doc strictly (unknown or duplicate fields are errors) and
// appends it to list.
func into[T any](doc []byte, list *[]*T) error {
	v := new(T)
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		return err
	}
	*list = append(*list, v)
	return nil
}

// Render runs kustomize on dir, as `kubectl apply -k dir` would, and
// decodes every resource strictly by kind.
func Render(dir string) (*Set, error) {
	opts := krusty.MakeDefaultOptions()
	rm, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	s := &Set{Dir: dir}
	var errs []error
	for _, r := range rm.Resources() {
		doc, err := r.AsYAML()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.CurId(), err))
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", r.CurId(), err))
			continue
		}
		k, ok := kinds[tm.Kind]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%s %s: kind not expected in the deployment", tm.Kind, r.GetName()))
		case tm.APIVersion != k.apiVersion:
			errs = append(errs, fmt.Errorf("%s %s: apiVersion %q, want %q", tm.Kind, r.GetName(), tm.APIVersion, k.apiVersion))
		default:
			if err := k.decode(doc, s); err != nil {
				errs = append(errs, fmt.Errorf("%s %s: strict decode: %w", tm.Kind, r.GetName(), err))
			}
		}
	}
	return s, errors.Join(errs...)
}

// YAML renders dir to the multi-document YAML kubectl would apply, for
// showing in failures.
func YAML(dir string) ([]byte, error) {
	rm, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	return rm.AsYaml()
}

// StatefulSet returns the StatefulSet called name.
func (s *Set) StatefulSet(name string) (*appsv1.StatefulSet, error) {
	for _, o := range s.StatefulSets {
		if o.Name == name {
			return o, nil
		}
	}
	return nil, fmt.Errorf("no StatefulSet %q in %s", name, s.Dir)
}

// Service returns the Service called name, or nil.
func (s *Set) Service(name string) *corev1.Service {
	for _, o := range s.Services {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// ConfigMap returns the ConfigMap called name, or nil. Generated names
// carry a hash suffix, which kustomize also writes into every reference,
// so references resolve by their full name.
func (s *Set) ConfigMap(name string) *corev1.ConfigMap {
	for _, o := range s.ConfigMaps {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// Secret returns the Secret called name, or nil.
func (s *Set) Secret(name string) *corev1.Secret {
	for _, o := range s.Secrets {
		if o.Name == name {
			return o
		}
	}
	return nil
}

// Container returns the container called name in the pod template.
func Container(sts *appsv1.StatefulSet, name string) (*corev1.Container, error) {
	for i := range sts.Spec.Template.Spec.Containers {
		if c := &sts.Spec.Template.Spec.Containers[i]; c.Name == name {
			return c, nil
		}
	}
	return nil, fmt.Errorf("StatefulSet %s has no container %q", sts.Name, name)
}

// Pod is what the downward API tells a pod about itself.
type Pod struct {
	Name      string
	Namespace string
	IP        string
}

// EnvVar is one resolved variable, with where it came from.
type EnvVar struct {
	Name, Value string
	Source      string // e.g. "env", "configMap ration-config-abc"
}

// Runtime is what a container is started with.
type Runtime struct {
	Args []string
	// Env is in the order Kubernetes builds it (envFrom sources, then
	// env), each name once, the last definition winning.
	Env []EnvVar
	// Overridden lists names defined more than once, with every source;
	// Kubernetes keeps the last, which is rarely what the author meant.
	Overridden map[string][]string
}

// Environ returns Env as NAME=value strings, as os.Environ does.
func (r *Runtime) Environ() []string {
	out := make([]string, 0, len(r.Env))
	for _, e := range r.Env {
		out = append(out, e.Name+"="+e.Value)
	}
	return out
}

// Lookup returns the value of the variable name.
func (r *Runtime) Lookup(name string) (string, bool) {
	for _, e := range r.Env {
		if e.Name == name {
			return e.Value, true
		}
	}
	return "", false
}

// Resolve works out container c's arguments and environment in pod p of
// sts, the way the kubelet does: envFrom first, then env; fieldRef,
// resourceFieldRef, configMapKeyRef and secretKeyRef resolved against the
// rendered objects; $(VAR) references expanded in env values and args.
// A reference to a missing object or key is an error unless optional.
func (s *Set) Resolve(sts *appsv1.StatefulSet, c *corev1.Container, p Pod) (*Runtime, error) {
	rt := &Runtime{Overridden: map[string][]string{}}
	vals := map[string]string{}
	sources := map[string][]string{}
	var order []string
	set := func(name, value, source string) {
		if _, ok := vals[name]; !ok {
			order = append(order, name)
		}
		vals[name] = value
		sources[name] = append(sources[name], source)
	}
	var errs []error
	for _, from := range c.EnvFrom {
		switch {
		case from.ConfigMapRef != nil:
			cm := s.ConfigMap(from.ConfigMapRef.Name)
			if cm == nil {
				if !isTrue(from.ConfigMapRef.Optional) {
					errs = append(errs, fmt.Errorf("envFrom: no ConfigMap %q", from.ConfigMapRef.Name))
				}
				continue
			}
			for _, k := range sortedKeys(cm.Data) {
				set(from.Prefix+k, cm.Data[k], "configMap "+cm.Name)
			}
			for _, k := range sortedKeys(cm.BinaryData) {
				set(from.Prefix+k, string(cm.BinaryData[k]), "configMap "+cm.Name)
			}
		case from.SecretRef != nil:
			sec := s.Secret(from.SecretRef.Name)
			if sec == nil {
				if !isTrue(from.SecretRef.Optional) {
					errs = append(errs, fmt.Errorf("envFrom: no Secret %q", from.SecretRef.Name))
				}
				continue
			}
			data := secretData(sec)
			for _, k := range sortedKeys(data) {
				set(from.Prefix+k, string(data[k]), "secret "+sec.Name)
			}
		default:
			errs = append(errs, errors.New("envFrom entry with neither configMapRef nor secretRef"))
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expand(e.Value, vals), "env")
			continue
		}
		v, ok, err := s.valueFrom(e.ValueFrom, c, p)
		if err != nil {
			errs = append(errs, fmt.Errorf("env %s: %w", e.Name, err))
			continue
		}
		if ok {
			set(e.Name, v, "env (valueFrom)")
		}
	}
	for _, name := range order {
		rt.Env = append(rt.Env, EnvVar{Name: name, Value: vals[name], Source: strings.Join(sources[name], ", ")})
		if len(sources[name]) > 1 {
			rt.Overridden[name] = sources[name]
		}
	}
	if len(c.Command) > 0 {
		errs = append(errs, errors.New("command is set: it replaces the image's entrypoint /ration-node"))
	}
	for _, a := range c.Args {
		rt.Args = append(rt.Args, expand(a, vals))
	}
	return rt, errors.Join(errs...)
}

func (s *Set) valueFrom(src *corev1.EnvVarSource, c *corev1.Container, p Pod) (string, bool, error) {
	switch {
	case src.FieldRef != nil:
		switch src.FieldRef.FieldPath {
		case "metadata.name":
			return p.Name, true, nil
		case "metadata.namespace":
			return p.Namespace, true, nil
		case "status.podIP":
			return p.IP, true, nil
		}
		return "", false, fmt.Errorf("fieldRef %q is not emulated", src.FieldRef.FieldPath)
	case src.ResourceFieldRef != nil:
		return resourceValue(src.ResourceFieldRef, c)
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm := s.ConfigMap(ref.Name)
		if cm != nil {
			if v, ok := cm.Data[ref.Key]; ok {
				return v, true, nil
			}
		}
		if isTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("configMapKeyRef %s/%s not found", ref.Name, ref.Key)
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		if sec := s.Secret(ref.Name); sec != nil {
			if v, ok := secretData(sec)[ref.Key]; ok {
				return string(v), true, nil
			}
		}
		if isTrue(ref.Optional) {
			return "", false, nil
		}
		return "", false, fmt.Errorf("secretKeyRef %s/%s not found", ref.Name, ref.Key)
	}
	return "", false, errors.New("valueFrom with no source")
}

// resourceValue is the kubelet's rendering of a resourceFieldRef: the
// quantity divided by the divisor (default 1), rounded up.
func resourceValue(ref *corev1.ResourceFieldSelector, c *corev1.Container) (string, bool, error) {
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		return "", false, fmt.Errorf("resourceFieldRef of another container %q is not emulated", ref.ContainerName)
	}
	var list corev1.ResourceList
	res := ref.Resource
	switch {
	case strings.HasPrefix(res, "limits."):
		list, res = c.Resources.Limits, strings.TrimPrefix(res, "limits.")
	case strings.HasPrefix(res, "requests."):
		list, res = c.Resources.Requests, strings.TrimPrefix(res, "requests.")
	default:
		return "", false, fmt.Errorf("resourceFieldRef %q is not emulated", ref.Resource)
	}
	q, ok := list[corev1.ResourceName(res)]
	if !ok {
		// The kubelet falls back to the node's allocatable, which a
		// render cannot know; a manifest relying on that is an error.
		return "", false, fmt.Errorf("resourceFieldRef %q: the container sets no such resource", ref.Resource)
	}
	div := ref.Divisor
	if div.IsZero() {
		div.Set(1)
	}
	switch res {
	case "cpu":
		m, d := q.MilliValue(), div.MilliValue()
		return fmt.Sprint((m + d - 1) / d), true, nil
	case "memory", "ephemeral-storage":
		v, d := q.Value(), div.Value()
		return fmt.Sprint((v + d - 1) / d), true, nil
	}
	return "", false, fmt.Errorf("resourceFieldRef %q is not emulated", ref.Resource)
}

// expand replaces $(NAME) with the value of a variable defined so far, as
// Kubernetes does: $$ is a literal $, and a reference to an undefined
// variable stays as written.
func expand(s string, vals map[string]string) string {
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '(':
			if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
				name := s[i+2 : i+2+end]
				if v, ok := vals[name]; ok {
					b.WriteString(v)
				} else {
					b.WriteString(s[i : i+3+end])
				}
				i += 2 + end
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// secretData merges stringData over data, as the API server does.
func secretData(sec *corev1.Secret) map[string][]byte {
	out := make(map[string][]byte, len(sec.Data)+len(sec.StringData))
	for k, v := range sec.Data {
		out[k] = v
	}
	for k, v := range sec.StringData {
		out[k] = []byte(v)
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func isTrue(b *bool) bool { return b != nil && *b }
