package client

import (
	"crypto/rand"
	"encoding/binary"
	"sync"
	"time"
)

// crockford is Crockford's base32 alphabet in lower case. Its characters
// are in ASCII order, so ids sort as strings in the order they were made,
// and all of them are valid in Ration ids.
const crockford = "0123456789abcdefghjkmnpqrstvwxyz"

// IDLen is the length of the ids NewID returns.
const IDLen = 26

var idGen struct {
	sync.Mutex
	ms uint64
	hi uint16 // top 16 of the 80 random bits
	lo uint64 // bottom 64
}

// NewID returns a fresh operation id: a 48-bit Unix millisecond timestamp
// and 80 random bits, as 26 lower-case base32 characters. Ids from one
// process sort in creation order even within a millisecond (the random part
// is then incremented, as in ULID), which keeps a user's ids roughly in
// time order in listings and logs.
//
// Generate the id once per logical operation and reuse it on every retry:
// that is what makes a retry safe.
func NewID() string {
	idGen.Lock()
	ms := uint64(time.Now().UnixMilli()) & (1<<48 - 1)
	if ms <= idGen.ms {
		// Same millisecond, or the clock stepped back: stay monotonic.
		ms = idGen.ms
		idGen.lo++
		if idGen.lo == 0 {
			idGen.hi++
			if idGen.hi == 0 {
				// 2^80 ids in one millisecond: borrow the next one.
				ms++
			}
		}
	} else {
		var b [10]byte
		// crypto/rand.Read never fails on supported platforms (it
		// panics rather than return short), so the error is moot.
		_, _ = rand.Read(b[:])
		idGen.hi = binary.BigEndian.Uint16(b[:2])
		idGen.lo = binary.BigEndian.Uint64(b[2:])
	}
	idGen.ms = ms
	hi, lo := idGen.hi, idGen.lo
	idGen.Unlock()

	// 128 bits: ms(48) | hi(16) | lo(64), encoded as 26 5-bit digits from
	// the top; the first digit only carries 3 bits.
	top := ms<<16 | uint64(hi) // 64 bits
	var out [IDLen]byte
	for i := IDLen - 1; i >= 0; i-- {
		out[i] = crockford[lo&31]
		lo = lo>>5 | top<<59
		top >>= 5
	}
	return string(out[:])
}
