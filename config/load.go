package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"gopkg.in/yaml.v3"
)

// ErrHelp is returned by Load when the arguments ask for help (-h, --help);
// the caller should print Usage and exit successfully. It wraps
// flag.ErrHelp.
var ErrHelp = fmt.Errorf("config: help requested: %w", flag.ErrHelp)

// Load builds the configuration from args (without the program name), env
// (as from os.Environ) and the YAML file named by --config or RATION_CONFIG,
// with precedence flags > environment > file > defaults, and validates it.
//
// AdvertiseHost is filled from BindHost when it is unset and BindHost is a
// specific address. Unknown flags, unknown RATION_* variables and unknown
// file keys are errors. All problems found are returned together; the
// Config is returned only when there are none.
func Load(args []string, env []string) (*Config, error) {
	fromFlags, err := parseFlags(args)
	if err != nil {
		return nil, err
	}
	fromEnv, errs := parseEnv(env)

	c := Default()
	// The file sits below the environment and flags, yet they name it, so
	// its path is resolved before anything is applied.
	path := fromEnv["config"]
	if raws := fromFlags["config"]; len(raws) > 0 {
		path = raws[len(raws)-1]
	}
	if path != "" {
		errs = append(errs, loadFile(c, path)...)
	}

	for i := range options {
		o := &options[i]
		if raw, ok := fromEnv[o.name]; ok {
			c.markExplicit(o.name)
			if err := o.set(c, raw); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", o.envName(), err))
			}
		}
	}
	for i := range options {
		o := &options[i]
		raws, ok := fromFlags[o.name]
		if !ok {
			continue
		}
		c.markExplicit(o.name)
		if o.list {
			// Repeating a list flag adds to it, so "--join a --join b"
			// keeps both seeds instead of silently dropping the first.
			var items []string
			for _, raw := range raws {
				items = append(items, splitList(raw)...)
			}
			o.setItems(c, items)
			continue
		}
		for _, raw := range raws {
			if err := o.set(c, raw); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", o.flagName(), err))
			}
		}
	}

	if c.AdvertiseHost == "" && !isWildcard(c.BindHost) && checkHost(c.BindHost) == nil {
		c.AdvertiseHost = c.BindHost
	}
	errs = append(errs, c.Validate())
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// flagRecorder collects a flag's raw values; they are applied only after
// the file and environment, which the flags must override.
type flagRecorder struct {
	name    string
	boolean bool
	got     map[string][]string
}

func (r *flagRecorder) String() string { return "" }

// IsBoolFlag lets a switch be given alone (--insecure), as package flag
// does for its own booleans.
func (r *flagRecorder) IsBoolFlag() bool { return r.boolean }

func (r *flagRecorder) Set(raw string) error {
	r.got[r.name] = append(r.got[r.name], raw)
	return nil
}

