package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// Validate reports every problem at once, joined with errors.Join, so an
// operator fixes a manifest in one round trip. Each problem is one line
// that starts with the flag it concerns, whichever source set the value.
//
// It checks syntax only: it does not resolve hosts or open the TLS files,
// because a config check with side effects would make tests and dry runs
// depend on the machine they run on.
func (c *Config) Validate() error {
	var errs []error
	for i := range options {
		o := &options[i]
		if err := o.check(c); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", o.flagName(), err))
		}
	}
	errs = append(errs, c.checkPortsDistinct()...)
	if c.AdvertiseHost == "" && isWildcard(c.BindHost) {
		errs = append(errs, fmt.Errorf("--advertise-host: required when --bind-host is the wildcard %q, which peers cannot dial", c.BindHost))
	}
	switch {
	case c.TLSCert != "" && c.TLSKey == "":
		errs = append(errs, errors.New("--tls-key: required when --tls-cert is set"))
	case c.TLSKey != "" && c.TLSCert == "":
		errs = append(errs, errors.New("--tls-cert: required when --tls-key is set"))
	case c.TLSCA != "" && c.TLSCert == "":
		// A CA only makes sense for verifying peers over TLS, which this
		// node cannot speak without its own certificate; a lone CA is
		// almost certainly a half-finished TLS setup.
		errs = append(errs, errors.New("--tls-ca: requires --tls-cert and --tls-key"))
	}
	switch {
	case c.TLSCert == "" && !c.Insecure && !IsLoopback(c.BindHost):
		errs = append(errs, fmt.Errorf("--bind-host: %q is reachable beyond this machine: serve with TLS (--tls-cert and --tls-key), or give --insecure to serve without it", c.BindHost))
	case c.TLSCert != "" && c.Insecure:
		errs = append(errs, errors.New("--insecure: contradicts --tls-cert; give one or the other"))
	}
	if c.RequestTimeout > c.MaxRequestTimeout {
		errs = append(errs, fmt.Errorf("--request-timeout: must not exceed --max-request-timeout (%s), got %s", c.MaxRequestTimeout, c.RequestTimeout))
	}
	// hashicorp/raft refuses these combinations when it starts; checking
	// here names the flags instead.
	if c.RaftLeaderLeaseTimeout > c.RaftHeartbeatTimeout {
		errs = append(errs, fmt.Errorf("--raft-leader-lease-timeout: must not exceed --raft-heartbeat-timeout (%s), got %s",
			c.RaftHeartbeatTimeout, c.RaftLeaderLeaseTimeout))
	}
	if c.RaftElectionTimeout < c.RaftHeartbeatTimeout {
		errs = append(errs, fmt.Errorf("--raft-election-timeout: must be at least --raft-heartbeat-timeout (%s), got %s",
			c.RaftHeartbeatTimeout, c.RaftElectionTimeout))
	}
	return errors.Join(errs...)
}

// checkPortsDistinct refuses two listeners on one port: they all bind to
// BindHost, so a clash would only surface as a bind error at startup.
func (c *Config) checkPortsDistinct() []error {
	ports := []struct {
		flag string
		port int
		what string
	}{
		{"--http-port", c.HTTPPort, ""},
		{"--grpc-port", c.GRPCPort, ""},
		{"--gossip-port", c.GossipPort, ""},
		{"--raft-port", c.RaftPort, ""},
		{"--raft-port", c.ActorPort(), " (+ 1, the actor port)"},
	}
	var errs []error
	for i, p := range ports {
		if checkPort(p.port) != nil {
			if i == len(ports)-1 && checkPort(c.RaftPort) == nil {
				errs = append(errs, fmt.Errorf("--raft-port: %d leaves no port after it for actor traffic", c.RaftPort))
			}
			continue // already reported as out of range
		}
		for _, q := range ports[:i] {
			if p.port == q.port {
				errs = append(errs, fmt.Errorf("%s: %d%s is already used by %s%s (all listeners share --bind-host)", p.flag, p.port, p.what, q.flag, q.what))
				break
			}
		}
	}
	return errs
}

// IsLoopback reports whether a --bind-host is reachable from this machine
// only: a loopback address or the name localhost. Any other name may
// resolve to anything, and the wildcards listen everywhere.
func IsLoopback(host string) bool {
	if a, err := netip.ParseAddr(host); err == nil {
		return a.IsLoopback()
	}
	return strings.EqualFold(strings.TrimSuffix(host, "."), "localhost")
}

// dnsLabel allows underscores, which strict hostnames forbid but DNS names
// such as SRV targets use; refusing them would buy nothing here.
var dnsLabel = regexp.MustCompile(`^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$`)

// checkHost accepts an IP literal (IPv6 without brackets, zone allowed) or
// a DNS name. Anything else would fail only at listen or dial time, far
// from the setting that caused it.
func checkHost(h string) error {
	if h == "" {
		return errors.New("must not be empty")
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if strings.HasPrefix(h, "[") {
		return fmt.Errorf("write IPv6 addresses without brackets, got %q", h)
	}
	name := strings.TrimSuffix(h, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("not an IP address or DNS name: %q", h)
	}
	for _, label := range strings.Split(name, ".") {
		if !dnsLabel.MatchString(label) {
			return fmt.Errorf("not an IP address or DNS name: %q", h)
		}
	}
	return nil
}

// splitJoin parses a seed as host or host:port; port is empty when the
// seed has none. IPv6 seeds are a bare address, [addr] or [addr]:port.
func splitJoin(entry string) (host, port string, err error) {
	if entry == "" {
		return "", "", errors.New("empty seed")
	}
	// A bare IPv6 address is full of colons that SplitHostPort would
	// misread, so recognise addresses first.
	if _, err := netip.ParseAddr(entry); err == nil {
		return entry, "", nil
	}
	if inner, ok := strings.CutPrefix(entry, "["); ok {
		if inner, ok := strings.CutSuffix(inner, "]"); ok {
			if a, err := netip.ParseAddr(inner); err == nil && a.Is6() {
				return inner, "", nil
			}
		}
	}
	if !strings.Contains(entry, ":") {
		if err := checkHost(entry); err != nil {
			return "", "", fmt.Errorf("seed %q: %w", entry, err)
		}
		return entry, "", nil
	}
	host, port, err = net.SplitHostPort(entry)
	if err != nil {
		return "", "", fmt.Errorf("seed %q: want host or host:port", entry)
	}
	if err := checkHost(host); err != nil {
		return "", "", fmt.Errorf("seed %q: %w", entry, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || checkPort(n) != nil {
		return "", "", fmt.Errorf("seed %q: port must be 1-65535, got %q", entry, port)
	}
	return host, port, nil
}
