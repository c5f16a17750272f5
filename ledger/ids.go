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
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

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

// arena stores ids back to back. A Go string per id would cost a 16-byte
// header plus a rounded-up allocation; at a million events that alone would
// blow the memory budget.
type arena struct {
	buf []byte
}

func (a *arena) add(s string) (off uint32, n uint8) {
	off = uint32(len(a.buf))
	a.buf = grow(a.buf, len(s))
	a.buf = append(a.buf, s...)
	return off, uint8(len(s))
}

func (a *arena) bytes(off uint32, n uint8) []byte { return a.buf[off : off+uint32(n)] }

// truncate drops everything from off on; used to forget a refused operation.
func (a *arena) truncate(off uint32) { a.buf = a.buf[:off] }

var hashSeed = maphash.MakeSeed()

// index maps ids to record numbers with open addressing over uint32 slots
// (0 = empty, else record+1). Entries are never deleted: a refused operation
// is never inserted.
type index struct {
	slots []uint32
	n     int
}

// lookup returns the record whose id equals s, comparing through key.
func (x *index) lookup(s string, key func(rec uint32) []byte) (uint32, bool) {
	if len(x.slots) == 0 {
		return 0, false
	}
	mask := uint64(len(x.slots) - 1)
	for i := maphash.String(hashSeed, s) & mask; ; i = (i + 1) & mask {
		v := x.slots[i]
		if v == 0 {
			return 0, false
		}
		if string(key(v-1)) == s {
			return v - 1, true
		}
	}
}

func (x *index) insert(s string, rec uint32, key func(rec uint32) []byte) {
	if (x.n+1)*4 > len(x.slots)*3 {
		x.rehash(key)
	}
	x.place(maphash.String(hashSeed, s), rec)
	x.n++
}

func (x *index) place(h uint64, rec uint32) {
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		if x.slots[i] == 0 {
			x.slots[i] = rec + 1
			return
		}
	}
}

func (x *index) rehash(key func(rec uint32) []byte) {
	size := 16
	for size*3 < (x.n+1)*4*2 {
		size *= 2
	}
	old := x.slots
	x.slots = make([]uint32, size)
	for _, v := range old {
		if v != 0 {
			x.place(maphash.Bytes(hashSeed, key(v-1)), v-1)
		}
	}
}

// grow makes room for n more elements, growing by 1/8 rather than append's
// 1/4 once a slice is large: resident memory per event is a target, and the
// extra copying is amortised to a few bytes per element.
func grow[T any](s []T, n int) []T {
	if len(s)+n <= cap(s) {
		return s
	}
	c := cap(s) + cap(s)/8
	if cap(s) < 1024 {
		c = 2 * cap(s)
	}
	if c < len(s)+n {
		c = len(s) + n
	}
	if c < 8 {
		c = 8
	}
	t := make([]T, len(s), c)
	copy(t, s)
	return t
}
