package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/internal/backoff"
)

// Routing: the client learns from the cluster which node leads each shard
// (ration.v1 Routing) and sends each call for a user straight to the leader
// of the user's shard, instead of to any node, which would forward it: one
// hop less. The table is only advice. A call whose leader is unknown, or
// whose leader's connection is not up, goes to the Endpoints as without
// routing, and the node there forwards it; so a stale table costs a
// forward, never an error.

const (
	// DefaultRoutingRefresh is how often the routing table is fetched when
	// nothing says it is stale.
	DefaultRoutingRefresh = 10 * time.Second
	// refreshGap is the least time between two fetches: an election makes
	// every call for the shard ask for one.
	refreshGap = 200 * time.Millisecond
	// retireAfter is how long a node's connection is kept after the node
	// left the table (a pod rescheduled at a new address): longer than any
	// attempt that may still be using it.
	retireAfter = time.Minute
)

// RouteStats counts where a Client's attempts went.
type RouteStats struct {
	// Enabled is false when the client does not route
	// (Options.DisableRouting); the counts are then zero.
	Enabled bool
	// Direct attempts went to the node the routing table names as leader
	// of the user's shard.
	Direct uint64
	// Fallback attempts went to an Endpoint because the leader was not
	// known or its connection was not up; the node forwards them.
	Fallback uint64
	// Redirected answers came from a node that did not lead the shard and
	// said so (a route hint): the table was stale, or the call was a
	// fallback.
	Redirected uint64
}

// router is a Client's routing state.
type router struct {
	c        *Client
	interval time.Duration
	table    atomic.Pointer[table] // nil until a node answered
	// wmu serialises table writers, so that a refresh and hints arriving
	// together do not lose each other's news.
	wmu sync.Mutex

	// eps holds the connections by address: the Endpoints, and the nodes
	// dialled. Every routed call reads it; emu serialises the dials.
	eps sync.Map // string → *endpoint
	emu sync.Mutex

	kick   chan struct{}
	stop   context.CancelFunc
	done   chan struct{}
	warned atomic.Bool

	direct, fallback, redirected atomic.Uint64
}

func newRouter(c *Client, interval time.Duration) *router {
	if interval <= 0 {
		interval = DefaultRoutingRefresh
	}
	r := &router{c: c, interval: interval, kick: make(chan struct{}, 1), done: make(chan struct{})}
	for _, ep := range c.eps {
		r.eps.LoadOrStore(ep.addr, ep)
	}
	var ctx context.Context
	ctx, r.stop = context.WithCancel(context.Background())
	go r.run(ctx)
	return r
}

