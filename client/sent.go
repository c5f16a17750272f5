package client

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc/stats"
)

// An attempt's context carries a flag that the client's stats handler sets
// once the request headed for the server on a connection. A write attempt
// that failed before that cannot have been applied, now or later; one that
// failed after it may still be, until its deadline.

type sentKey struct{}

func withSentFlag(ctx context.Context) (context.Context, *atomic.Bool) {
	f := new(atomic.Bool)
	return context.WithValue(ctx, sentKey{}, f), f
}

type sentTracker struct{}

func (sentTracker) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (sentTracker) HandleRPC(ctx context.Context, s stats.RPCStats) {
	// The headers go first: a server may start on them.
	if _, ok := s.(*stats.OutHeader); !ok {
		return
	}
	if f, ok := ctx.Value(sentKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
}

func (sentTracker) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (sentTracker) HandleConn(context.Context, stats.ConnStats) {}

// markSent sets ctx's flag by hand, for an attempt that leaves in a call
// made on another context (coalesced writes): it may apply from now on.
func markSent(ctx context.Context) {
	if f, ok := ctx.Value(sentKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
}
