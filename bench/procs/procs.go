// Package procs runs the benchmark's server processes (Ration nodes, etcd
// members, PostgreSQL) and owns their temporary directories, so that
// whatever happens to the harness (a failed row, Ctrl-C) every process it
// started is stopped and every directory removed.
//
// Each process runs in its own process group, so stopping it reaches the
// children it forks (PostgreSQL's backends), and with a parent-death
// signal, so it dies with the harness even if the harness is killed.
package procs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// ErrExited is returned when a process ends before it was asked to.
var ErrExited = errors.New("process exited")

// Owner is a user a directory or process is handed to (PostgreSQL will
// not run as root). The zero Owner means the harness's own user.
type Owner struct {
	Name     string
	UID, GID uint32
}

func (o Owner) isSet() bool { return o.Name != "" }

// Spec describes a process to start.
type Spec struct {
	Name string // for logs and errors, e.g. "etcd-2"
	Path string
	Args []string
	Dir  string
	// Log receives the process's stdout and stderr; it is created.
	Log string
	// As, when set, runs the process as that user.
	As Owner
}

// Proc is a started process.
type Proc struct {
	spec Spec
	cmd  *exec.Cmd
	done chan struct{}
	err  error // the Wait error, once done is closed
	mu   sync.Mutex
	stop bool // Stop was called: the exit is not a crash
}

// Pid is the process's id (and its process group's).
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Exited returns a wrapped ErrExited if the process has ended without
// being stopped, with the end of its log, and nil while it runs.
func (p *Proc) Exited() error {
	select {
	case <-p.done:
	default:
		return nil
	}
	p.mu.Lock()
	stopped := p.stop
	p.mu.Unlock()
	if stopped {
		return nil
	}
	return fmt.Errorf("%s: %w (%v); end of %s:\n%s", p.spec.Name, ErrExited, p.err, p.spec.Log, Tail(p.spec.Log, 20))
}

// Group is every process and directory of one harness run.
type Group struct {
	log   *slog.Logger
	mu    sync.Mutex
	procs []*Proc
	dirs  []string
}

// NewGroup returns an empty Group logging to log.
func NewGroup(log *slog.Logger) *Group { return &Group{log: log} }

// TempDir makes a fresh directory owned by owner (or the harness's user)
// that Close removes.
func (g *Group) TempDir(pattern string, owner Owner) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("procs: temp dir: %w", err)
	}
	g.mu.Lock()
	g.dirs = append(g.dirs, dir)
	g.mu.Unlock()
	if owner.isSet() {
		if err := os.Chown(dir, int(owner.UID), int(owner.GID)); err != nil {
			return "", fmt.Errorf("procs: temp dir for %s: %w", owner.Name, err)
		}
	}
	return dir, nil
}

// Start starts s. The process's exit is watched: Done and Exited report it.
func (g *Group) Start(s Spec) (*Proc, error) {
	logf, err := os.OpenFile(s.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("procs: start %s: %w", s.Name, err)
	}
	defer logf.Close()
	cmd := exec.Command(s.Path, s.Args...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if s.As.isSet() {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: s.As.UID, Gid: s.As.GID}
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("procs: start %s: %w", s.Name, err)
	}
	p := &Proc{spec: s, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	g.log.Debug("started", "proc", s.Name, "pid", cmd.Process.Pid)
	return p, nil
}

// Stop sends sig to p's process group, and SIGKILL to the group if p has
// not exited after grace. It returns once p has exited.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	p.stop = true
	p.mu.Unlock()
	pgid := p.cmd.Process.Pid
	select {
	case <-p.done:
		// Long gone: its group id may since have been reused, so it is
		// not signalled. A PostgreSQL backend whose postmaster died exits
		// on its own.
		return
	default:
	}
	_ = syscall.Kill(-pgid, sig)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// Children the leader left behind, if any, still hold the group id.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// Wait waits for p to exit and returns its exit error, nil for status 0.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops every process still running (SIGTERM, then SIGKILL after
// grace) and removes every directory. It is safe to call more than once.
func (g *Group) Close(grace time.Duration) error {
	g.mu.Lock()
	procs, dirs := g.procs, g.dirs
	g.procs, g.dirs = nil, nil
	g.mu.Unlock()
	Set(procs).Stop(syscall.SIGTERM, grace)
	var errs []error
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("procs: remove %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// Tail returns the last n lines of the file at path, or a note that it
// could not be read.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			if n--; n == 0 {
				return string(b[i+1:])
			}
		}
	}
	return string(b)
}

