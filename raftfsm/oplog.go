package raftfsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"

	"github.com/ration/ration/ledger"
)

// A user's log is its operations encoded back to back, each as
//
//	tag      1 byte: kind (bits 0-1: 1 grant, 2 deduction),
//	         0x04 expiry present, 0x08 priority present
//	idLen    1 byte (ids are at most ledger.MaxIDLen = 128 bytes)
//	id
//	amount   uvarint, > 0
//	ts       uvarint, <= MaxInt64
//	expiry   uvarint expires_at - ts, > 0, only with 0x04 (absent = Never)
//	priority zigzag varint, != 0, only with 0x08 (absent = 0)
//
// A grant of 100 credits at a millisecond timestamp with an expiry a month
// later costs 1+1+2+6+5 = 15 bytes plus its id. The encoding is canonical
// (one byte string per operation), which decode checks, so the logs and
// StateHash depend on the operations alone.
const (
	tagGrant     byte = 1
	tagDeduction byte = 2
	tagKindMask  byte = 0x03
	tagExpiry    byte = 0x04
	tagPriority  byte = 0x08
	tagKnown          = tagKindMask | tagExpiry | tagPriority
)

var errOpEncoding = errors.New("bad operation encoding")

// rawOp is a decoded operation whose id is still a range of the log.
type rawOp struct {
	kind       byte
	idStart    int
	idEnd      int
	amount     int64
	ts         int64
	expiresAt  int64
	priority   int32
	encodedLen int
}

// appendOp encodes an operation whose fields have been validated.
func appendOp(b []byte, kind byte, id string, amount, ts, expiresAt int64, priority int32) []byte {
	tag := kind
	if kind == tagGrant {
		if expiresAt != ledger.Never {
			tag |= tagExpiry
		}
		if priority != 0 {
			tag |= tagPriority
		}
	}
	b = append(b, tag, byte(len(id)))
	b = append(b, id...)
	b = binary.AppendUvarint(b, uint64(amount))
	b = binary.AppendUvarint(b, uint64(ts))
	if tag&tagExpiry != 0 {
		b = binary.AppendUvarint(b, uint64(expiresAt-ts))
	}
	if tag&tagPriority != 0 {
		b = binary.AppendVarint(b, int64(priority))
	}
	return b
}

// decodeOp decodes the operation at data[off:], checking its structure and
// every field the way Validate does except the id's characters.
func decodeOp(data []byte, off int) (rawOp, error) {
	op := rawOp{expiresAt: ledger.Never}
	if len(data)-off < 2 {
		return op, errOpEncoding
	}
	tag, idLen := data[off], int(data[off+1])
	op.kind = tag & tagKindMask
	switch {
	case tag&^tagKnown != 0,
		op.kind != tagGrant && op.kind != tagDeduction,
		op.kind == tagDeduction && tag&(tagExpiry|tagPriority) != 0:
		return op, errOpEncoding
	}
	p := off + 2
	if idLen > len(data)-p {
		return op, errOpEncoding
	}
	op.idStart, op.idEnd = p, p+idLen
	if idLen == 0 {
		return op, errOpEncoding
	}
	p = op.idEnd
	next := func() (uint64, bool) {
		v, n := binary.Uvarint(data[p:])
		if n <= 0 {
			return 0, false
		}
		p += n
		return v, true
	}
	amount, ok := next()
	if !ok || amount == 0 || amount > math.MaxInt64 {
		return op, errOpEncoding
	}
	ts, ok := next()
	if !ok || ts > math.MaxInt64 {
		return op, errOpEncoding
	}
	op.amount, op.ts = int64(amount), int64(ts)
	if tag&tagExpiry != 0 {
		d, ok := next()
		// expires_at = MaxInt64 is Never, which is encoded without expiry.
		if !ok || d == 0 || d >= uint64(math.MaxInt64-op.ts) {
			return op, errOpEncoding
		}
		op.expiresAt = op.ts + int64(d)
	}
	if tag&tagPriority != 0 {
		v, n := binary.Varint(data[p:])
		if n <= 0 || v == 0 || v < math.MinInt32 || v > math.MaxInt32 {
			return op, errOpEncoding
		}
		p += n
		op.priority = int32(v)
	}
	op.encodedLen = p - off
	return op, nil
}

// checkLog verifies that data is exactly version canonical operations.
func checkLog(data []byte, version uint64) error {
	var (
		n       uint64
		scratch []byte
	)
	for off := 0; off < len(data); {
		op, err := decodeOp(data, off)
		if err != nil {
			return err
		}
		id := string(data[op.idStart:op.idEnd])
		// Checked here rather than in decodeOp so that decoding a log
		// Apply wrote costs no allocation per id.
		if !ledger.ValidID(id) {
			return errOpEncoding
		}
		scratch = appendOp(scratch[:0], op.kind, id, op.amount, op.ts, op.expiresAt, op.priority)
		if !bytes.Equal(scratch, data[off:off+op.encodedLen]) {
			return errOpEncoding
		}
		off += op.encodedLen
		n++
	}
	if n != version {
		return errOpEncoding
	}
	return nil
}

// decodeLog decodes operations from..version-1 of a log of version
// operations.
func decodeLog(data []byte, version, from uint64) ([]LoggedOp, error) {
	// Pass one finds where operation from starts and counts kinds, so that
	// pass two can allocate every Grant, Deduction and id in one block each.
	var (
		i                    uint64
		startOff             int
		nGrants, nDeductions int
	)
	for off := 0; off < len(data); i++ {
		op, err := decodeOp(data, off)
		if err != nil {
			return nil, err
		}
		if i == from {
			startOff = off
		}
		if i >= from {
			if op.kind == tagGrant {
				nGrants++
			} else {
				nDeductions++
			}
		}
		off += op.encodedLen
	}
	if i != version {
		return nil, errOpEncoding
	}

	grants := make([]ledger.Grant, 0, nGrants)
	deds := make([]ledger.Deduction, 0, nDeductions)
	ops := make([]LoggedOp, 0, nGrants+nDeductions)
	// One string holds every id; each op's ID is a substring of it.
	ids := string(data[startOff:])
	for off := startOff; off < len(data); {
		op, _ := decodeOp(data, off)
		id := ids[op.idStart-startOff : op.idEnd-startOff]
		if op.kind == tagGrant {
			grants = append(grants, ledger.Grant{
				ID: id, Amount: op.amount, Timestamp: op.ts, ExpiresAt: op.expiresAt, Priority: op.priority,
			})
			ops = append(ops, LoggedOp{Grant: &grants[len(grants)-1]})
		} else {
			deds = append(deds, ledger.Deduction{ID: id, Amount: op.amount, Timestamp: op.ts})
			ops = append(ops, LoggedOp{Deduction: &deds[len(deds)-1]})
		}
		off += op.encodedLen
	}
	return ops, nil
}
