package node_test

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ration/ration/client"
)

// A node of this release takes over a data dir written by the previous
// one (issue 12, part 5). testdata/upgrade/50632e3.tar.gz is a one-node
// data dir written by commit 50632e3 (3 shards, the shared raft log, raft
// snapshots and a log tail after them): users up-0..up-9 each got a grant
// "g" of 100 at 1000 and a deduction "d" of i+1 at 2000, then up-0..up-2 a
// deduction "tail" of 1 at 2500 after the snapshots. When a release
// changes what is on disk, add its predecessor's data dir here (see
// docs/NOTES.md, "Upgrades").
func TestTakesOverThePreviousReleasesDataDir(t *testing.T) {
	m := newMember(t, 1)
	m.id = "up1" // the node id the data dir was written by
	if err := untar(filepath.Join("testdata", "upgrade", "50632e3.tar.gz"), m.dir); err != nil {
		t.Fatal(err)
	}
	m.dir = filepath.Join(m.dir, "data")
	m.startWith(t, []string{m.gossip()}, 1) // no --shards: the data dir's
	t.Cleanup(func() { m.stop(t) })
	waitReady(t, m)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 10 {
		user := fmt.Sprintf("up-%d", i)
		want := int64(100 - (i + 1))
		if i < 3 {
			want--
		}
		b, err := m.c.Balance(ctx, user, client.Int64(3000))
		if err != nil || b.Balance != want {
			t.Fatalf("%s: %+v, %v; want balance %d", user, b, err, want)
		}
	}
	// The written ops are there as themselves: a retry is a duplicate.
	r, err := m.c.Deduct(ctx, "up-4", client.Deduction{ID: "d", Amount: 5, Timestamp: 2000})
	if err != nil || !r.Duplicate {
		t.Fatalf("retry of an old deduction: %+v, %v", r, err)
	}
	if _, err := m.c.Deduct(ctx, "up-4", client.Deduction{ID: "new", Amount: 10, Timestamp: 4000}); err != nil {
		t.Fatalf("a new write: %v", err)
	}
}

// untar extracts a gzipped tar of plain files and directories into dir.
func untar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return err
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unexpected entry type %c", h.Name, h.Typeflag)
		}
	}
}
