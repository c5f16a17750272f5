package ledger

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
)

// opsFromBytes turns fuzz input into operations: 8 bytes each, with small
// id and timestamp spaces so that ties, retries and conflicts are common.
func opsFromBytes(data []byte) []any {
	var ops []any
	for len(data) >= 8 && len(ops) < 48 {
		b := data[:8]
		data = data[8:]
		ts := int64(b[2]) - 2 // a few negative timestamps
		amount := int64(int8(b[3]))
		switch b[0] % 3 {
		case 0, 1:
			g := Grant{ID: fmt.Sprintf("g%d", b[1]%12), Amount: amount, Timestamp: ts, ExpiresAt: Never, Priority: int32(int8(b[5])) % 3}
			if b[4]%3 != 0 {
				g.ExpiresAt = ts + int64(b[4])/4 - 8 // sometimes <= ts: invalid
			}
			if b[6] == 0xff {
				g.Amount = Never - 3 // overflow of the total
			}
			ops = append(ops, g)
		default:
			ops = append(ops, Deduction{ID: fmt.Sprintf("d%d", b[1]%16), Amount: amount % 40, Timestamp: ts})
		}
	}
	return ops
}

// FuzzLedger replays arbitrary operations through the ledger and the
// reference model and requires the same answers.
func FuzzLedger(f *testing.F) {
	f.Add([]byte("\x00\x01\x05\x0a\x00\x00\x00\x00\x02\x01\x06\x05\x00\x00\x00\x00"))
	f.Add([]byte("\x00\x01\x05\x0a\x30\x00\x00\x00\x00\x02\x03\x0a\x00\x01\x00\x00\x02\x01\x09\x0c\x00\x00\x00\x00\x02\x02\x04\x03\x00\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, m := New(), &refLedger{}
		for i, op := range opsFromBytes(data) {
			var got, want Result
			var gotErr, wantErr error
			switch op := op.(type) {
			case Grant:
				got, gotErr = l.Grant(op)
				want, wantErr = m.grant(op)
			case Deduction:
				got, gotErr = l.Deduct(op)
				want, wantErr = m.deduct(op)
			}
			if !sameErr(gotErr, wantErr) {
				t.Fatalf("op %d %+v: got %v, want %v", i, op, gotErr, wantErr)
			}
			if len(got.Allocations)+len(want.Allocations) > 0 && !reflect.DeepEqual(got, want) {
				t.Fatalf("op %d %+v: got %+v, want %+v", i, op, got, want)
			}
			checkInvariants(t, l)
		}
		for at := int64(-1); at < 300; at += 7 {
			if b, w := l.Balance(at), m.balance(at); b != w {
				t.Fatalf("balance at %d = %d, want %d", at, b, w)
			}
		}
		if hl, hm := fullHistory(l), m.history(); !reflect.DeepEqual(hl, hm) {
			t.Fatalf("history\n got %+v\nwant %+v", hl, hm)
		}
		r := roundTrip(t, l)
		assertSameHistory(t, r, l)
	})
}

// FuzzDecode feeds arbitrary bytes to the decoder: it must refuse or
// accept without panicking, and anything it accepts must be a consistent
// ledger that encodes and decodes to the same history.
func FuzzDecode(f *testing.F) {
	for _, seed := range decodeSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		decodeChecked(t, data)
		// The checksum stops almost every mutation at the door; repair it
		// so that the fuzzer explores the body too.
		if len(data) > 4 {
			fixed := binary.LittleEndian.AppendUint32(slices.Clone(data[:len(data)-4]), crc32.Checksum(data[:len(data)-4], castagnoli))
			decodeChecked(t, fixed)
		}
	})
}

func decodeChecked(t *testing.T, data []byte) {
	{
		l := New()
		if err := l.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error does not wrap ErrCorrupt: %v", err)
			}
			if l.Len() != 0 {
				t.Fatalf("refused input changed the ledger")
			}
			return
		}
		checkInvariants(t, l)
		r := roundTrip(t, l)
		assertSameHistory(t, r, l)
	}
}

// decodeSeeds are encodings of small real histories.
func decodeSeeds(tb testing.TB) [][]byte {
	var seeds [][]byte
	for s := uint64(0); s < 4; s++ {
		l := New()
		for _, op := range opsFromBytes([]byte(fmt.Sprintf("%064d", s*7919))) {
			_ = apply(tb, l, op)
		}
		b, _ := l.MarshalBinary()
		seeds = append(seeds, b)
	}
	empty, _ := New().MarshalBinary()
	return append(seeds, empty)
}

// TestWriteFuzzCorpus refreshes the committed seed corpus when asked:
// RATION_WRITE_CORPUS=1 go test ./ledger -run TestWriteFuzzCorpus
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("RATION_WRITE_CORPUS") == "" {
		t.Skip("set RATION_WRITE_CORPUS=1 to rewrite testdata/fuzz")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecode")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range decodeSeeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
