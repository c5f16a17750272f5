package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Keys. Everything this package writes lives under prefixRaft, so the
// engine can later hold other data (applied state) beside the logs without
// a second key space to keep apart. Within it a group's keys are contiguous
// (group id first, big-endian), so dropping a group is one range delete,
// and within a group its log entries sort by index (big-endian too), so
// first and last entries are one seek each:
//
//	'r' group:u32 'l' index:u64   a raft.Log
//	'r' group:u32 's' key...      a StableStore value
const (
	prefixRaft = 'r'
	kindLog    = 'l'
	kindStable = 's'

	groupPrefixLen = 1 + 4
	logKeyLen      = groupPrefixLen + 1 + 8
)

func groupPrefix(group uint32) []byte {
	k := make([]byte, groupPrefixLen, logKeyLen)
	k[0] = prefixRaft
	binary.BigEndian.PutUint32(k[1:], group)
	return k
}

// groupEnd is the first key after every key of group.
func groupEnd(group uint32) []byte {
	k := make([]byte, groupPrefixLen)
	k[0] = prefixRaft
	if group == ^uint32(0) {
		k[0]++
		return k[:1]
	}
	binary.BigEndian.PutUint32(k[1:], group+1)
	return k
}

func logKey(group uint32, index uint64) []byte {
	k := make([]byte, logKeyLen)
	k[0] = prefixRaft
	binary.BigEndian.PutUint32(k[1:], group)
	k[groupPrefixLen] = kindLog
	binary.BigEndian.PutUint64(k[groupPrefixLen+1:], index)
	return k
}

// logKeyAfter is the first key past the log entry at index: the next
// entry's key, or the end of the group's log for the largest index.
func logKeyAfter(group uint32, index uint64) []byte {
	if index == ^uint64(0) {
		return append(groupPrefix(group), kindLog+1)
	}
	return logKey(group, index+1)
}

// logKeyIndex returns the index of a log key of group, or false if k is
// not one.
func logKeyIndex(group uint32, k []byte) (uint64, bool) {
	if len(k) != logKeyLen || k[0] != prefixRaft || binary.BigEndian.Uint32(k[1:]) != group || k[groupPrefixLen] != kindLog {
		return 0, false
	}
	return binary.BigEndian.Uint64(k[groupPrefixLen+1:]), true
}

func stableKey(group uint32, key []byte) []byte {
	k := make([]byte, 0, groupPrefixLen+1+len(key))
	k = append(k, prefixRaft, 0, 0, 0, 0, kindStable)
	binary.BigEndian.PutUint32(k[1:], group)
	return append(k, key...)
}

// Log values. The index is the key's; the rest of raft.Log follows a
// version byte, so that a later release can change the layout and still
// read what this one wrote:
//
//	version:u8=1 type:u8 term:uvarint appended_at:varint (Unix ns, 0 = unset)
//	len(data):uvarint data len(extensions):uvarint extensions
//
// No checksum of our own: Pebble checksums every WAL chunk and every
// sstable block, and reports a mismatch as corruption.
const logVersion = 1

// ErrCorrupt is returned for a stored value this package cannot decode.
var ErrCorrupt = errors.New("raftlog: corrupt entry")

func appendLog(dst []byte, l *raft.Log) []byte {
	dst = append(dst, logVersion, byte(l.Type))
	dst = binary.AppendUvarint(dst, l.Term)
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	dst = binary.AppendVarint(dst, at)
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	return append(dst, l.Extensions...)
}

func encodedLogSize(l *raft.Log) int {
	return 2 + 3*binary.MaxVarintLen64 + len(l.Data) + len(l.Extensions)
}

// decodeLog fills out from b, copying Data and Extensions: b belongs to
// the engine and is only valid until its closer runs.
func decodeLog(index uint64, b []byte, out *raft.Log) error {
	if len(b) < 2 {
		return fmt.Errorf("%w: index %d: %d bytes", ErrCorrupt, index, len(b))
	}
	if b[0] != logVersion {
		return fmt.Errorf("%w: index %d: unknown version %d", ErrCorrupt, index, b[0])
	}
	typ := raft.LogType(b[1])
	b = b[2:]
	term, n := uvarint(b)
	if n <= 0 {
		return fmt.Errorf("%w: index %d: term", ErrCorrupt, index)
	}
	b = b[n:]
	uat, n := uvarint(b)
	at := int64(uat>>1) ^ -int64(uat&1) // zig-zag, as binary.Varint
	if n <= 0 {
		return fmt.Errorf("%w: index %d: appended_at", ErrCorrupt, index)
	}
	b = b[n:]
	data, b, err := takeBytes(b)
	if err != nil {
		return fmt.Errorf("%w: index %d: data: %v", ErrCorrupt, index, err)
	}
	ext, b, err := takeBytes(b)
	if err != nil {
		return fmt.Errorf("%w: index %d: extensions: %v", ErrCorrupt, index, err)
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: index %d: %d trailing bytes", ErrCorrupt, index, len(b))
	}
	*out = raft.Log{Index: index, Term: term, Type: typ, Data: data, Extensions: ext}
	if at != 0 {
		out.AppendedAt = time.Unix(0, at)
	}
	return nil
}

// takeBytes reads a uvarint length and that many bytes, copied; an empty
// field decodes as nil, as raft itself leaves it.
func takeBytes(b []byte) (field, rest []byte, err error) {
	n, w := uvarint(b)
	if w <= 0 {
		return nil, nil, errors.New("bad length")
	}
	b = b[w:]
	if n > uint64(len(b)) {
		return nil, nil, fmt.Errorf("length %d past the end (%d left)", n, len(b))
	}
	if n == 0 {
		return nil, b, nil
	}
	return append([]byte(nil), b[:n]...), b[n:], nil
}

// uvarint is binary.Uvarint that also refuses a non-minimal encoding
// (n <= 0), so that every value has exactly one encoding and a flipped
// continuation bit is caught, not read as another number.
func uvarint(b []byte) (uint64, int) {
	v, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, -1
	}
	return v, n
}
