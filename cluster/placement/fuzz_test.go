package placement

import (
	"slices"
	"strings"
	"testing"
)

// FuzzReplicaSet checks ReplicaSet's invariants on arbitrary node lists
// (comma-separated, so ids may be empty, repeated, or any bytes).
func FuzzReplicaSet(f *testing.F) {
	f.Add(uint32(0), "a,b,c", int8(3))
	f.Add(uint32(7), "ration-0,ration-1,ration-2,ration-3,ration-4", int8(3))
	f.Add(uint32(1<<31), "x,x,,y", int8(5))
	f.Add(uint32(42), "", int8(1))
	f.Add(uint32(3), "n1,n2", int8(-2))
	f.Fuzz(func(t *testing.T, shard uint32, list string, replicas int8) {
		nodes := strings.Split(list, ",")
		r := int(replicas)
		got := ReplicaSet(shard, nodes, r)
		checkInvariants(t, shard, nodes, r, got)

		// Input order and repetition do not matter.
		rev := slices.Clone(nodes)
		slices.Reverse(rev)
		rev = append(rev, nodes...)
		if again := ReplicaSet(shard, rev, r); !slices.Equal(again, got) {
			t.Fatalf("reordered input: %q, want %q", again, got)
		}
		// Fewer replicas is a prefix of more.
		if r > 0 {
			if fewer := ReplicaSet(shard, nodes, r-1); !slices.Equal(fewer, got[:min(r-1, len(got))]) {
				t.Fatalf("%d replicas %q not a prefix of %d replicas %q", r-1, fewer, r, got)
			}
		}
		// Dropping a node that holds no replica changes nothing; dropping
		// one that does keeps the others in order and appends at most one.
		for _, drop := range nodes {
			rest := slices.DeleteFunc(slices.Clone(nodes), func(n string) bool { return n == drop })
			after := ReplicaSet(shard, rest, r)
			if !slices.Contains(got, drop) {
				if !slices.Equal(after, got) {
					t.Fatalf("dropping unplaced %q: %q, want %q", drop, after, got)
				}
				continue
			}
			kept := slices.DeleteFunc(slices.Clone(got), func(n string) bool { return n == drop })
			if !slices.Equal(after[:len(kept)], kept) || len(after) > len(kept)+1 {
				t.Fatalf("dropping placed %q: %q from %q", drop, after, got)
			}
		}
	})
}
