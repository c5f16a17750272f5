package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/client"
	"github.com/ration/ration/test/chaos/check"
	"github.com/ration/ration/test/chaos/history"
	"github.com/ration/ration/test/chaos/report"
)

// saveRun writes a tiny run: a grant, a deduction and a read of user u.
func saveRun(t *testing.T, final []client.Event, withReport bool) string {
	t.Helper()
	dir := t.TempDir()
	rec, err := history.NewRecorder(filepath.Join(dir, "history.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UnixNano()
	rec.Add(history.Op{User: "u", Kind: history.Grant, ID: "g", Amount: 10, Timestamp: 100, Invoke: t0, Return: t0 + 10, Outcome: history.OK, Attempts: 1})
	rec.Add(history.Op{User: "u", Kind: history.Deduct, ID: "d", Amount: 4, Timestamp: 200, Invoke: t0 + 20, Return: t0 + 30, Outcome: history.OK, Attempts: 1,
		Allocations: []history.Allocation{{GrantID: "g", Amount: 4}}})
	at := int64(300)
	rec.Add(history.Op{User: "u", Kind: history.Balance, At: &at, ResultAt: &at, Invoke: t0 + 40, Return: t0 + 50, Outcome: history.OK, Balance: 6,
		Grants: []history.GrantBalance{{ID: "g", Remaining: 6, Timestamp: 100}}})
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	if err := (check.Final{Events: map[string][]client.Event{"u": final}}).WriteFile(filepath.Join(dir, "final.json")); err != nil {
		t.Fatal(err)
	}
	if withReport {
		r := report.Report{Pass: true, Seed: 42, Nodes: 3, Duration: time.Minute, Ops: 3,
			Checks:  map[string]report.CheckResult{report.CheckStateHashes: {Pass: true}, report.CheckLiveness: {Pass: true}},
			Faults:  []report.Fault{{Kind: "kill-leader", Target: "n1", Start: time.Now()}},
			Started: time.Now()}
		if err := report.Write(dir, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func goodFinal() []client.Event {
	return []client.Event{
		{Kind: client.EventGrant, ID: "g", Timestamp: 100, Amount: 10, BalanceAfter: 10},
		{Kind: client.EventDeduction, ID: "d", Timestamp: 200, Amount: 4, BalanceAfter: 6, Allocations: []client.Allocation{{GrantID: "g", Amount: 4}}},
	}
}

func TestPass(t *testing.T) {
	for _, withReport := range []bool{false, true} {
		dir := saveRun(t, goodFinal(), withReport)
		var out, errOut bytes.Buffer
		out2 := filepath.Join(t.TempDir(), "again")
		if code := run([]string{"-out", out2, dir}, &out, &errOut); code != 0 {
			t.Fatalf("exit %d: %s %s", code, out.String(), errOut.String())
		}
		if !strings.HasPrefix(out.String(), "PASS ") || strings.Count(out.String(), "\n") != 1 {
			t.Errorf("summary %q", out.String())
		}
		if withReport && !strings.Contains(out.String(), "seed=42 nodes=3") {
			t.Errorf("summary should keep report.json's run: %q", out.String())
		}
		if _, err := os.Stat(filepath.Join(out2, "timeline.svg")); err != nil {
			t.Error(err)
		}
	}
}

func TestFail(t *testing.T) {
	final := goodFinal()[:1] // the acknowledged deduction is lost
	dir := saveRun(t, final, true)
	var out, errOut bytes.Buffer
	if code := run([]string{dir}, &out, &errOut); code != 1 {
		t.Fatalf("exit %d, want 1: %s %s", code, out.String(), errOut.String())
	}
	if !strings.HasPrefix(out.String(), "FAIL ") || !strings.Contains(out.String(), "invariants") {
		t.Errorf("summary %q", out.String())
	}
	if !strings.Contains(errOut.String(), check.KindLostWrite) {
		t.Errorf("anomalies not listed: %s", errOut.String())
	}
}

func TestErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{t.TempDir()}, &out, &errOut); code != 2 {
		t.Errorf("empty dir: exit %d, want 2", code)
	}
	if code := run(nil, &out, &errOut); code != 2 {
		t.Errorf("no dir: exit %d, want 2", code)
	}
}
