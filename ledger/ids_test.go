package ledger

import (
	"strconv"
	"testing"
)

func TestIndexGrowsAndFinds(t *testing.T) {
	var a arena
	var offs []uint32
	var lens []uint8
	key := func(rec uint32) []byte { return a.bytes(offs[rec], lens[rec]) }
	var x index
	const n = 300_000 // enough for many bucket splits and directory doublings
	for i := 0; i < n; i++ {
		id := "id-" + strconv.Itoa(i)
		if _, ok := x.lookup(id, key); ok {
			t.Fatalf("%s found before insert", id)
		}
		off, l := a.add(id)
		offs, lens = append(offs, off), append(lens, l)
		x.insert(id, uint32(i))
	}
	for i := 0; i < n; i++ {
		rec, ok := x.lookup("id-"+strconv.Itoa(i), key)
		if !ok || rec != uint32(i) {
			t.Fatalf("id-%d: got %d %v", i, rec, ok)
		}
		if _, ok := x.lookup("other-"+strconv.Itoa(i), key); ok {
			t.Fatalf("other-%d found", i)
		}
	}
	if x.n != n || x.depth == 0 {
		t.Fatalf("n=%d depth=%d", x.n, x.depth)
	}
}

func TestValidID(t *testing.T) {
	long := string(make([]byte, MaxIDLen+1))
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"a", true}, {"user-1@example.com", true}, {"A.b_c:d-9", true},
		{"", false}, {"has space", false}, {"slash/x", false}, {"é", false}, {long, false},
	} {
		if got := ValidID(tc.id); got != tc.want {
			t.Errorf("ValidID(%q) = %v", tc.id, got)
		}
	}
}
