// Package protocheck checks that committed protobuf Go code matches what its
// generate.sh produces now, so a .proto edited without regenerating fails
// the tests. Each package with a generate.sh calls it from a test.
package protocheck

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// protocVersionLine matches the header line naming the protoc version
// ("// \tprotoc        v3.21.12", "// - protoc             v3.21.12"). It is
// the only part of the output that depends on which protoc the machine has,
// not on the .proto or the plugin versions pinned in go.mod, so it is
// ignored to let machines with another protoc release run the check.
var protocVersionLine = regexp.MustCompile(`(?m)^//\s+(?:-\s+)?protoc\s+\S+$`)

// UpToDate runs ./generate.sh (in the test's package directory) into a
// temporary directory and fails t if the *.pb.go files it writes under
// outDir differ from those committed in dir. hint is the command that
// regenerates them. It skips in -short mode (it builds the protoc
// plugins) and where protoc or bash is missing.
func UpToDate(t *testing.T, outDir, dir, hint string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the protoc plugins; skipped in -short mode")
	}
	protoc := os.Getenv("PROTOC")
	if protoc == "" {
		protoc = "protoc"
	}
	if _, err := exec.LookPath(protoc); err != nil {
		t.Skipf("protoc not available (%v); install protobuf-compiler to run this check", err)
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skipf("bash not available: %v", err)
	}

	out := t.TempDir()
	cmd := exec.Command("bash", "generate.sh", out)
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Run(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, output.String())
	}

	fresh := generatedFiles(t, filepath.Join(out, outDir))
	committed := generatedFiles(t, dir)
	if len(fresh) == 0 {
		t.Fatal("generate.sh produced no .pb.go files")
	}
	if !slices.Equal(fresh, committed) {
		t.Fatalf("generated files %v, committed %v; run `%s`", fresh, committed, hint)
	}
	for _, name := range fresh {
		want := readNormalized(t, filepath.Join(out, outDir, name))
		got := readNormalized(t, filepath.Join(dir, name))
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale (%s); run `%s`", filepath.Join(dir, name), firstDiff(got, want), hint)
		}
	}
}

func generatedFiles(t *testing.T, dir string) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*.pb.go"))
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = filepath.Base(m)
	}
	slices.Sort(names)
	return names
}

func readNormalized(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return protocVersionLine.ReplaceAll(b, []byte("// protoc (version ignored)"))
}

func firstDiff(got, want []byte) string {
	g := strings.Split(string(got), "\n")
	w := strings.Split(string(want), "\n")
	for i := 0; i < len(g) || i < len(w); i++ {
		var gl, wl string
		if i < len(g) {
			gl = g[i]
		}
		if i < len(w) {
			wl = w[i]
		}
		if gl != wl {
			return fmt.Sprintf("line %d: committed %q, generated %q", i+1, gl, wl)
		}
	}
	return "no line differs"
}
