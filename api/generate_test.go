package api

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
// ignored to let machines with another protoc release run this test.
var protocVersionLine = regexp.MustCompile(`(?m)^//\s+(?:-\s+)?protoc\s+\S+$`)

// TestGeneratedCodeUpToDate regenerates the Go code into a temporary
// directory and fails if it differs from the committed files in rationv1,
// i.e. if a .proto was edited without running `go generate ./api/...`.
func TestGeneratedCodeUpToDate(t *testing.T) {
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
	var stderr bytes.Buffer
	cmd.Stdout = &stderr
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("generate.sh: %v\n%s", err, stderr.String())
	}

	fresh := generatedFiles(t, filepath.Join(out, "api", "rationv1"))
	committed := generatedFiles(t, "rationv1")
	if len(fresh) == 0 {
		t.Fatal("generate.sh produced no .pb.go files")
	}
	if !slices.Equal(fresh, committed) {
		t.Fatalf("generated files %v, committed %v; run `go generate ./api/...`", fresh, committed)
	}
	for _, name := range fresh {
		want := readNormalized(t, filepath.Join(out, "api", "rationv1", name))
		got := readNormalized(t, filepath.Join("rationv1", name))
		if !bytes.Equal(got, want) {
			t.Errorf("rationv1/%s is stale (%s); run `go generate ./api/...`", name, firstDiff(got, want))
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
