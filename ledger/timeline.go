package ledger

// event is one entry of the applied timeline.
type event struct {
	ts       int64
	ref      uint32 // kind<<30 | record number
	allocEnd uint32 // allocations of events [0, i] end here
}

// timeline is the applied history in chunks. Growth never copies past the
// first chunk (a copy of a large slice stalls the owner for milliseconds
// and touches fresh pages); an insert shifts the events after it across
// chunk boundaries, which costs what a slice insert would.
type timeline struct {
	chunks[event]
}

func (t *timeline) at(i int) *event { return t.chunks.at(uint32(i)) }

// insert puts e at p, moving events p.. one place up.
func (t *timeline) insert(p int, e event) {
	t.push(event{})
	for i := t.n - 1; i > p; {
		k, off := i>>chunkShift, i&(chunkLen-1)
		base := k << chunkShift
		c := t.c[k]
		if lo := p + 1; lo > base {
			// The rest of the move lies within this chunk.
			copy(c[lo-base:off+1], c[lo-base-1:off])
			break
		}
		copy(c[1:off+1], c[:off])
		c[0] = t.c[k-1][chunkLen-1]
		i = base - 1
	}
	*t.at(p) = e
}

// remove drops the event at p, moving later events one place down.
func (t *timeline) remove(p int) {
	last := t.n - 1
	for i := p; i < last; {
		k, off := i>>chunkShift, i&(chunkLen-1)
		base := k << chunkShift
		c := t.c[k]
		hi := min(last-1, base+chunkLen-1) - base // last destination in this chunk
		if hi == chunkLen-1 {
			copy(c[off:hi], c[off+1:hi+1])
			c[hi] = t.c[k+1][0]
		} else {
			copy(c[off:hi+1], c[off+1:hi+2])
		}
		i = base + hi + 1
	}
	*t.at(last) = event{}
	t.n--
}
