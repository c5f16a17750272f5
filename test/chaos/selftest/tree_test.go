package selftest

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// patchedTree is a copy of the repository's working tree as it is now
// (committed or not, untracked files too, ignored ones left out), with
// patch applied: the tree a planted bug is built from. It is removed when
// the test ends.
func patchedTree(t *testing.T, patch string) string {
	t.Helper()
	dst := t.TempDir()
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err != nil {
		t.Fatalf("git rev-parse --show-toplevel: %v", err)
	}
	root := string(bytes.TrimSpace(top))
	ls := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	ls.Dir = root
	list, err := ls.Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, name := range bytes.Split(bytes.TrimSuffix(list, []byte{0}), []byte{0}) {
		if err := copyFile(filepath.Join(root, string(name)), filepath.Join(dst, string(name))); err != nil {
			t.Fatal(err)
		}
	}
	// dst is no repository, and the ceiling keeps git from taking one
	// above it for dst's: git apply patches dst's files as patch(1) would.
	apply := exec.Command("git", "apply", patch)
	apply.Dir = dst
	apply.Env = append(os.Environ(), "GIT_CEILING_DIRECTORIES="+filepath.Dir(dst))
	if b, err := apply.CombinedOutput(); err != nil {
		t.Fatalf("git apply %s: %v\n%s", patch, err, b)
	}
	return dst
}

// copyFile copies a file or symlink; one deleted from the working tree
// but still in the index is skipped.
func copyFile(src, dst string) error {
	fi, err := os.Lstat(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(src)
		if err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, fi.Mode().Perm())
}
