// Package selftest proves the chaos harness catches what it claims to:
// each planted bug (chaos/DESIGN.md) is built into a node binary of its
// own, run under the faults that expose it, and the harness must report
// the run as a failure of the right check.
//
// It needs root (network namespaces) and several minutes, so it runs only
// with RATION_CHAOS_SELFTEST=1: `make chaos-selftest`.
package selftest

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ration/ration/test/chaos/report"
)

// planted is one bug and the run that must catch it.
type planted struct {
	tag    string
	faults string
	// catch: at least one of these checks must fail.
	catch []string
	// why the faults expose the bug, for the failure message.
	why string
}

var bugs = []planted{
	{
		tag: "chaosbug_stalereads", faults: "partition-one,partition-raft,pause-leader",
		catch: []string{report.CheckLinearizability},
		why:   "a follower cut off from its leader answers balances from its own replica",
	},
	{
		tag: "chaosbug_nofsync", faults: "kill-all",
		catch: []string{report.CheckInvariants, report.CheckLinearizability},
		why:   "writes acknowledged in the 2 s before every node is killed are lost",
	},
	{
		tag: "chaosbug_noidempotency", faults: "kill-random",
		catch: []string{report.CheckInvariants, report.CheckLinearizability},
		why:   "the workload re-sends answered writes, and each is applied again",
	},
	{
		tag: "chaosbug_applyclock", faults: "clock-jump",
		catch: []string{report.CheckStateHashes},
		why:   "the replica whose clock jumped skips what the others apply",
	},
}

func TestPlantedBugsAreCaught(t *testing.T) {
	if os.Getenv("RATION_CHAOS_SELFTEST") != "1" {
		t.Skip("set RATION_CHAOS_SELFTEST=1 (make chaos-selftest): needs root and several minutes")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the chaos harness needs root for network namespaces")
	}
	root := repoRoot(t)
	bin := t.TempDir()
	runner := filepath.Join(bin, "chaos")
	goBuild(t, root, runner, "", "github.com/ration/ration/test/chaos/cmd/chaos")

	out := os.Getenv("RATION_CHAOS_SELFTEST_OUT")
	if out == "" {
		out = t.TempDir()
	}
	duration := 40 * time.Second
	if d, err := time.ParseDuration(os.Getenv("RATION_CHAOS_SELFTEST_DURATION")); err == nil {
		duration = d
	}
	// The runs are mostly waiting on fsyncs and faults, and the harness
	// gives concurrent runs their own namespaces and subnets: `go test
	// -parallel` sets how many run at once (make chaos-selftest: two).
	for i, bug := range bugs {
		t.Run(bug.tag, func(t *testing.T) {
			t.Parallel()
			node := filepath.Join(bin, "ration-node-"+bug.tag)
			goBuild(t, root, node, "chaos,"+bug.tag, "github.com/ration/ration/cmd/node")
			dir := filepath.Join(out, bug.tag)
			cmd := exec.Command(runner, "-binary", node, "-nodes", "3", "-seed", strconv.Itoa(100+i),
				"-duration", duration.String(), "-faults", bug.faults, "-out", dir)
			cmd.Dir = root
			output, err := cmd.CombinedOutput()
			summary := summaryLine(string(output))
			t.Logf("%s: %s", bug.tag, summary)
			var exit *exec.ExitError
			switch {
			case err == nil:
				t.Fatalf("the harness passed a node with %s (%s):\n%s", bug.tag, bug.why, summary)
			case !errors.As(err, &exit) || exit.ExitCode() != 1:
				t.Fatalf("the harness did not run to a verdict (%v); output:\n%s", err, tail(string(output), 40))
			}
			r, err := report.Read(filepath.Join(dir, "report.json"))
			if err != nil {
				t.Fatal(err)
			}
			failed := r.Failed()
			if !slices.ContainsFunc(bug.catch, func(c string) bool { return slices.Contains(failed, c) }) {
				t.Fatalf("%s failed %v, want one of %v (%s)", bug.tag, failed, bug.catch, bug.why)
			}
		})
	}
}

func goBuild(t *testing.T, root, out, tags, pkg string) {
	t.Helper()
	args := []string{"build", "-o", out}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.Command("go", append(args, pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, b)
	}
}

// repoRoot is the test module's root (test/): tests run in their
// package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// summaryLine is the harness's verdict line, PASS or FAIL ...
func summaryLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "PASS ") || strings.HasPrefix(lines[i], "FAIL ") {
			return lines[i]
		}
	}
	return "(no summary line)"
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
