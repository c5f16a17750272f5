package shards

import (
	"maps"
	"slices"
	"sync"
)

// ShardLeadership tells that this node gained or lost the leadership of a
// shard.
type ShardLeadership struct {
	Shard uint32
	// Leader true: this node leads the shard and has applied every entry
	// committed before its term, so actors may activate and serve from the
	// state machine. Leader false: it no longer leads the shard; actors of
	// the shard should passivate (their proposals would fail anyway).
	Leader bool
	// Term is the raft term of a gained leadership; 0 for a loss.
	Term uint64
}

// dispatcher delivers leadership events to subscribers from one goroutine,
// in the order they happened, so a slow subscriber delays other
// subscribers but never raft (which waits on the group's notify channel).
type dispatcher struct {
	mu     sync.Mutex
	queue  []dispatchItem
	closed bool
	wake   chan struct{}
	done   chan struct{}

	nextID uint64 // guarded by mu

	// Owned by the run goroutine.
	subs   map[uint64]func(ShardLeadership)
	leader map[uint32]ShardLeadership // last event of shards led now
}

type dispatchItem struct {
	ev    ShardLeadership
	add   func(ShardLeadership)
	id    uint64
	unsub bool
}

func newDispatcher() *dispatcher {
	d := &dispatcher{
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		subs:   make(map[uint64]func(ShardLeadership)),
		leader: make(map[uint32]ShardLeadership),
	}
	go d.run()
	return d
}

func (d *dispatcher) push(it dispatchItem) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.queue = append(d.queue, it)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) publish(ev ShardLeadership) { d.push(dispatchItem{ev: ev}) }

func (d *dispatcher) run() {
	defer close(d.done)
	for {
		d.mu.Lock()
		items := d.queue
		d.queue = nil
		closed := d.closed
		d.mu.Unlock()
		for _, it := range items {
			d.handle(it)
		}
		if closed && len(items) == 0 {
			return
		}
		if len(items) == 0 {
			<-d.wake
		}
	}
}

func (d *dispatcher) handle(it dispatchItem) {
	switch {
	case it.add != nil:
		d.subs[it.id] = it.add
		// Replay the present, in shard order, so the subscriber needs
		// no separate, racy look at who leads what.
		for _, shard := range slices.Sorted(maps.Keys(d.leader)) {
			it.add(d.leader[shard])
		}
	case it.unsub:
		delete(d.subs, it.id)
	default:
		if it.ev.Leader {
			d.leader[it.ev.Shard] = it.ev
		} else {
			delete(d.leader, it.ev.Shard)
		}
		for _, id := range slices.Sorted(maps.Keys(d.subs)) {
			d.subs[id](it.ev)
		}
	}
}

// close delivers what is queued and stops the goroutine.
func (d *dispatcher) close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
	<-d.done
}

// Subscribe registers fn to be told of leadership changes of this node's
// shards. Its first calls describe the present: one Leader event for every
// shard this node leads and is ready on. Calls come from a single
// goroutine, in order; fn must return promptly (hand work off rather than
// block) since it delays the delivery of later events to every subscriber.
// The returned function unsubscribes without waiting: events already
// queued may still reach fn after it returns. It may be called from fn.
func (h *Host) Subscribe(fn func(ShardLeadership)) (unsubscribe func()) {
	d := h.events
	d.mu.Lock()
	d.nextID++
	id := d.nextID
	d.mu.Unlock()
	d.push(dispatchItem{add: fn, id: id})
	var once sync.Once
	return func() {
		once.Do(func() { d.push(dispatchItem{id: id, unsub: true}) })
	}
}