// close stops the refreshes and closes the connections the router opened
// (not the Endpoints').
func (r *router) close() []error {
	r.stop()
	<-r.done
	r.emu.Lock()
	defer r.emu.Unlock()
	var errs []error
	for _, v := range r.eps.Range {
		if ep := v.(*endpoint); !ep.seed {
			if err := ep.conn.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// stale asks for a fetch of the table soon.
func (r *router) stale() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// endpoint returns the connection to addr, dialling it on first use.
func (r *router) endpoint(addr string) *endpoint {
	if v, ok := r.eps.Load(addr); ok {
		return v.(*endpoint)
	}
	r.emu.Lock()
	defer r.emu.Unlock()
	if v, ok := r.eps.Load(addr); ok {
		return v.(*endpoint)
	}
	ep, err := r.c.dial(addr)
	if err != nil {
		return nil // a malformed address: such a node is not routed to
	}
	ep.wanted.Store(r.c.now().UnixNano())
	r.eps.Store(addr, ep)
	return ep
}

// leader returns the connection to the leader of user's shard, and the
// leader's id, if the table knows the leader and the connection is up; ep
// is nil otherwise, and the call goes to an Endpoint.
// Routing never waits for a connection: one that is not up is started
// for the next call.
func (r *router) leader(user string) (ep *endpoint, node string) {
	t := r.table.Load()
	if t == nil {
		return nil, ""
	}
	return r.leaderOf(t, t.shardOf(user))
}

// leaderOf is leader for a shard of table t.
func (r *router) leaderOf(t *table, shard uint32) (ep *endpoint, node string) {
	lt := t.leaders[shard]
	addr := t.addrs[lt.node]
	if lt.node == "" || addr == "" {
		r.stale()
		return nil, ""
	}
	ep = r.endpoint(addr)
	if ep == nil || ep.suspectUntil.Load() > r.c.now().UnixNano() {
		return nil, ""
	}
	switch ep.conn.GetState() {
	case connectivity.Ready:
		return ep, lt.node
	case connectivity.Idle:
		ep.conn.Connect()
	}
	return nil, ""
}

// update publishes f(current table) if it differs; f gets a non-nil
// table.
func (r *router) update(f func(*table) *table) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if t := r.table.Load(); t != nil {
		if nt := f(t); nt != t {
			r.table.Store(nt)
		}
	}
}

// learn takes in what one attempt tells about the routing: the route
// hints of its trailer, and, for an attempt sent to the shard's leader by
// the table (node non-empty) that failed transiently, that the table may
// be wrong about it.
func (r *router) learn(user, node string, md metadata.MD, err error) {
	hints := md.Get(rationv1.RouteHintKey)
	if len(hints) > 0 {
		r.redirected.Add(1)
		stale := false
		r.update(func(t *table) *table {
			nt, s := t.withHints(hints)
			stale = s
			return nt
		})
		if stale {
			r.stale()
		}
	}
	// CANCELLED is the caller giving up (or Close), not the node failing.
	if node == "" || err == nil || status.Code(err) == codes.Canceled {
		return
	}
	if retry, _ := transient(attemptCode(err)); retry {
		r.update(func(t *table) *table { return t.without(t.shardOf(user), node) })
		r.stale()
	}
}

// run fetches the table now, then every interval and soon after anything
// says it is stale, until the client closes.
func (r *router) run(ctx context.Context) {
	defer close(r.done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-r.kick:
		}
		r.refresh(ctx)
		r.retire()
		if backoff.Sleep(ctx, refreshGap, time.Time{}) != nil {
			return
		}
		timer.Reset(r.interval)
	}
}

// refresh asks nodes for their tables until every shard is reported on:
// a node reports only the shards it holds a replica of. It starts with
// the next Endpoint in turn, then the nodes the table knows.
func (r *router) refresh(ctx context.Context) {
	var seen []bool
	asked := map[*endpoint]bool{}
	for {
		ep := r.nextSource(asked)
		if ep == nil {
			return
		}
		asked[ep] = true
		res, err := r.fetch(ctx, ep)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		r.wmu.Lock()
		nt, err := r.table.Load().withTable(res)
		if err == nil {
			r.table.Store(nt)
		}
		r.wmu.Unlock()
		if err != nil {
			if errors.Is(err, errUnknownHash) && !r.warned.Swap(true) {
				r.c.log.WarnContext(ctx, "ration: not routing: the cluster's shard function is unknown to this client", "err", err)
			}
			continue
		}
		if len(seen) != nt.shards {
			seen = make([]bool, nt.shards)
		}
		covered(res, seen)
		if !containsFalse(seen) {
			return
		}
	}
}

func containsFalse(bs []bool) bool {
	for _, b := range bs {
		if !b {
			return true
		}
	}
	return false
}

// fetch asks one node for its routing table, within the attempt timeout
// (at most 2 s: a node that takes longer is passed over).
func (r *router) fetch(ctx context.Context, ep *endpoint) (*rationv1.GetRoutingTableResponse, error) {
	d := 2 * time.Second
	if r.c.timeout > 0 {
		d = min(d, r.c.timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	res, err := ep.routing.GetRoutingTable(ctx, &rationv1.GetRoutingTableRequest{})
	if err != nil && status.Code(err) != codes.Unimplemented {
		r.c.log.DebugContext(ctx, "ration: routing table", "endpoint", ep.addr, "err", err)
	}
	return res, err
}

// nextSource is the next node to ask for its table: the next Endpoint in
// turn first, then the others and the nodes of the table, healthy ones
// before suspects; nil when all were asked.
func (r *router) nextSource(asked map[*endpoint]bool) *endpoint {
	var cands []*endpoint
	if len(asked) == 0 {
		ep, _ := r.c.pick(r.c.start())
		cands = append(cands, ep)
	}
	cands = append(cands, r.c.eps...)
	if t := r.table.Load(); t != nil {
		for _, addr := range t.addrs {
			if ep := r.endpoint(addr); ep != nil {
				cands = append(cands, ep)
			}
		}
	}
	now := r.c.now().UnixNano()
	var suspect *endpoint
	for _, ep := range cands {
		switch {
		case asked[ep]:
		case ep.suspectUntil.Load() <= now:
			return ep
		case suspect == nil:
			suspect = ep
		}
	}
	return suspect
}

// retire closes the connections to addresses the table has not named for
// retireAfter: nodes gone, or moved to another address.
func (r *router) retire() {
	t := r.table.Load()
	if t == nil {
		return
	}
	now := r.c.now()
	named := map[string]bool{}
	for _, addr := range t.addrs {
		named[addr] = true
	}
	r.emu.Lock()
	defer r.emu.Unlock()
	for k, v := range r.eps.Range {
		switch ep := v.(*endpoint); {
		case ep.seed:
		case named[ep.addr]:
			ep.wanted.Store(now.UnixNano())
		case now.Sub(time.Unix(0, ep.wanted.Load())) > retireAfter:
			r.eps.Delete(k)
			_ = ep.conn.Close()
		}
	}
}

// stats reads the counters.
func (r *router) stats() RouteStats {
	return RouteStats{Enabled: true, Direct: r.direct.Load(), Fallback: r.fallback.Load(), Redirected: r.redirected.Load()}
}

// RouteStats tells where the Client's attempts went.
func (c *Client) RouteStats() RouteStats {
	if c.routes == nil {
		return RouteStats{}
	}
	return c.routes.stats()
}

// target picks the endpoint of an attempt for user ("" for calls not tied
// to a user): the leader of the user's shard when routing knows it (node
// is then its id), else the Endpoint at or after pos (see pick).
func (c *Client) target(user string, pos int) (ep *endpoint, at int, node string) {
	if c.routes != nil && user != "" {
		if ep, node := c.routes.leader(user); ep != nil {
			c.routes.direct.Add(1)
			return ep, pos, node
		}
		c.routes.fallback.Add(1)
	}
	ep, at = c.pick(pos)
	return ep, at, ""
}

// trailer is the call option that collects an attempt's trailer into md,
// for the route hints; none without routing.
func (c *Client) trailer(md *metadata.MD) []grpc.CallOption {
	if c.routes == nil {
		return nil
	}
	return []grpc.CallOption{grpc.Trailer(md)}
}

// learn passes what an attempt for user said about routing to the router.
func (c *Client) learn(user, node string, md metadata.MD, err error) {
	if c.routes != nil && user != "" {
		c.routes.learn(user, node, md, err)
	}
}
