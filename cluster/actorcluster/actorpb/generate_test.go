package actorpb

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
)

// protocVersionLine matches the header line naming the protoc release, the
// only part of the output that depends on the machine rather than on the
// .proto and the plugin pinned in go.mod.
var protocVersionLine = regexp.MustCompile(`(?m)^//\s+(?:-\s+)?protoc\s+\S+$`)

// TestGeneratedCodeUpToDate fails if envelope.proto was edited without
// regenerating envelope.pb.go.
func TestGeneratedCodeUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("builds protoc-gen-go; skipped in -short mode")
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
	want := readNormalized(t, filepath.Join(out, "cluster", "actorcluster", "actorpb", "envelope.pb.go"))
	got := readNormalized(t, "envelope.pb.go")
	if !bytes.Equal(got, want) {
		t.Fatal("envelope.pb.go is stale; run `go generate ./cluster/actorcluster/actorpb/`")
	}
}

func readNormalized(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return protocVersionLine.ReplaceAll(b, []byte("// protoc (version ignored)"))
}
