package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/ration/ration/internal/backoff"
)

// joinOnce resolves the seeds afresh and pushes/pulls state with every
// address that is not this node. It succeeds when a seed answered, no peer
// holds this node's name at another address, and memberlist now knows
// another member.
func (m *Membership) joinOnce(ctx context.Context, seeds []seedAddr) error {
	m.joinAttempts.Add(1)
	addrs, resolveErr := m.resolveSeeds(ctx, seeds)
	if len(addrs) == 0 {
		if resolveErr != nil {
			return fmt.Errorf("membership: join: %w", resolveErr)
		}
		return fmt.Errorf("membership: join %v: %w", seeds, ErrNoPeers)
	}
	m.conflict.Store(false)
	if _, err := m.pushPull(ctx, addrs); err != nil {
		return fmt.Errorf("membership: join %v: %w", addrs, err)
	}
	if m.conflict.Load() {
		return fmt.Errorf("membership: join %v: %w", addrs, ErrAddressConflict)
	}
	if m.ml.NumMembers() < 2 {
		// Every address answered as this node (a seed naming it by an
		// address the self filter did not recognise).
		return fmt.Errorf("membership: join %v: %w", addrs, ErrNoPeers)
	}
	return nil
}

// pushPull runs memberlist.Join, which has no context, in a goroutine, so
// that ctx can cut the wait short. The abandoned call ends by itself within
// TCPTimeout per address; what it learns after the membership stopped is
// dropped by the frozen view.
func (m *Membership) pushPull(ctx context.Context, addrs []string) (int, error) {
	type result struct {
		n   int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		n, err := m.ml.Join(addrs)
		ch <- result{n, err}
	}()
	select {
	case r := <-ch:
		return r.n, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// resolveSeeds returns the seeds' current addresses as ip:port, this
// node's own left out. DNS names are looked up on every call because the
// answer grows as a Kubernetes headless service gains ready pods.
func (m *Membership) resolveSeeds(ctx context.Context, seeds []seedAddr) ([]string, error) {
	self, _ := m.selfAddr.Load().(netip.AddrPort)
	var out []string
	var errs []error
	seen := make(map[netip.AddrPort]bool)
	for _, s := range seeds {
		port := s.port
		if port == 0 {
			port = self.Port()
		}
		var ips []netip.Addr
		if a, err := netip.ParseAddr(s.host); err == nil {
			ips = []netip.Addr{a}
		} else {
			found, err := m.cfg.lookupIP(ctx, s.host)
			if err != nil {
				errs = append(errs, fmt.Errorf("resolve seed %s: %w", s, err))
				continue
			}
			ips = found
		}
		for _, ip := range ips {
			ap := netip.AddrPortFrom(ip.Unmap(), port)
			if seen[ap] || m.isSelf(ap, self) {
				continue
			}
			seen[ap] = true
			out = append(out, ap.String())
		}
	}
	return out, errors.Join(errs...)
}

// isSelf recognises this node's own address among the seeds, as every
// pod of a StatefulSet typically lists the same seeds, itself included.
func (m *Membership) isSelf(ap, self netip.AddrPort) bool {
	if ap == self {
		return true
	}
	if ap.Port() != self.Port() {
		return false
	}
	return ap.Addr() == m.bindAddr || (m.bindAddr.IsUnspecified() && ap.Addr().IsLoopback())
}

func allLiteral(seeds []seedAddr) bool {
	for _, s := range seeds {
		if _, err := netip.ParseAddr(s.host); err != nil {
			return false
		}
	}
	return true
}

// joinLoop retries the seeds while this node knows no other live member,
// or while a peer still holds its name at an old address. lastErr is the
// outcome of the attempt Start made.
func (m *Membership) joinLoop(ctx context.Context, seeds []seedAddr, lastErr error) {
	defer m.wg.Done()
	changes, unsubscribe := m.subscribe(false)
	defer unsubscribe()
	// The waits double from JoinRetryMin to JoinRetryMax over failed
	// attempts, with ±20% jitter so that nodes started together do not
	// retry in lockstep.
	policy := backoff.Policy{Base: m.cfg.JoinRetryMin, Cap: m.cfg.JoinRetryMax, Spread: 0.2}
	failures := 0 // since the last join, address conflicts not counted
	// alone is when this node last had no peer; it warns once if that
	// lasts JoinRetryMax.
	alone, warned := time.Now(), false
	for {
		if lastErr == nil {
			// Joined: wait until this node finds itself alone.
			for m.ml.NumMembers() > 1 {
				select {
				case <-ctx.Done():
					return
				case <-changes:
				}
			}
			m.log.Warn("no other live member left; rejoining through the seeds")
			failures = 0
			alone, warned = time.Now(), true
		} else {
			n := 1
			if !errors.Is(lastErr, ErrAddressConflict) {
				failures++
				n = failures
			}
			// The peer accepts this node as soon as its old entry has been
			// dead for DeadNodeReclaimTime: after an address conflict, poll
			// for that at the base rate rather than backing off past it.
			if policy.Wait(ctx, n, time.Time{}) != nil {
				return
			}
			if !errors.Is(lastErr, ErrAddressConflict) && m.ml.NumMembers() > 1 {
				// A peer joined this node meanwhile: that is all the
				// seeds were for.
				lastErr = nil
				m.log.Info("another member joined this node; stopped retrying the seeds")
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		prevKind := errKind(lastErr)
		lastErr = m.joinOnce(ctx, seeds)
		switch {
		case lastErr == nil:
			m.log.Info("joined the cluster", slog.Int("members", m.ml.NumMembers()),
				slog.Int64("attempt", m.joinAttempts.Load()))
		case ctx.Err() != nil:
			return
		default:
			// A failure like the previous one adds nothing at Info: a node
			// waiting out an address conflict or for its first peer would
			// repeat the same line every second.
			level := slog.LevelInfo
			switch {
			case !warned && time.Since(alone) >= m.cfg.JoinRetryMax:
				// Long enough for nodes started together: a seed list
				// that nothing answers needs an operator.
				level, warned = slog.LevelWarn, true
			case errKind(lastErr) == prevKind:
				level = slog.LevelDebug
			}
			m.log.Log(ctx, level, "join attempt failed", slog.Any("err", lastErr),
				slog.Int64("attempt", m.joinAttempts.Load()), slog.Duration("backoff", policy.Nominal(failures+1)),
				slog.Duration("alone", time.Since(alone).Round(time.Second)))
		}
	}
}

// errKind classes join failures for logging.
func errKind(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrAddressConflict):
		return 1
	case errors.Is(err, ErrNoPeers):
		return 2
	}
	return 3
}
