package shardhash

import (
	"hash/fnv"
	"testing"
)

// The function is part of the data format: these values must never change.
func TestOfIsStable(t *testing.T) {
	// (shards.TestShardOfIsStable pins others.)
	for user, want := range map[string]uint32{"alice": 7, "user-12345": 16} {
		if got := Of(user, 32); got != want {
			t.Errorf("Of(%q, 32) = %d, want %d", user, got, want)
		}
	}
	if Of("alice", 1) != 0 || Of("alice", 0) != 0 {
		t.Error("one shard (or none) must map everything to shard 0")
	}
}

// Of is FNV-1a 64 as the standard library computes it, which is what the
// name it is published under says.
func FuzzOfIsFNV1a64(f *testing.F) {
	f.Add("alice", 32)
	f.Add("", 7)
	f.Fuzz(func(t *testing.T, user string, shards int) {
		if shards < 2 {
			return
		}
		h := fnv.New64a()
		h.Write([]byte(user))
		if want := uint32(h.Sum64() % uint64(shards)); Of(user, shards) != want {
			t.Fatalf("Of(%q, %d) = %d, want %d", user, shards, Of(user, shards), want)
		}
	})
}
