// Package shardhash is the function from user id to shard. It is part of
// the data format (it decides which raft group holds a user's log) and of
// the API (clients that route compute it, under the name FNV1a64Mod), so
// it lives apart from both, with no dependencies.
package shardhash

// FNV1a64Mod names Of in the routing table (ration.v1
// GetRoutingTableResponse.hash).
const FNV1a64Mod = "fnv1a64-mod"

// Of is the shard of user among shards shards: FNV-1a 64 of the id's
// bytes, modulo shards. It must give the same answer on every node, in
// every release and in every client, since it decides which raft group
// holds a user's log: changing the function, or the shard count, moves
// users between groups and needs a migration that copies their logs.
// (hash/maphash is seeded per process, so it cannot be used here.)
func Of(user string, shards int) uint32 {
	if shards <= 1 {
		return 0
	}
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(user); i++ {
		h ^= uint64(user[i])
		h *= prime64
	}
	return uint32(h % uint64(shards))
}
