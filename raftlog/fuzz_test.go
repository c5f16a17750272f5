package raftlog

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// FuzzDecodeLog: any bytes decode to an entry or ErrCorrupt, never a
// panic, and whatever decodes re-encodes to the same bytes.
func FuzzDecodeLog(f *testing.F) {
	f.Add(appendLog(nil, entry(1, 5, 2)))
	f.Add(appendLog(nil, &raft.Log{Index: 1, Term: 1, Type: raft.LogNoop}))
	f.Add(appendLog(nil, &raft.Log{Index: 9, Term: 3, Type: raft.LogConfiguration, Data: []byte{1, 2}, Extensions: []byte("x")}))
	f.Add([]byte{logVersion})
	f.Add([]byte{2, 0, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var l raft.Log
		if err := decodeLog(42, b, &l); err != nil {
			return
		}
		if l.Index != 42 {
			t.Fatalf("index %d", l.Index)
		}
		if again := appendLog(nil, &l); !bytes.Equal(again, b) {
			t.Fatalf("re-encoded %x, was %x", again, b)
		}
	})
}

// FuzzLogRoundTrip: every entry encodes and decodes to itself.
func FuzzLogRoundTrip(f *testing.F) {
	f.Add(uint64(1), uint64(1), uint8(0), []byte("data"), []byte(nil), int64(0))
	f.Add(^uint64(0), ^uint64(0), uint8(255), []byte(nil), []byte("ext"), int64(-1))
	f.Fuzz(func(t *testing.T, index, term uint64, typ uint8, data, ext []byte, at int64) {
		in := raft.Log{Index: index, Term: term, Type: raft.LogType(typ), Data: data, Extensions: ext}
		if at != 0 {
			in.AppendedAt = time.Unix(0, at)
		}
		b := appendLog(nil, &in)
		if len(b) > encodedLogSize(&in) {
			t.Fatalf("encoded %d bytes, size bound %d", len(b), encodedLogSize(&in))
		}
		var out raft.Log
		if err := decodeLog(index, b, &out); err != nil {
			t.Fatal(err)
		}
		if out.Term != in.Term || out.Type != in.Type || !bytes.Equal(out.Data, in.Data) ||
			!bytes.Equal(out.Extensions, in.Extensions) || !out.AppendedAt.Equal(in.AppendedAt) {
			t.Fatalf("got %+v, want %+v", out, in)
		}
	})
}

// FuzzLogKey: a log key names its group and index and nothing else does.
func FuzzLogKey(f *testing.F) {
	f.Add(uint32(0), uint64(0), []byte("r"))
	f.Add(^uint32(0), ^uint64(0), []byte("r\x00\x00\x00\x01s"))
	f.Fuzz(func(t *testing.T, group uint32, index uint64, other []byte) {
		k := logKey(group, index)
		if got, ok := logKeyIndex(group, k); !ok || got != index {
			t.Fatalf("logKeyIndex(logKey(%d, %d)) = %d, %v", group, index, got, ok)
		}
		if _, ok := logKeyIndex(group+1, k); ok {
			t.Fatal("another group's key was taken")
		}
		if bytes.Compare(k, groupPrefix(group)) < 0 || bytes.Compare(k, groupEnd(group)) >= 0 {
			t.Fatal("log key outside its group's range")
		}
		if bytes.Compare(logKeyAfter(group, index), k) <= 0 {
			t.Fatal("logKeyAfter not after")
		}
		sk := stableKey(group, other)
		if _, ok := logKeyIndex(group, sk); ok {
			t.Fatalf("stable key %x read as a log key", sk)
		}
		if bytes.Compare(sk, groupPrefix(group)) < 0 || bytes.Compare(sk, groupEnd(group)) >= 0 {
			t.Fatal("stable key outside its group's range")
		}
	})
}
