package actors

import "time"

// pooledDispatcher runs mailboxes on long-lived goroutines. protoactor's
// default dispatcher starts a fresh goroutine for every mailbox run, whose
// small stack then grows through the request path every time: under read
// load runtime.copystack alone took about 16% of the node's CPU. A worker
// keeps its grown stack from one run to the next.
//
// A mailbox run is handed to an idle worker if there is one, else to a new
// one, so runs never queue behind each other: an actor blocked on a raft
// proposal holds its worker, not anyone else's. Workers idle for
// workerIdle exit.
type pooledDispatcher struct {
	throughput int
	work       chan func()
}

const workerIdle = 30 * time.Second

func newPooledDispatcher(throughput int) *pooledDispatcher {
	return &pooledDispatcher{throughput: throughput, work: make(chan func())}
}

func (d *pooledDispatcher) Schedule(fn func()) {
	select {
	case d.work <- fn: // an idle worker was waiting
	default:
		go d.worker(fn)
	}
}

func (d *pooledDispatcher) Throughput() int { return d.throughput }

func (d *pooledDispatcher) worker(fn func()) {
	t := time.NewTimer(workerIdle)
	defer t.Stop()
	for {
		fn()
		t.Reset(workerIdle)
		select {
		case fn = <-d.work:
		case <-t.C:
			return
		}
	}
}
