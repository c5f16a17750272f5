package raftfsm

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkApplyBatch applies entries of 64 ops for 4096 users, every op
// matching its version. The state is reset every round of entries so that
// the pre-encoded expected versions stay right; the reset is not timed.
func BenchmarkApplyBatch(b *testing.B) {
	const (
		users   = 4096
		opsPer  = 64
		entries = 1024
	)
	ver := make([]uint64, users)
	logs := make([]*raft.Log, entries)
	var bytes int
	for e := range logs {
		ops := make([]Op, opsPer)
		for i := range ops {
			u := (e*opsPer + i*31) % users
			ts := int64(1_700_000_000_000 + e*opsPer + i)
			user := fmt.Sprintf("user-%06d", u)
			if i%4 == 3 {
				ops[i] = deductOp(user, ver[u], fmt.Sprintf("d-%d-%d", e, i), 1, ts)
			} else {
				ops[i] = grantOp(user, ver[u], fmt.Sprintf("g-%d-%d", e, i), 10, ts)
				ops[i].Grant.ExpiresAt = ts + 30*86_400_000
			}
			ver[u]++
		}
		data, err := EncodeBatch(ops)
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(data)
		logs[e] = &raft.Log{Index: uint64(e + 1), Type: raft.LogCommand, Data: data}
	}
	b.SetBytes(int64(bytes / entries))
	b.ReportAllocs()
	f := New(discardLogger()).FSM()
	b.ResetTimer()
	for i := range b.N {
		if i%entries == 0 && i > 0 {
			b.StopTimer()
			f = New(discardLogger()).FSM()
			b.StartTimer()
		}
		res := f.Apply(logs[i%entries]).([]OpResult)
		if !res[0].Applied {
			b.Fatalf("entry %d: %+v", i, res[0])
		}
	}
	b.ReportMetric(float64(b.N*opsPer)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkEncodeBatch is the proposer's side of one 64-op entry.
func BenchmarkEncodeBatch(b *testing.B) {
	ops := make([]Op, 64)
	for i := range ops {
		ops[i] = grantOp(fmt.Sprintf("user-%06d", i), uint64(i), fmt.Sprintf("g-%d", i), 10, 1_700_000_000_000)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := EncodeBatch(ops); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRestore restores a snapshot of 100,000 users of 20 ops each (a
// grant, then deductions), the shape of `make bench-scale`: a restarted
// node rebuilds its replicas this way, so this bounds its restart time.
func BenchmarkRestore(b *testing.B) {
	const users, opsPer = 100_000, 20
	s := New(discardLogger())
	f := s.FSM()
	var index uint64
	for u := range users {
		user := fmt.Sprintf("s-%07d", u)
		ops := make([]Op, opsPer)
		ops[0] = grantOp(user, 0, "g", 1<<40, 1_700_000_000_000)
		for k := 1; k < opsPer; k++ {
			ops[k] = deductOp(user, uint64(k), fmt.Sprintf("d%d", k), 1, 1_700_000_000_000+int64(k))
		}
		for _, op := range ops {
			data, err := EncodeBatch([]Op{op})
			if err != nil {
				b.Fatal(err)
			}
			index++
			f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	data := persist(b, snap)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if err := restore(New(discardLogger()), data); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*users), "ns/user")
}
