package ledger

import (
	"cmp"
	"encoding/binary"
	"hash/crc32"
	"slices"
)

// The encoding, version 1 (all integers varints unless said otherwise):
//
//	"RTNL" 0x01
//	nGrants, then per grant in acceptance order:
//	    idLen id amount timestamp expiry-delta priority(zigzag)
//	    (expiry-delta is 0 for Never, else expires_at - timestamp >= 1)
//	nDeductions, then per deduction in history order:
//	    idLen id amount timestamp-delta (from the previous deduction)
//	crc32c of everything before, 4 bytes little-endian
//
// Only the accepted operations and their order are stored; everything else
// is replayed on decode. So the bytes depend on the history alone, never on
// the order the operations arrived in or on cached state.
const (
	codecMagic   = "RTNL"
	codecVersion = 1
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary encodes the ledger. Equal histories give equal bytes.
func (l *Ledger) MarshalBinary() ([]byte, error) {
	return l.AppendBinary(make([]byte, 0, 16+20*l.Len()))
}

// AppendBinary appends the encoding of the ledger to b.
func (l *Ledger) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = append(b, codecMagic...)
	b = append(b, codecVersion)
	b = binary.AppendUvarint(b, uint64(l.grants.len()))
	for i := uint32(0); int(i) < l.grants.len(); i++ {
		g := l.grants.at(i)
		b = binary.AppendUvarint(b, uint64(g.idLen))
		b = append(b, l.ids.bytes(g.idOff, g.idLen)...)
		b = binary.AppendUvarint(b, uint64(g.amount))
		b = binary.AppendUvarint(b, uint64(g.ts))
		var dexp uint64
		if g.exp != Never {
			dexp = uint64(g.exp - g.ts)
		}
		b = binary.AppendUvarint(b, dexp)
		b = binary.AppendVarint(b, int64(g.prio))
	}
	b = binary.AppendUvarint(b, uint64(l.deds.len()))
	var prev int64
	for i := 0; i < l.ev.n; i++ {
		r := l.ev.at(i).ref
		if refKind(r) != KindDeduction {
			continue
		}
		d := l.deds.at(refRec(r))
		b = binary.AppendUvarint(b, uint64(d.idLen))
		b = append(b, l.ids.bytes(d.idOff, d.idLen)...)
		b = binary.AppendUvarint(b, uint64(d.amount))
		b = binary.AppendUvarint(b, uint64(d.ts-prev))
		prev = d.ts
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli)), nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = corrupt("bad varint for %s", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint(what string) int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err = corrupt("bad varint for %s", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int64(what string) int64 {
	v := d.uvarint(what)
	if v > uint64(Never) {
		d.fail("%s out of range", what)
		return 0
	}
	return int64(v)
}

func (d *decoder) id() string {
	n := d.uvarint("id length")
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail("id past the end")
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = corrupt(format, args...)
	}
}

// count reads a record count, refusing counts the remaining bytes cannot
// hold so that a corrupt header cannot make us allocate gigabytes.
func (d *decoder) count(what string, minBytes int) int {
	n := d.uvarint(what)
	if d.err == nil && (n > uint64(len(d.b)/minBytes) || n > MaxRecords) {
		d.fail("%s %d too large for the input", what, n)
	}
	return int(n)
}

// UnmarshalBinary replaces the ledger's contents with the decoded history.
// The input is checked completely: a corrupt or infeasible encoding is
// refused with ErrCorrupt and leaves the ledger unchanged.
func (l *Ledger) UnmarshalBinary(data []byte) error {
	body, err := codecBody(data)
	if err != nil {
		return err
	}
	d := &decoder{b: body}
	n := New()
	d.grants(n)
	d.deductions(n)
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return d.err
	}
	if bad := n.rebuild(); bad >= 0 {
		return corrupt("history is infeasible at deduction %q", n.dedID(refRec(n.ev.at(bad).ref)))
	}
	*l = *n
	l.live.l = l
	return nil
}

// codecBody checks an encoding's length, checksum, magic and version, and
// returns its records.
func codecBody(data []byte) ([]byte, error) {
	if len(data) < len(codecMagic)+1+4 {
		return nil, corrupt("too short")
	}
	body, sum := data[:len(data)-4], binary.LittleEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, corrupt("checksum mismatch")
	}
	if string(body[:4]) != codecMagic {
		return nil, corrupt("bad magic")
	}
	if body[4] != codecVersion {
		return nil, corrupt("unknown version %d", body[4])
	}
	return body[5:], nil
}

