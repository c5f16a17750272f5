package shards

import "github.com/ration/ration/internal/shardhash"

// ShardOf is the shard of user among shards shards: FNV-1a 64 of the id,
// modulo shards (shardhash.Of). Changing the function, or the shard count,
// moves users between groups and needs a migration that copies their logs.
func ShardOf(user string, shards int) uint32 { return shardhash.Of(user, shards) }