func parseFlags(args []string) (map[string][]string, error) {
	fs := flag.NewFlagSet("ration", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	got := make(map[string][]string)
	for i := range options {
		fs.Var(&flagRecorder{name: options[i].name, boolean: options[i].boolean, got: got}, options[i].name, options[i].help)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, ErrHelp
		}
		return nil, fmt.Errorf("command line: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("command line: unexpected argument %q; every setting is a --flag", fs.Arg(0))
	}
	return got, nil
}

// Kubernetes injects variables for every Service in the namespace unless
// the pod sets enableServiceLinks: false, so a Service called "ration" or
// "ration-<x>" yields RATION_SERVICE_HOST, RATION_PORT_8080_TCP_ADDR and
// the like. They are not typos and must not crash-loop the pod.
var (
	serviceLinkName = regexp.MustCompile(
		`^RATION(_[A-Z0-9_]+)?_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_[0-9]+_(TCP|UDP|SCTP)(_(PROTO|PORT|ADDR))?)$`)
	serviceLinkValue = regexp.MustCompile(`^(tcp|udp|sctp)://`)
)

func isServiceLink(name, value string) bool {
	if serviceLinkName.MatchString(name) {
		return true
	}
	// The bare <SERVICE>_PORT variable has a name like any other, but a
	// value like tcp://10.0.0.1:8080 no real setting takes.
	return strings.HasSuffix(name, "_PORT") && serviceLinkValue.MatchString(value)
}

// parseEnv returns the raw value of each option set in env, keyed by flag
// name, and an error for each RATION_* variable no option owns.
func parseEnv(env []string) (map[string]string, []error) {
	byEnv := make(map[string]*option, len(options))
	squashed := make(map[string]string, len(options))
	for i := range options {
		name := options[i].envName()
		byEnv[name] = &options[i]
		squashed[strings.ReplaceAll(name, "_", "")] = name
	}

	got := make(map[string]string)
	var errs []error
	for _, kv := range env {
		name, value, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) {
			continue
		}
		o := byEnv[name]
		switch {
		case o != nil && serviceLinkValue.MatchString(value):
			errs = append(errs, fmt.Errorf("%s: value %q is a Kubernetes service link, not a setting: set enableServiceLinks: false on the pod or rename the Service", name, value))
		case o != nil:
			// Later entries win, as they do for exec and shells.
			got[o.name] = value
		case isServiceLink(name, value):
		default:
			err := fmt.Errorf("%s: unknown environment variable (see --help for the accepted ones)", name)
			if want, ok := squashed[strings.ReplaceAll(name, "_", "")]; ok {
				err = fmt.Errorf("%s: unknown environment variable, did you mean %s?", name, want)
			}
			errs = append(errs, err)
		}
	}
	return got, errs
}

// loadFile applies the YAML file at path to c.
func loadFile(c *Config, path string) []error {
	data, err := os.ReadFile(path)
	if err != nil {
		return []error{fmt.Errorf("config file: %w", err)}
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file sets nothing
		}
		return []error{fmt.Errorf("config file %s: %w", path, err)}
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		// A second document would otherwise be ignored without a word.
		return []error{fmt.Errorf("config file %s: must hold a single YAML document", path)}
	}
	return applyYAML(c, path, &doc)
}

func applyYAML(c *Config, path string, doc *yaml.Node) []error {
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil
		}
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil // only comments
	}
	if root.Kind != yaml.MappingNode {
		return []error{fmt.Errorf("config file %s: line %d: top level must be a mapping of settings", path, root.Line)}
	}

	byKey := make(map[string]*option, len(options))
	for i := range options {
		if !options[i].noFile {
			byKey[options[i].yamlKey()] = &options[i]
		}
	}
	var errs []error
	firstLine := make(map[string]int)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("config file %s: %s (line %d): %s", path, k.Value, k.Line, fmt.Sprintf(format, args...)))
		}
		o := byKey[k.Value]
		if o == nil {
			if lookup(k.Value) != nil && strings.Contains(k.Value, "-") {
				fail("unknown key, did you mean %s?", strings.ReplaceAll(k.Value, "-", "_"))
			} else {
				fail("unknown key")
			}
			continue
		}
		if line, dup := firstLine[k.Value]; dup {
			fail("duplicate key, first set on line %d", line)
			continue
		}
		firstLine[k.Value] = k.Line

		if err := setYAML(c, o, v); err != nil {
			fail("%v", err)
		}
	}
	return errs
}

// setYAML sets option o from its value in the config file: a plain value,
// or a list for an option that takes one.
func setYAML(c *Config, o *option, v *yaml.Node) error {
	if v.Kind == yaml.AliasNode {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return nil // "key:" with no value leaves the setting as it was
		}
		c.markExplicit(o.name)
		return o.set(c, v.Value)
	case yaml.SequenceNode:
		if !o.list {
			return errors.New("expected a single value, got a list")
		}
		items := make([]string, 0, len(v.Content))
		for _, item := range v.Content {
			if item.Kind != yaml.ScalarNode || item.Tag == "!!null" {
				return fmt.Errorf("list item on line %d must be a plain value", item.Line)
			}
			items = append(items, strings.TrimSpace(item.Value))
		}
		c.markExplicit(o.name)
		o.setItems(c, items)
		return nil
	}
	return errors.New("expected a value, got a mapping")
}
