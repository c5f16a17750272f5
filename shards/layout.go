package shards

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// LogStore names where a node keeps its raft logs.
type LogStore string

const (
	// LogStoreShared keeps every group's log and stable store in one
	// engine per node (package raftlog, under DataDir/raftlog), so one
	// fsync covers the appends of every group. The default.
	LogStoreShared LogStore = "shared"
	// LogStoreBolt keeps one raft-boltdb file per group
	// (DataDir/shards/<id>/raft.db), each paying its own fsyncs: the
	// layout of earlier releases, kept for comparison.
	LogStoreBolt LogStore = "bolt"
)

// ParseLogStore checks a log store name; empty means the default.
func ParseLogStore(s string) (LogStore, error) {
	switch LogStore(s) {
	case "", LogStoreShared:
		return LogStoreShared, nil
	case LogStoreBolt:
		return LogStoreBolt, nil
	}
	return "", fmt.Errorf("raft log store %q: must be %q or %q", s, LogStoreShared, LogStoreBolt)
}

// layoutFile records, in the data dir, the log store the dir was created
// with: the two layouts cannot read each other's logs, and a node that
// started on the wrong one would come up with an empty log and rejoin its
// groups as a blank replica, or bootstrap a second history.
const layoutFile = "raft-log-store"

// ErrLayoutMismatch is returned by Open for a data dir created with the
// other log store.
var ErrLayoutMismatch = errors.New("shards: data dir was created with another raft log store")

// checkLayout records want in a new data dir, or checks it against the
// one the dir records. A data dir from before the record (raft.db files,
// no record) is a bolt one.
func checkLayout(dataDir string, want LogStore) error {
	path := filepath.Join(dataDir, layoutFile)
	b, err := os.ReadFile(path)
	var have LogStore
	switch {
	case err == nil:
		have = LogStore(strings.TrimSpace(string(b)))
	case errors.Is(err, fs.ErrNotExist):
		old, gerr := filepath.Glob(filepath.Join(dataDir, "shards", "*", "raft.db"))
		if gerr != nil || len(old) == 0 {
			return writeLayout(dataDir, want)
		}
		have = LogStoreBolt
	default:
		return fmt.Errorf("shards: read %s: %w", path, err)
	}
	if have != want {
		return fmt.Errorf("%w: %s holds raft logs in the %q layout and this node is configured for %q; "+
			"start it with --raft-log-store %s (a data dir cannot change layout in place: "+
			"to move a node to the other layout, remove it from the cluster and add it back with an empty data dir)",
			ErrLayoutMismatch, dataDir, have, want, have)
	}
	if err != nil { // a pre-record bolt dir: record it now
		return writeLayout(dataDir, want)
	}
	return nil
}

// writeLayout writes the record durably, before any raft state exists: a
// record lost to a power cut while the logs survived would let the node
// open them with the other layout.
func writeLayout(dataDir string, ls LogStore) error {
	if err := writeRecord(dataDir, layoutFile, string(ls)); err != nil {
		return fmt.Errorf("shards: record raft log store: %w", err)
	}
	return nil
}

// writeRecord writes value and a newline to dataDir/name durably: to a
// temporary file, synced, renamed over name, and the directory synced, so
// the record is either the old one or the new one, whole, after a crash.
func writeRecord(dataDir, name, value string) error {
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return err
	}
	tmp := filepath.Join(dataDir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dataDir, name))
	}
	if err == nil {
		err = syncDir(dataDir)
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ExistingShards lists the shards that have raft state in dataDir, for a
// restarted node to host exactly what it hosted before: a shard's
// directory holds its snapshots in either layout, and its raft.db too in
// the bolt one. RemoveGroup deletes the directory last.
func ExistingShards(dataDir string, total int) []uint32 {
	var out []uint32
	for s := range total {
		if hasState(filepath.Join(dataDir, "shards", strconv.Itoa(s))) {
			out = append(out, uint32(s))
		}
	}
	return out
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
