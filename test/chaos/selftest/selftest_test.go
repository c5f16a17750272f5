// Package selftest proves the chaos harness catches what it claims to:
// each planted bug (DESIGN.md) is a patch in bugs/, applied to a copy of
// the tree and built into a node binary of its own, run under the faults
// that expose it, and the harness must report the run as a failure of the
// right check. The production tree carries no trace of the bugs.
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
	// name: the patch is bugs/<name>.patch.
	name string
	// pkg holds the TestBug* test the patch adds, which shows the bug at
	// unit level before the harness runs.
	pkg    string
	faults string
	// catch: at least one of these checks must fail.
	catch []string
	// why the faults expose the bug, for the failure message.
	why string
}

var bugs = []planted{
	{
		name: "stalereads", pkg: "./cluster/routing/", faults: "partition-one,partition-raft,pause-leader",
		catch: []string{report.CheckLinearizability},
		why:   "a follower cut off from its leader answers balances from its own replica",
	},
	{
		name: "nofsync", pkg: "./shards/", faults: "kill-all",
		catch: []string{report.CheckInvariants, report.CheckLinearizability},
		why:   "writes acknowledged in the 2 s before every node is killed are lost",
	},
	{
		name: "noidempotency", pkg: "./actors/", faults: "kill-random",
		catch: []string{report.CheckInvariants, report.CheckLinearizability},
		why:   "the workload re-sends answered writes, and each is applied again",
	},
	{
		name: "applyclock", pkg: "./raftfsm/", faults: "clock-jump",
		catch: []string{report.CheckStateHashes},
		why:   "the replica whose clock jumped skips what the others apply",
	},
}

// Every patch in bugs/ is run, and every bug above has its patch.
func TestEveryPatchIsRun(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("bugs", "*.patch"))
	if err != nil {
		t.Fatal(err)
	}
	var patches, names []string
	for _, f := range files {
		patches = append(patches, strings.TrimSuffix(filepath.Base(f), ".patch"))
	}
	for _, b := range bugs {
		names = append(names, b.name)
	}
	slices.Sort(names)
	if !slices.Equal(patches, names) {
		t.Fatalf("patches in bugs/ %v, bugs in the self-test %v", patches, names)
	}
}

func TestPlantedBugsAreCaught(t *testing.T) {
	if os.Getenv("RATION_CHAOS_SELFTEST") != "1" {
		t.Skip("set RATION_CHAOS_SELFTEST=1 (make chaos-selftest): needs root and several minutes")
	}
	if os.Geteuid() != 0 {
		t.Fatal("the chaos harness needs root for network namespaces")
	}
	root := moduleRoot(t)
	bin := t.TempDir()
	runner := filepath.Join(bin, "chaos")
	goCmd(t, root, "build", "-o", runner, "github.com/ration/ration/test/chaos/cmd/chaos")

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
		t.Run(bug.name, func(t *testing.T) {
			t.Parallel()
			// The copy is of the whole repository; the node and the
			// bug's package are the production module's, at its root.
			tree := patchedTree(t, filepath.Join(root, "chaos", "selftest", "bugs", bug.name+".patch"))
			// -trimpath: the copies' packages share the build cache
			// wherever the patch leaves them alone.
			goCmd(t, tree, "test", "-trimpath", "-count=1", "-run", "^TestBug", bug.pkg)
			node := filepath.Join(bin, "ration-node-"+bug.name)
			goCmd(t, tree, "build", "-trimpath", "-tags", "chaos", "-o", node, "./cmd/node")
			dir := filepath.Join(out, bug.name)
			cmd := exec.Command(runner, "-binary", node, "-nodes", "3", "-seed", strconv.Itoa(100+i),
				"-duration", duration.String(), "-faults", bug.faults, "-out", dir)
			cmd.Dir = root
			output, err := cmd.CombinedOutput()
			summary := summaryLine(string(output))
			t.Logf("%s: %s", bug.name, summary)
			var exit *exec.ExitError
			switch {
			case err == nil:
				t.Fatalf("the harness passed a node with %s (%s):\n%s", bug.name, bug.why, summary)
			case !errors.As(err, &exit) || exit.ExitCode() != 1:
				t.Fatalf("the harness did not run to a verdict (%v); output:\n%s", err, tail(string(output), 40))
			}
			r, err := report.Read(filepath.Join(dir, "report.json"))
			if err != nil {
				t.Fatal(err)
			}
			failed := r.Failed()
			if !slices.ContainsFunc(bug.catch, func(c string) bool { return slices.Contains(failed, c) }) {
				t.Fatalf("%s failed %v, want one of %v (%s)", bug.name, failed, bug.catch, bug.why)
			}
		})
	}
}

// goCmd runs the go command in dir.
func goCmd(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, b)
	}
}

// moduleRoot is the test module's root (test/): tests run in their
// package's directory.
func moduleRoot(t *testing.T) string {
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
