package ledger

import "hash/maphash"

// MaxIDLen bounds user and operation ids, so an id length fits in a byte.
const MaxIDLen = 128

// ValidID reports whether s is 1 to MaxIDLen characters of [A-Za-z0-9._:@-].
// The charset keeps ids safe in URLs, logs and CSV without escaping.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !idChar[s[i]] {
			return false
		}
	}
	return true
}

var idChar = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == ':' || c == '@' || c == '-'
	}
	return t
}()

func validateID(field, s string) error {
	if s == "" {
		return invalid(field, "must not be empty")
	}
	if len(s) > MaxIDLen {
		return invalid(field, "longer than %d characters", MaxIDLen)
	}
	if !ValidID(s) {
		return invalid(field, "may only contain A-Z a-z 0-9 . _ : @ -")
	}
	return nil
}

var hashSeed = maphash.MakeSeed()

// index maps ids to record numbers by extendible hashing: a directory,
// indexed by the top bits of the hash, of small open-addressing buckets
// that split one at a time. Growth therefore never rehashes the whole
// table (a pause of a second at tens of millions of ids) and a split works
// within one bucket that fits in cache. Slots keep 32 bits of the hash, so
// splitting never reads an id and a probe rarely compares one.
//
// Buckets start small (a user with a handful of operations costs a few
// hundred bytes) and double up to maxBucket slots before they split.
// Entries are never deleted: a refused operation is never inserted.
//
// A lookup of a new id in a large index costs one cache and TLB miss, the
// largest single cost of an append. A Bloom filter in front and a
// log-structured layout were tried; both moved the miss into merges that
// cost more (docs/BENCHMARKS.md).
type index struct {
	dir   []*bucket
	depth uint // global depth: the directory has 1<<depth entries
	n     int
}

const (
	minBucket = 8
	maxBucket = 4096
)

type bucket struct {
	depth uint   // local depth: how many top hash bits all entries share
	n     int    // entries
	slots []slot // power-of-two length; hash 0 marks an empty slot
}

type slot struct {
	hash uint32
	rec  uint32
}

func hash32(s string) uint32 {
	h := uint32(maphash.String(hashSeed, s))
	if h == 0 {
		h = 1 // 0 marks empty slots
	}
	return h
}

func (x *index) bucketOf(h uint32) *bucket {
	if x.depth == 0 {
		return x.dir[0]
	}
	return x.dir[h>>(32-x.depth)]
}

// probe remembers where a failed lookup stopped, so that inserting the
// same id right after costs neither a second hash nor a second probe.
type probe struct {
	h    uint32
	b    *bucket
	slot uint32
}

// lookup returns the record whose id equals s, comparing through key.
func (x *index) lookup(s string, key func(rec uint32) []byte) (uint32, bool) {
	rec, ok, _ := x.find(s, key)
	return rec, ok
}

func (x *index) find(s string, key func(rec uint32) []byte) (uint32, bool, probe) {
	h := hash32(s)
	if x.dir == nil {
		return 0, false, probe{h: h}
	}
	b := x.bucketOf(h)
	mask := uint32(len(b.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := b.slots[i]
		if sl.hash == 0 {
			return 0, false, probe{h, b, i}
		}
		if sl.hash == h && string(key(sl.rec)) == s {
			return sl.rec, true, probe{}
		}
	}
}

// insert adds s, which must not be present, for rec.
func (x *index) insert(s string, rec uint32) { x.insertProbe(probe{h: hash32(s)}, rec) }

// insertProbe adds the id that find just failed to find. The index must
// not have changed since.
func (x *index) insertProbe(p probe, rec uint32) {
	x.n++
	// Fill buckets to 3/4: at 8-byte slots a probe then rarely leaves its
	// cache line.
	if b := p.b; b != nil && (b.n+1)*4 <= len(b.slots)*3 {
		b.slots[p.slot] = slot{p.h, rec}
		b.n++
		return
	}
	if x.dir == nil {
		x.dir = []*bucket{{slots: make([]slot, minBucket)}}
	}
	for {
		b := x.bucketOf(p.h)
		if (b.n+1)*4 <= len(b.slots)*3 {
			b.place(p.h, rec)
			return
		}
		if len(b.slots) < maxBucket {
			b.resize(len(b.slots) * 2)
			continue
		}
		x.split(b, p.h)
	}
}

func (b *bucket) place(h, rec uint32) {
	mask := uint32(len(b.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if b.slots[i].hash == 0 {
			b.slots[i] = slot{h, rec}
			b.n++
			return
		}
	}
}

func (b *bucket) resize(size int) {
	old := b.slots
	b.slots, b.n = make([]slot, size), 0
	for _, sl := range old {
		if sl.hash != 0 {
			b.place(sl.hash, sl.rec)
		}
	}
}

// split divides the full bucket b, which holds hash h, by its next hash
// bit, doubling the directory if b was already as specific as it.
func (x *index) split(b *bucket, h uint32) {
	if b.depth == x.depth {
		if x.depth == 32-12 {
			// 2^20 buckets of thousands of ids each: past MaxRecords.
			panic("ledger: id index is full")
		}
		dir := make([]*bucket, 2*len(x.dir))
		for i, p := range x.dir {
			dir[2*i], dir[2*i+1] = p, p
		}
		x.dir, x.depth = dir, x.depth+1
	}
	bit := uint32(1) << (31 - b.depth)
	lo := &bucket{depth: b.depth + 1, slots: make([]slot, len(b.slots))}
	hi := &bucket{depth: b.depth + 1, slots: make([]slot, len(b.slots))}
	for _, sl := range b.slots {
		switch {
		case sl.hash == 0:
		case sl.hash&bit == 0:
			lo.place(sl.hash, sl.rec)
		default:
			hi.place(sl.hash, sl.rec)
		}
	}
	// The directory entries that pointed at b form one aligned run; the
	// first half now points at lo, the second at hi.
	run := 1 << (x.depth - b.depth)
	start := int(h>>(32-x.depth)) &^ (run - 1)
	for i := 0; i < run; i++ {
		if i < run/2 {
			x.dir[start+i] = lo
		} else {
			x.dir[start+i] = hi
		}
	}
}
