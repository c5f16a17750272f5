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

// countFile records, in the data dir, the shard count the dir was created
// with. ShardOf maps a user by the count, so a node that came up with
// another one would look for every user in the wrong group and answer as
// if the data were lost. The record is one decimal number and a newline,
// like the layout record beside it: there is nothing else to say about a
// data dir's count, and an operator can read (or, in a recovery, write) it
// with cat and echo. Something else to record later gets a file of its own.
const countFile = "shard-count"

// PreRecordShards is the shard count of a data dir from before the count
// was recorded when --shards was not set explicitly: the default of every
// release before the record. It is not the configured default and must not
// follow it: those data dirs were created with 32 whatever a later
// release's default is.
const PreRecordShards = 32

// ErrShardCountMismatch is returned for a data dir created with another
// shard count than the one asked for.
var ErrShardCountMismatch = errors.New("shards: data dir was created with another shard count")

// CountSource says where a node's shard count comes from (ChooseCount).
type CountSource int

const (
	// CountRecorded: the data dir records its count.
	CountRecorded CountSource = iota + 1
	// CountExplicit: --shards, set explicitly, on a data dir without a
	// record.
	CountExplicit
	// CountPreRecord: a data dir from before the record (it holds shard
	// state) and --shards unset: PreRecordShards.
	CountPreRecord
	// CountDefault: a new data dir and --shards unset: the configured
	// default, which gives way to the count of a cluster the node joins.
	CountDefault
)

func (s CountSource) String() string {
	switch s {
	case CountRecorded:
		return "recorded in the data dir"
	case CountExplicit:
		return "set by --shards"
	case CountPreRecord:
		return "data dir of an earlier release"
	case CountDefault:
		return "default"
	}
	return "CountSource(" + strconv.Itoa(int(s)) + ")"
}

// Settled reports whether the count is the node's for good: only the
// default on a new data dir may still give way to the cluster's.
func (s CountSource) Settled() bool { return s != CountDefault }

// ChooseCount decides the shard count of a node on dataDir from the dir's
// record and --shards (configured, and whether it was set explicitly):
//
//   - recorded: the record, and an explicit --shards that differs is an
//     ErrShardCountMismatch naming both;
//   - no record, shard state (a data dir of an earlier release): an
//     explicit --shards, or else PreRecordShards; either must exceed every
//     shard id the dir holds, or it cannot be the count the dir was
//     created with;
//   - no record, no shard state (a new data dir): configured, Settled if
//     it was explicit.
//
// It writes nothing: Open records the count it is given.
func ChooseCount(dataDir string, configured int, explicit bool) (int, CountSource, error) {
	have, recorded, err := readCount(dataDir)
	switch {
	case err != nil:
		return 0, 0, err
	case recorded && explicit && configured != have:
		return 0, 0, fmt.Errorf("%w: %s records %d shards, and --shards is set to %d (by flag, RATION_SHARDS or the config file). "+
			"Users are mapped to shards by the count, so with another one their data would seem lost: "+
			"unset --shards to use the recorded %d, or set it to %d (a cluster's shard count cannot change in place)",
			ErrShardCountMismatch, dataDir, have, configured, have, have)
	case recorded:
		return have, CountRecorded, nil
	}
	top, hasState, err := highestShard(dataDir)
	if err != nil {
		return 0, 0, err
	}
	switch {
	case !hasState && explicit:
		return configured, CountExplicit, nil
	case !hasState:
		return configured, CountDefault, nil
	}
	n, src := configured, CountExplicit
	if !explicit {
		n, src = PreRecordShards, CountPreRecord
	}
	if err := fits(dataDir, top, n, src); err != nil {
		return 0, 0, err
	}
	return n, src, nil
}

// fits refuses a count that a data dir without a record cannot have been
// created with: it holds shard top.
func fits(dataDir string, top, n int, src CountSource) error {
	if top < n {
		return nil
	}
	how := fmt.Sprintf("%d shards", n)
	switch src {
	case CountPreRecord:
		how += " (the default of earlier releases; --shards is unset)"
	case CountExplicit:
		how += " (--shards)"
	}
	return fmt.Errorf("%w: %s has no shard count record and holds shard %d, so it was not created with %s: "+
		"start it with --shards set to the count it was created with", ErrShardCountMismatch, dataDir, top, how)
}

// checkCount is Open's check: n must be the count dataDir records, or, in
// a data dir without a record, exceed every shard id it holds; it is then
// recorded, durably, before any group opens.
func checkCount(dataDir string, n int) error {
	have, recorded, err := readCount(dataDir)
	switch {
	case err != nil:
		return err
	case recorded && have != n:
		return fmt.Errorf("%w: %s records %d shards, and the host was opened with %d", ErrShardCountMismatch, dataDir, have, n)
	case recorded:
		return nil
	}
	top, _, err := highestShard(dataDir)
	if err != nil {
		return err
	}
	if err := fits(dataDir, top, n, 0); err != nil {
		return err
	}
	if err := writeRecord(dataDir, countFile, strconv.Itoa(n)); err != nil {
		return fmt.Errorf("shards: record shard count: %w", err)
	}
	return nil
}

// readCount reads the record; recorded is false when there is none.
func readCount(dataDir string) (n int, recorded bool, err error) {
	path := filepath.Join(dataDir, countFile)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("shards: read %s: %w", path, err)
	}
	n, err = parseCount(string(b))
	if err != nil {
		return 0, false, fmt.Errorf("shards: %s: %w", path, err)
	}
	return n, true, nil
}

// parseCount reads a record's text: a positive decimal number, with the
// newline writeRecord adds, or surrounding spaces an operator's editor
// might.
func parseCount(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 1 {
		return 0, fmt.Errorf("not a shard count: %q", s)
	}
	return n, nil
}

// highestShard returns the highest id of a shard with raft state in
// dataDir (ExistingShards' test, over every directory rather than a known
// count), and whether there is any.
func highestShard(dataDir string) (top int, found bool, err error) {
	entries, err := os.ReadDir(filepath.Join(dataDir, "shards"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return -1, false, nil
	case err != nil:
		return -1, false, fmt.Errorf("shards: list shard state: %w", err)
	}
	top = -1
	for _, e := range entries {
		id, err := strconv.Atoi(e.Name())
		if err != nil || id < 0 || !e.IsDir() || !hasState(filepath.Join(dataDir, "shards", e.Name())) {
			continue
		}
		top = max(top, id)
	}
	return top, top >= 0, nil
}

// hasState is ExistingShards' test of one shard directory: its snapshots
// (either layout) or its raft.db (the bolt one).
func hasState(dir string) bool {
	return exists(filepath.Join(dir, "raft.db")) || exists(filepath.Join(dir, "snapshots"))
}
