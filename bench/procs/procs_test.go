package procs

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newGroup(t *testing.T) *Group {
	g := NewGroup(slog.New(slog.DiscardHandler))
	t.Cleanup(func() { g.Close(time.Second) })
	return g
}

// alive reports whether pid exists (and is not a zombie we reaped).
func alive(pid int) bool { return syscall.Kill(pid, 0) == nil }

func TestCloseStopsTheWholeProcessGroupAndRemovesDirs(t *testing.T) {
	g := newGroup(t)
	dir, err := g.TempDir("procs-test-", Owner{})
	if err != nil {
		t.Fatal(err)
	}
	log := filepath.Join(dir, "sh.log")
	// The shell forks a child, prints its pid and waits for it.
	p, err := g.Start(Spec{Name: "sh", Path: "/bin/sh", Args: []string{"-c", "sleep 300 & echo $!; wait"}, Dir: dir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	var child int
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = WaitFor(ctx, "the child's pid", func(context.Context) error {
		b, err := os.ReadFile(log)
		if err != nil {
			return err
		}
		child, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err
	}, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Close(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if p.Exited() != nil {
		t.Errorf("a stopped process reports a crash: %v", p.Exited())
	}
	// The child was the group's; SIGTERM reached it too. It may linger
	// as a zombie of init for a moment, so wait for it (bounded).
	if err := WaitFor(ctx, "the child to die", func(context.Context) error {
		if alive(child) {
			if b, _ := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat"); strings.Contains(string(b), ") Z ") {
				return nil
			}
			return errors.New("alive")
		}
		return nil
	}); err != nil {
		t.Errorf("child %d of the stopped shell: %v", child, err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("temp dir left behind: %v", err)
	}
}

func TestExitedReportsACrashWithTheLog(t *testing.T) {
	g := newGroup(t)
	dir, err := g.TempDir("procs-test-", Owner{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Start(Spec{Name: "crasher", Path: "/bin/sh", Args: []string{"-c", "echo first; echo boom >&2; exit 3"}, Dir: dir, Log: filepath.Join(dir, "c.log")})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Wait(context.Background()); err == nil {
		t.Fatal("exit 3 waited as success")
	}
	err = p.Exited()
	if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "crasher") {
		t.Errorf("Exited() = %v, want ErrExited naming crasher with its log", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = WaitFor(ctx, "never", func(context.Context) error { return errors.New("not yet") }, p)
	if !errors.Is(err, ErrExited) {
		t.Errorf("WaitFor on a dead process: %v, want ErrExited", err)
	}
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("a\nb\nc\nd\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[int]string{1: "d", 2: "c\nd", 4: "a\nb\nc\nd", 10: "a\nb\nc\nd"} {
		if got := Tail(path, n); got != want {
			t.Errorf("Tail(%d) = %q, want %q", n, got, want)
		}
	}
	if got := Tail(filepath.Join(t.TempDir(), "none"), 3); !strings.HasPrefix(got, "(") {
		t.Errorf("Tail of a missing file = %q", got)
	}
}

func TestCheckFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := CheckFree([]string{l.Addr().String()}, nil); err == nil {
		t.Errorf("CheckFree missed %s in use", l.Addr())
	}
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := CheckFree(nil, []string{c.LocalAddr().String()}); err == nil {
		t.Errorf("CheckFree missed udp %s in use", c.LocalAddr())
	}
	if err := CheckFree([]string{"127.0.0.1:0"}, []string{"127.0.0.1:0"}); err != nil {
		t.Errorf("CheckFree on free ports: %v", err)
	}
}
