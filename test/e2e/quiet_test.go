package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// quietFlags make a node log what a clean start and stop must keep at
// INFO, as JSON records whose level can be read back. Raft's timing is
// relaxed: on a machine whose cores the tests share, a leader may go
// 500 ms without an answer while serving, and raft rightly warns then;
// that is not what these tests are about.
var quietFlags = []string{"--log-level", "info", "--log-format", "json",
	"--raft-heartbeat-timeout", "3s", "--raft-election-timeout", "3s", "--raft-leader-lease-timeout", "2s"}

// A fresh node that starts, serves and stops gracefully logs nothing
// above INFO.
func TestQuietSingleNode(t *testing.T) {
	p := newProc(t, quietFlags...)
	p.start()
	writeBriefly(t, []*proc{p})
	if err := p.stop(30 * time.Second); err != nil {
		t.Fatalf("stop: %v\n%s", err, p.log())
	}
	checkQuiet(t, p)
}

// A three-node cluster that forms, serves (requests forwarded between
// the nodes), and is then stopped a node at a time, as a rolling restart
// or a scale-down does, logs nothing above INFO on any node: each knows
// the others are going away on purpose.
func TestQuietClusterStopOneAtATime(t *testing.T) {
	procs := newCluster(t, 3, quietFlags...)
	writeBriefly(t, procs)
	for i := len(procs) - 1; i >= 0; i-- {
		start := time.Now()
		if err := procs[i].stop(60 * time.Second); err != nil {
			t.Fatalf("stop %s: %v\n%s", procs[i].id, err, procs[i].log())
		}
		t.Logf("%s stopped in %v", procs[i].id, time.Since(start).Round(time.Millisecond))
	}
	for _, p := range procs {
		checkQuiet(t, p)
	}
}

// The same cluster stopped whole at once, as Ctrl-C on `make cluster`
// does: every node exits cleanly (it waits for no leave broadcast nobody
// can hear) and logs nothing above INFO.
func TestQuietClusterStopAllAtOnce(t *testing.T) {
	procs := newCluster(t, 3, quietFlags...)
	writeBriefly(t, procs)
	start := time.Now()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() {
			if err := p.stop(60 * time.Second); err != nil {
				t.Errorf("stop %s: %v\n%s", p.id, err, p.log())
			}
		})
	}
	wg.Wait()
	t.Logf("3 nodes stopped together in %v", time.Since(start).Round(time.Millisecond))
	for _, p := range procs {
		checkQuiet(t, p)
	}
}

// writeBriefly writes through every node until each has acknowledged a
// few writes of users spread over the shards, so that actors, forwarding
// between nodes and the raft groups have worked before the stop.
func writeBriefly(t *testing.T, procs []*proc) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() {
			for i, acked := 0, 0; acked < 10; i++ {
				url := fmt.Sprintf("%s/v1/users/quiet-%s-u%d/grants", p.base(), p.id, i)
				status, body, err := post(ctx, url, fmt.Sprintf(`{"id":"g%d","amount":1,"timestamp":0}`, i))
				switch {
				case ctx.Err() != nil:
					t.Errorf("%s acknowledged %d writes in 60s; last: %d %s %v", p.id, acked, status, body, err)
					return
				case err == nil && status == 200:
					acked++
				}
			}
		})
	}
	wg.Wait()
}

// checkQuiet fails the test for every line of p's log above INFO, and for
// every line that is not a JSON log record (a panic, a race report).
func checkQuiet(t *testing.T, p *proc) {
	t.Helper()
	f, err := os.Open(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var loud []string
	lines := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			continue
		}
		lines++
		var rec struct {
			Level slog.Level `json:"level"`
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Level > slog.LevelInfo {
			loud = append(loud, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if lines == 0 {
		t.Errorf("%s logged nothing", p.id)
	}
	if len(loud) > 0 {
		t.Errorf("%s logged %d lines above INFO (or not slog JSON):\n%s\nits log:\n%s", p.id, len(loud), strings.Join(loud, "\n"), p.log())
	}
}
