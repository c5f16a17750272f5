package actors

import "github.com/asynkron/protoactor-go/actor"

// leftovers hands the dead letters what reaches a user actor's mailbox
// and is never served because the actor has stopped.
//
// protoactor drops, without a word, the user messages still queued in a
// mailbox when its actor stops: a poison pill stops the actor after what
// was queued before it, and a request queued after it (routed to the actor
// just before PassivateShard or its idle timeout forgot it, or sent by
// another node that still had its PID) would wait out its whole deadline.
// A batch member's request that waits so holds up its shard's gather and
// every batch of the shard behind it. As a dead letter it is answered at
// once instead: a local request by the directory's watch, which sends it
// again to a fresh activation, and a request with a sender (another node's)
// by protoactor, with a DeadLetterResponse its sender knows how to retry.
//
// It runs as a mailbox middleware, after each message, on the mailbox's
// goroutine: the same one that runs the actor, so it reads the actor's
// fields without a lock.
type leftovers struct{ a *userActor }

func (leftovers) MailboxStarted()   {}
func (leftovers) MessagePosted(any) {}
func (leftovers) MailboxEmpty()     {}
func (l leftovers) MessageReceived(msg any) {
	if !l.a.stopped {
		return
	}
	switch msg.(type) {
	case *request, *actor.MessageEnvelope:
		l.a.dir.sys.DeadLetter.SendUserMessage(l.a.self, msg)
	}
}