// grants decodes the grant records into n, stopping at the first error.
func (d *decoder) grants(n *Ledger) {
	ng := d.count("grant count", 5)
	if d.err == nil {
		// count bounds ng by the input's size, so this cannot be made to
		// allocate more than the input could hold.
		n.grants.reserve(ng)
	}
	for i := 0; i < ng && d.err == nil; i++ {
		op := Grant{ID: d.id(), Amount: d.int64("amount"), Timestamp: d.int64("timestamp")}
		dexp := d.int64("expiry")
		prio := d.varint("priority")
		if d.err != nil {
			return
		}
		op.ExpiresAt = Never
		if dexp != 0 {
			if op.Timestamp > Never-dexp {
				d.fail("grant %q: expiry out of range", op.ID)
				return
			}
			op.ExpiresAt = op.Timestamp + dexp
		}
		if int64(int32(prio)) != prio {
			d.fail("grant %q: priority out of range", op.ID)
			return
		}
		op.Priority = int32(prio)
		if err := n.CheckGrant(op); err != nil {
			d.fail("grant %d: %v", i, err)
			return
		}
		if _, dup := n.gIndex.lookup(op.ID, n.grantID); dup {
			d.fail("grant %q twice", op.ID)
			return
		}
		off, idLen := n.ids.add(op.ID)
		g := n.grants.push(grant{amount: op.Amount, ts: op.Timestamp, exp: op.ExpiresAt, prio: op.Priority, heapPos: -1, idOff: off, idLen: idLen})
		n.gIndex.insert(op.ID, g)
		n.granted += op.Amount
		n.frontier = max(n.frontier, op.Timestamp)
	}
}

// deductions decodes the deduction records into n, stopping at the first
// error. Their timestamps are deltas from the previous one's.
func (d *decoder) deductions(n *Ledger) {
	nd := d.count("deduction count", 3)
	if d.err == nil {
		n.deds.reserve(nd)
	}
	var prev int64
	for i := 0; i < nd && d.err == nil; i++ {
		op := Deduction{ID: d.id(), Amount: d.int64("amount")}
		delta := d.int64("timestamp")
		if d.err != nil {
			return
		}
		if prev > Never-delta {
			d.fail("deduction %q: timestamp out of range", op.ID)
			return
		}
		op.Timestamp = prev + delta
		prev = op.Timestamp
		if err := validateDeduction(op); err != nil {
			d.fail("deduction %d: %v", i, err)
			return
		}
		if _, dup := n.dIndex.lookup(op.ID, n.dedID); dup {
			d.fail("deduction %q twice", op.ID)
			return
		}
		off, idLen := n.ids.add(op.ID)
		rec := n.deds.push(deduction{amount: op.Amount, ts: op.Timestamp, idOff: off, idLen: idLen})
		n.dIndex.insert(op.ID, rec)
		n.frontier = max(n.frontier, op.Timestamp)
	}
}

// rebuild lays out the timeline from the records and replays it, returning
// the failing event or -1.
func (l *Ledger) rebuild() int {
	type ev struct {
		ts  int64
		ref uint32
	}
	gev := make([]ev, 0, 2*l.grants.len())
	for i := uint32(0); int(i) < l.grants.len(); i++ {
		g := l.grants.at(i)
		gev = append(gev, ev{g.ts, ref(KindGrant, i)})
		if g.exp <= l.frontier {
			gev = append(gev, ev{g.exp, ref(KindExpiration, i)})
		} else if g.exp != Never {
			l.pending = append(l.pending, i)
		}
	}
	// Refs order kind first, then record number: exactly the order of
	// grants and expirations that share a timestamp.
	slices.SortFunc(gev, func(a, b ev) int {
		if a.ts != b.ts {
			return cmp.Compare(a.ts, b.ts)
		}
		return int(a.ref) - int(b.ref)
	})
	slices.SortFunc(l.pending, func(a, b uint32) int {
		if c := cmp.Compare(l.grants.at(a).exp, l.grants.at(b).exp); c != 0 {
			return c
		}
		return int(a) - int(b)
	})
	total := len(gev) + l.deds.len()
	l.ev.reserve(total)
	l.evChk = make([]checkpoint, (total+chkEvery-1)/chkEvery)
	gi := 0
	for di := uint32(0); int(di) < l.deds.len(); di++ {
		for gi < len(gev) && gev[gi].ts <= l.deds.at(di).ts {
			l.ev.push(event{ts: gev[gi].ts, ref: gev[gi].ref})
			gi++
		}
		l.ev.push(event{ts: l.deds.at(di).ts, ref: ref(KindDeduction, di)})
	}
	for ; gi < len(gev); gi++ {
		l.ev.push(event{ts: gev[gi].ts, ref: gev[gi].ref})
	}
	return l.forward(0)
}
