package actors

import (
	"container/list"

	"github.com/asynkron/protoactor-go/actor"
)

// activation is one user's actor on this node, an entry of the directory's
// cache of actors.
type activation struct {
	user  string
	shard uint32
	pid   *actor.PID
	// bytes is what the actor's ledger may hold (ledger.MemoryBound), as
	// the actor last reported it.
	bytes int64
	elem  *list.Element
}

// activations is the directory's cache of actors, most recently used
// first, weighed by their ledgers' memory. It is not safe for concurrent
// use: the directory's mutex guards it.
//
// Every actor is a cache of the user's replicated log, so evicting one
// costs a rebuild on the user's next request, never an answer: the same
// reason the idle timeout may stop an actor at any moment.
type activations struct {
	lru    list.List // of *activation
	byUser map[string]*activation
	bytes  int64
}

func newActivations() *activations {
	return &activations{byUser: map[string]*activation{}}
}

// get returns the user's activation and makes it the most recently used.
func (c *activations) get(user string) (*activation, bool) {
	a, ok := c.byUser[user]
	if ok {
		c.lru.MoveToFront(a.elem)
	}
	return a, ok
}

// touch makes a the most recently used, if it is still in the cache.
func (c *activations) touch(a *activation) {
	if c.byUser[a.user] == a {
		c.lru.MoveToFront(a.elem)
	}
}

func (c *activations) add(a *activation) {
	a.elem = c.lru.PushFront(a)
	c.byUser[a.user] = a
	c.bytes += a.bytes
}

// remove drops a if it is still the user's activation, and says whether
// it was.
func (c *activations) remove(a *activation) bool {
	if c.byUser[a.user] != a {
		return false
	}
	delete(c.byUser, a.user)
	c.lru.Remove(a.elem)
	c.bytes -= a.bytes
	return true
}

// resize records a's new weight, if a is still in the cache.
func (c *activations) resize(a *activation, bytes int64) {
	if c.byUser[a.user] == a {
		c.bytes += bytes - a.bytes
	}
	a.bytes = bytes
}

// evict removes the least recently used activations until the cache
// weighs at most budget, sparing keep (the one being served), and returns
// them. A budget of 0 or less is no bound.
func (c *activations) evict(budget int64, keep *activation) []*activation {
	if budget <= 0 {
		return nil
	}
	var out []*activation
	for e := c.lru.Back(); e != nil && c.bytes > budget; {
		a := e.Value.(*activation)
		e = e.Prev()
		if a == keep {
			continue
		}
		c.remove(a)
		out = append(out, a)
	}
	return out
}

func (c *activations) len() int { return len(c.byUser) }
