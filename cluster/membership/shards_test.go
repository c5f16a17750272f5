package membership

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
)

// Only two settled, different counts conflict; an unsettled side (0, or
// tentative) and this node itself never do.
func TestJudgeShardCounts(t *testing.T) {
	cases := []struct {
		name   string
		ours   int
		theirs Meta
		want   bool
	}{
		{"same count", 8, Meta{NodeID: "b", Shards: 8}, false},
		{"another count", 8, Meta{NodeID: "b", Shards: 16}, true},
		{"another count, tentative", 8, Meta{NodeID: "b", Shards: 16, ShardsTentative: true}, false},
		{"a release that announces none", 8, Meta{NodeID: "b"}, false},
		{"ours not settled", 0, Meta{NodeID: "b", Shards: 16}, false},
		{"this node itself", 8, Meta{NodeID: "self", Shards: 16}, false},
	}
	for _, tc := range cases {
		m := &Membership{cfg: Config{NodeID: "self"}, log: slog.New(slog.DiscardHandler), shards: tc.ours}
		ms := &memberState{Member: Member{Meta: tc.theirs}}
		changed := m.judgeLocked(ms)
		if ms.conflict != tc.want || changed != tc.want {
			t.Errorf("%s: conflict %v (changed %v), want %v", tc.name, ms.conflict, changed, tc.want)
		}
	}
	// A conflict that ends is a change too, and judging again is not.
	m := &Membership{cfg: Config{NodeID: "self"}, log: slog.New(slog.DiscardHandler), shards: 8}
	ms := &memberState{Member: Member{Meta: Meta{NodeID: "b", Shards: 16}}}
	m.judgeLocked(ms)
	if m.judgeLocked(ms) {
		t.Error("judging the same conflict again reported a change")
	}
	ms.Shards = 8
	if !m.judgeLocked(ms) || ms.conflict {
		t.Errorf("agreeing again: conflict %v", ms.conflict)
	}
}

// levelCount counts, by message, the records at min and above that a
// logger sees, and passes every record on.
type levelCount struct {
	slog.Handler
	min   slog.Level
	mu    *sync.Mutex
	count map[string]int
}

func (h levelCount) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= h.min {
		h.mu.Lock()
		h.count[r.Message]++
		h.mu.Unlock()
	}
	return h.Handler.Handle(ctx, r)
}

func (h levelCount) WithAttrs(as []slog.Attr) slog.Handler {
	return levelCount{h.Handler.WithAttrs(as), h.min, h.mu, h.count}
}

func (h levelCount) WithGroup(g string) slog.Handler {
	return levelCount{h.Handler.WithGroup(g), h.min, h.mu, h.count}
}

func ids(ms []Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.NodeID)
	}
	return out
}

// waitView waits until o's view holds exactly members and Conflicting
// exactly conflicting, all alive.
func waitView(t *testing.T, o *Membership, members, conflicting []string) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%s to see %v and in conflict %v", o.cfg.NodeID, members, conflicting), func() bool {
		in, out := o.Members(), o.Conflicting()
		for _, m := range slices.Concat(in, out) {
			if m.State != Alive {
				return false
			}
		}
		return slices.Equal(ids(in), members) && slices.Equal(ids(out), conflicting)
	})
}

// Members of one gossip cluster that settled on different shard counts
// leave each other out of their views, and log it at ERROR; a tentative
// count and a release that announces none are in every view, and a node
// that settles judges the members it already knows at once.
func TestShardCountConflicts(t *testing.T) {
	t.Parallel()
	with := func(id string, shards int, tentative bool, seed *Membership) Config {
		c := fastConfig(t, id)
		c.Meta.Shards, c.Meta.ShardsTentative = shards, tentative
		if seed != nil {
			c.Join = []string{addrOf(seed)}
		}
		return c
	}
	var mu sync.Mutex
	aErrors := map[string]int{}
	ca := with("a", 8, false, nil)
	ca.Logger = slog.New(levelCount{ca.Logger.Handler(), slog.LevelError, &mu, aErrors})
	a := start(t, ca)
	b := start(t, with("b", 8, false, a))
	c := start(t, with("c", 16, false, a))
	d := start(t, with("d", 64, true, a))
	e := start(t, with("e", 0, false, a))

	waitView(t, a, []string{"a", "b", "d", "e"}, []string{"c"})
	waitView(t, b, []string{"a", "b", "d", "e"}, []string{"c"})
	waitView(t, c, []string{"c", "d", "e"}, []string{"a", "b"})
	waitView(t, d, []string{"a", "b", "c", "d", "e"}, nil)
	waitView(t, e, []string{"a", "b", "c", "d", "e"}, nil)
	if n := a.NumAlive(); n != 4 {
		t.Errorf("a: NumAlive = %d, want 4 (c left out)", n)
	}
	if _, ok := a.Member("c"); ok {
		t.Error("a: Member(c) found a conflicting member")
	}
	mu.Lock()
	// memberlist's own errors, which a loaded machine can cause, are not
	// counted.
	if n := aErrors[conflictMsg]; n != 1 {
		t.Errorf("a logged the conflict %d times, want 1 (c's count, once)", n)
	}
	mu.Unlock()

	// d settles on 16: at once it leaves a and b out of its own view,
	// and they leave it out of theirs when the announcement reaches them.
	if err := d.SettleShards(ctxTimeout(t, waitTimeout), 16); err != nil {
		t.Fatal(err)
	}
	if got := ids(d.Conflicting()); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("d right after settling: conflicting %v, want [a b]", got)
	}
	if m := d.LocalMeta(); m.Shards != 16 || m.ShardsTentative {
		t.Errorf("d announces %+v", m)
	}
	waitView(t, a, []string{"a", "b", "e"}, []string{"c", "d"})
	waitView(t, c, []string{"c", "d", "e"}, []string{"a", "b"})
	waitView(t, e, []string{"a", "b", "c", "d", "e"}, nil)

	if err := e.SettleShards(t.Context(), 0); err == nil {
		t.Error("SettleShards(0) accepted")
	}
}
