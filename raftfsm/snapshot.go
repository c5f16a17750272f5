package raftfsm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/hashicorp/raft"

	"github.com/ration/ration/ledger"
)

// The snapshot format, version 1:
//
//	"RFSN" 0x01
//	applied index   8 bytes little-endian
//	user count      uvarint
//	per user, in strictly increasing id order:
//	    idLen uvarint, id, version uvarint, logLen uvarint, log (oplog.go)
//	crc32c of everything before, 4 bytes big-endian (hash/crc32's Sum)
//
// and nothing after. Restore checks all of it, every operation included.
const (
	snapMagic   = "RFSN"
	snapVersion = 1
	// snapChunk bounds what Restore allocates ahead of data actually read,
	// so a corrupt length cannot make it allocate gigabytes.
	snapChunk = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// snapshot is a capture of every user's log: immutable prefixes, so Persist
// needs no lock while Apply goes on appending.
type snapshot struct {
	users   []userRef
	applied uint64
}

// Snapshot captures the state in O(users) under the read lock; the
// encoding happens in Persist, concurrently with Apply.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s := (*Shard)(f)
	users, applied := s.capture()
	// raft calls Snapshot from its FSM goroutine, between Applies: the
	// count matches the capture exactly.
	s.snapOps.Store(s.appliedOps.Load())
	return &snapshot{users: users, applied: applied}, nil
}

// Persist writes the snapshot to sink and closes it, or cancels it on error.
func (sn *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := sn.write(sink); err != nil {
		if cerr := sink.Cancel(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("cancel sink: %w", cerr))
		}
		return fmt.Errorf("raftfsm: persist snapshot: %w", err)
	}
	if err := sink.Close(); err != nil {
		return fmt.Errorf("raftfsm: persist snapshot: close sink: %w", err)
	}
	return nil
}

// Release is a no-op: the snapshot holds nothing but references.
func (sn *snapshot) Release() {}

// write streams the encoding to w.
func (sn *snapshot) write(w io.Writer) error {
	sortRefs(sn.users)
	crc := crc32.New(castagnoli)
	bw := bufio.NewWriterSize(io.MultiWriter(w, crc), 64<<10)
	var buf [4 + 1 + 8 + 3*binary.MaxVarintLen64]byte
	b := append(buf[:0], snapMagic...)
	b = append(b, snapVersion)
	b = binary.LittleEndian.AppendUint64(b, sn.applied)
	b = binary.AppendUvarint(b, uint64(len(sn.users)))
	bw.Write(b)
	for _, u := range sn.users {
		bw.Write(binary.AppendUvarint(buf[:0], uint64(len(u.id))))
		bw.WriteString(u.id)
		b = binary.AppendUvarint(buf[:0], u.version)
		b = binary.AppendUvarint(b, uint64(len(u.ops)))
		bw.Write(b)
		// bufio.Writer sticks at its first error, so checking once at
		// the end is enough.
		bw.Write(u.ops)
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	_, err := w.Write(crc.Sum(buf[:0]))
	return err
}

// Restore replaces the state with the snapshot's, after checking all of it.
// On error the state is unchanged.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	s := (*Shard)(f)
	users, applied, err := readSnapshot(rc)
	if err != nil {
		return fmt.Errorf("raftfsm: restore: %w", err)
	}
	var total uint64
	for _, u := range users {
		total += u.version
	}
	s.mu.Lock()
	s.users = users
	s.applied.Store(applied)
	s.stateOps.Store(total)
	s.snapOps.Store(s.appliedOps.Load())
	s.mu.Unlock()
	s.notifyApplied()
	return nil
}

// snapReader reads a snapshot while checksumming what it consumes (not what
// bufio reads ahead, which includes the trailer).
type snapReader struct {
	br  *bufio.Reader
	crc uint32
}

func (r *snapReader) ReadByte() (byte, error) {
	c, err := r.br.ReadByte()
	if err == nil {
		r.crc = crc32.Update(r.crc, castagnoli, []byte{c})
	}
	return c, err
}

func (r *snapReader) full(p []byte) error {
	if _, err := io.ReadFull(r.br, p); err != nil {
		return err
	}
	r.crc = crc32.Update(r.crc, castagnoli, p)
	return nil
}

