package raftlog

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// The crash test runs a child process (this test binary, re-executed) that
// appends to crashGroups groups at once and reports each append on stdout
// once StoreLogs has returned; the parent kills it with SIGKILL mid-run,
// reopens the engine and checks every group.

const (
	crashGroups = 32
	crashEnvDir = "RATION_RAFTLOG_CRASH_DIR"
)

// TestCrashChild is the child's body; it only runs when re-executed.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnvDir)
	if dir == "" {
		t.Skip("runs only as the crash test's child process")
	}
	s, err := Open(Options{Dir: dir})
	if err != nil {
		fmt.Fprintf(os.Stdout, "error %v\n", err)
		os.Exit(3)
	}
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", args...)
		out.Unlock()
	}
	for id := range uint32(crashGroups) {
		go crashAppender(s, id, say)
	}
	select {} // until killed
}

func crashAppender(s *Store, id uint32, say func(string, ...any)) {
	g, err := s.Group(id)
	if err != nil {
		say("error %v", err)
		os.Exit(3)
	}
	rng := rand.New(rand.NewPCG(uint64(id), uint64(time.Now().UnixNano())))
	for {
		first, _ := g.FirstIndex()
		last, _ := g.LastIndex()
		if rng.IntN(20) == 0 && last > first+10 {
			cut := first + rng.Uint64N(last-first-5)
			// Announced before the delete: once announced, the entries up
			// to cut may be gone whether or not its ack was seen.
			say("cut %d %d", id, cut)
			if err := g.DeleteRange(first, cut); err != nil {
				say("error %v", err)
				os.Exit(3)
			}
			continue
		}
		n := 1 + rng.Uint64N(8)
		if err := g.StoreLogs(entries(id, last+1, last+n, 1)); err != nil {
			say("error %v", err)
			os.Exit(3)
		}
		say("ack %d %d", id, last+n)
	}
}

type crashLedger struct {
	acked map[uint32]uint64 // highest acknowledged index per group
	cut   map[uint32]uint64 // highest announced compaction per group
}

func runCrashChild(t *testing.T, dir string, runFor time.Duration, led *crashLedger) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashEnvDir+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(runFor, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	// Every line the child wrote before the kill is in the pipe: read to
	// the end.
	sc := bufio.NewScanner(stdout)
	lines := 0
	for sc.Scan() {
		var kind string
		var id uint32
		var idx uint64
		if _, err := fmt.Sscanf(sc.Text(), "%s %d %d", &kind, &id, &idx); err != nil {
			t.Fatalf("child said %q", sc.Text())
		}
		switch kind {
		case "ack":
			led.acked[id] = max(led.acked[id], idx)
		case "cut":
			led.cut[id] = max(led.cut[id], idx)
		}
		lines++
	}
	_, _ = io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if lines == 0 || err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("child: %d lines, exit %v (want killed mid-run)", lines, err)
	}
}

// checkCrashed opens dir and checks every group: no hole between first
// and last, every entry exactly as written, and, when acks must hold,
// every acknowledged entry past the last announced cut still there.
func checkCrashed(t *testing.T, dir string, led *crashLedger, acksHold bool) {
	t.Helper()
	s := openStore(t, dir)
	defer s.Close()
	for id := range uint32(crashGroups) {
		g := openGroup(t, s, id)
		first, _ := g.FirstIndex()
		last, _ := g.LastIndex()
		if acksHold && last < led.acked[id] {
			t.Fatalf("group %d: last index %d, but %d was acknowledged", id, last, led.acked[id])
		}
		if acksHold && led.acked[id] > 0 && first > led.cut[id]+1 {
			t.Fatalf("group %d: first index %d, but only up to %d was ever cut", id, first, led.cut[id])
		}
		for i := first; i <= last && first > 0; i++ {
			checkEntry(t, g, entry(id, i, 1))
		}
		g.Close()
	}
}

func TestCrashMidAppend(t *testing.T) {
	rounds := 3
	if testing.Short() {
		rounds = 2
	}
	dir := t.TempDir()
	led := &crashLedger{acked: map[uint32]uint64{}, cut: map[uint32]uint64{}}
	rng := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	for round := range rounds {
		runCrashChild(t, dir, time.Duration(300+rng.IntN(900))*time.Millisecond, led)
		checkCrashed(t, dir, led, true)
		t.Logf("round %d: highest acks %v", round, sortedAcks(led.acked))
	}
}

func sortedAcks(m map[uint32]uint64) []uint64 {
	var out []uint64
	for _, v := range m {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// TestTornWALTail cuts the newest WAL file short at random points after a
// crash, as a torn last write would, and checks that the engine opens and
// every group is still a gap-free run of entries as written (the cut
// takes acknowledged entries with it: that is what a torn tail is).
func TestTornWALTail(t *testing.T) {
	dir := t.TempDir()
	led := &crashLedger{acked: map[uint32]uint64{}, cut: map[uint32]uint64{}}
	runCrashChild(t, dir, 700*time.Millisecond, led)
	wal := newestWAL(t, dir)
	info, err := os.Stat(wal)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(2, uint64(time.Now().UnixNano())))
	for try := range 4 {
		cp := filepath.Join(t.TempDir(), "db")
		copyDir(t, dir, cp)
		cut := rng.Int64N(info.Size())
		if err := os.Truncate(filepath.Join(cp, filepath.Base(wal)), cut); err != nil {
			t.Fatal(err)
		}
		if try%2 == 1 { // a torn write can leave garbage rather than nothing
			f, err := os.OpenFile(filepath.Join(cp, filepath.Base(wal)), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			garbage := make([]byte, 1+rng.IntN(4000))
			for i := range garbage {
				garbage[i] = byte(rng.Uint32())
			}
			_, _ = f.Write(garbage)
			f.Close()
		}
		checkCrashed(t, cp, led, false)
	}
}

func newestWAL(t *testing.T, dir string) string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(logs) == 0 {
		t.Fatal("no WAL file")
	}
	sort.Strings(logs) // numbered with leading zeros
	return logs[len(logs)-1]
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}