// WaitFor calls ready every 100 ms until it returns nil, one of procs
// exits, or ctx ends; the error says which, with ready's last error.
func WaitFor(ctx context.Context, what string, ready func(context.Context) error, procs ...*Proc) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		for _, p := range procs {
			if xerr := p.Exited(); xerr != nil {
				return fmt.Errorf("waiting for %s: %w", what, xerr)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last: %v)", what, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// CheckFree returns an error naming the first of the TCP addresses (and
// the UDP ones in udp) that something else already listens on, so a run
// fails up front instead of benchmarking another program.
func CheckFree(tcp, udp []string) error {
	for _, a := range tcp {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("procs: tcp %s is taken: %w", a, err)
		}
		l.Close()
	}
	for _, a := range udp {
		c, err := net.ListenPacket("udp", a)
		if err != nil {
			return fmt.Errorf("procs: udp %s is taken: %w", a, err)
		}
		c.Close()
	}
	return nil
}

// HTTPOK is a readiness check for WaitFor: GET url answers 200.
func HTTPOK(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// Set is the processes of one system: a cluster's nodes or members.
type Set []*Proc

// SetSpec describes a Set: member i (from 0) is named Prefix followed by
// i+1, and keeps its data directory (Dir/<name>) and log (Dir/<name>.log)
// under Dir, which is also its working directory.
type SetSpec struct {
	Dir, Path, Prefix string
}

// StartSet starts n processes of s, member i with args(i, its data
// directory). If one fails to start, those already started are stopped.
func (g *Group) StartSet(n int, s SetSpec, args func(i int, dataDir string) []string) (Set, error) {
	var set Set
	for i := range n {
		name := s.Prefix + strconv.Itoa(i+1)
		p, err := g.Start(Spec{
			Name: name, Path: s.Path, Dir: s.Dir,
			Args: args(i, filepath.Join(s.Dir, name)), Log: filepath.Join(s.Dir, name+".log"),
		})
		if err != nil {
			set.Stop(syscall.SIGKILL, 0)
			return nil, err
		}
		set = append(set, p)
	}
	return set, nil
}

// Stop stops every process of s at once (sig, then SIGKILL after grace)
// and returns when all have exited.
func (s Set) Stop(sig syscall.Signal, grace time.Duration) {
	var wg sync.WaitGroup
	for _, p := range s {
		wg.Go(func() { p.Stop(sig, grace) })
	}
	wg.Wait()
}

// Running is a started Set and the client connected to it, stopped
// together.
type Running struct {
	Set Set
	// Client is closed before the Set stops; nil until connected.
	Client io.Closer
	// Grace is how long the Set has after SIGTERM before SIGKILL.
	Grace time.Duration
}

// Stop closes the client and stops the Set.
func (r *Running) Stop() {
	if r.Client != nil {
		r.Client.Close()
	}
	r.Set.Stop(syscall.SIGTERM, r.Grace)
}

// Exited reports a process of the Set that has died.
func (r *Running) Exited() error { return r.Set.Exited() }

// WaitHTTP waits up to timeout until GET url(i) answers 200 for every
// member i of s, and fails early if a member exits.
func (s Set) WaitHTTP(ctx context.Context, timeout time.Duration, url func(i int) string) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for i := range s {
		if err := WaitFor(ctx, url(i), HTTPOK(url(i)), s...); err != nil {
			return err
		}
	}
	return nil
}

// Exited is the Exited error of the first process of s that has died.
func (s Set) Exited() error {
	for _, p := range s {
		if err := p.Exited(); err != nil {
			return err
		}
	}
	return nil
}