// errVarintOverflow is binary.ReadUvarint's overflow error, which that
// package does not export, so that short can tell it from an I/O error.
var errVarintOverflow = fmt.Errorf("%w: varint overflows 64 bits", ErrCorruptSnapshot)

func (r *snapReader) uvarint() (uint64, error) {
	var x uint64
	var shift uint
	for i := range binary.MaxVarintLen64 {
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		if c < 0x80 {
			if i == binary.MaxVarintLen64-1 && c > 1 {
				return 0, errVarintOverflow
			}
			return x | uint64(c)<<shift, nil
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	return 0, errVarintOverflow
}

// bytes reads n bytes, allocating no more than snapChunk ahead of the data.
func (r *snapReader) bytes(n uint64) ([]byte, error) {
	buf := make([]byte, 0, min(n, snapChunk))
	for uint64(len(buf)) < n {
		k := min(n-uint64(len(buf)), snapChunk)
		start := len(buf)
		buf = slices.Grow(buf, int(k))[:start+int(k)]
		if err := r.full(buf[start:]); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

func corrupt(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCorruptSnapshot, fmt.Sprintf(format, args...))
}

// short turns the EOFs of a truncated snapshot into corruption errors and
// leaves other read errors as they are.
func short(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return corrupt("truncated in %s", what)
	}
	if errors.Is(err, ErrCorruptSnapshot) {
		return fmt.Errorf("%w in %s", err, what)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

func readSnapshot(rd io.Reader) (map[string]*userLog, uint64, error) {
	r := &snapReader{br: bufio.NewReaderSize(rd, 64<<10)}
	var hdr [4 + 1 + 8]byte
	if err := r.full(hdr[:]); err != nil {
		return nil, 0, short("header", err)
	}
	if string(hdr[:4]) != snapMagic {
		return nil, 0, corrupt("bad magic %q", hdr[:4])
	}
	if hdr[4] != snapVersion {
		return nil, 0, corrupt("unknown format version %d", hdr[4])
	}
	applied := binary.LittleEndian.Uint64(hdr[5:])
	count, err := r.uvarint()
	if err != nil {
		return nil, 0, short("user count", err)
	}
	users := make(map[string]*userLog, min(count, 1<<16))
	var prev string
	for i := uint64(0); i < count; i++ {
		n, err := r.uvarint()
		if err != nil {
			return nil, 0, short("user id", err)
		}
		if n == 0 || n > ledger.MaxIDLen {
			return nil, 0, corrupt("user %d: id length %d", i, n)
		}
		idb, err := r.bytes(n)
		if err != nil {
			return nil, 0, short("user id", err)
		}
		id := string(idb)
		if !ledger.ValidID(id) {
			return nil, 0, corrupt("user %d: invalid id %q", i, id)
		}
		if i > 0 && id <= prev {
			return nil, 0, corrupt("user %q after %q: ids out of order", id, prev)
		}
		prev = id
		version, err := r.uvarint()
		if err != nil {
			return nil, 0, short("version", err)
		}
		logLen, err := r.uvarint()
		if err != nil {
			return nil, 0, short("log length", err)
		}
		ops, err := r.bytes(logLen)
		if err != nil {
			return nil, 0, short("log", err)
		}
		if version == 0 {
			return nil, 0, corrupt("user %q: empty log", id)
		}
		if err := checkLog(ops, version); err != nil {
			return nil, 0, corrupt("user %q: log of version %d: %v", id, version, err)
		}
		users[id] = &userLog{version: version, ops: ops}
	}
	sum := r.crc
	var trailer [4]byte
	if _, err := io.ReadFull(r.br, trailer[:]); err != nil {
		return nil, 0, short("checksum", err)
	}
	if got := binary.BigEndian.Uint32(trailer[:]); got != sum {
		return nil, 0, corrupt("checksum %08x, computed %08x", got, sum)
	}
	if _, err := r.br.ReadByte(); err != io.EOF {
		if err != nil {
			return nil, 0, fmt.Errorf("read after checksum: %w", err)
		}
		return nil, 0, corrupt("data after checksum")
	}
	return users, applied, nil
}
