package actorcluster

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/ration/ration/actors"
	rationv1 "github.com/ration/ration/api/rationv1"
	"github.com/ration/ration/cluster/actorcluster/actorpb"
	"github.com/ration/ration/service"
)

// Batch makes one attempt at each shard's part of ops, the parts in
// parallel: one KIND_BATCH envelope to the directory actor of the node
// that leads the shard, which proposes the part together. A failure of
// the attempt is every op's result. A leader of an older release, which
// does not serve KIND_BATCH, gets the part's ops one by one instead.
func (c *Cluster) Batch(ctx context.Context, ops []actors.BatchOp) []actors.BatchResult {
	out := make([]actors.BatchResult, len(ops))
	actors.EachPart(actors.Indexes(len(ops)), func(i int) uint32 { return c.cfg.Locator.ShardOf(ops[i].User) }, func(_ uint32, idx []int) {
		c.batchPart(ctx, ops, idx, out)
	})
	return out
}

// batchPart is one attempt at the ops idx of ops, all of one shard.
func (c *Cluster) batchPart(ctx context.Context, ops []actors.BatchOp, idx []int, out []actors.BatchResult) {
	fail := func(err error) {
		for _, i := range idx {
			out[i].Err = err
		}
	}
	// The first user's actor on the leader says which node leads; the
	// lookup caches it, and drops it on what the reply says.
	first := ops[idx[0]].User
	_, node, err := c.lookup.resolve(ctx, first)
	if err != nil {
		fail(err)
		return
	}
	dir, err := c.lookup.directoryOf(node)
	if err != nil {
		fail(err)
		return
	}
	msg := &rationv1.BatchRequest{Operations: make([]*rationv1.Operation, len(idx))}
	for k, i := range idx {
		msg.Operations[k] = operation(ops[i])
	}
	rep, err := c.send(ctx, first, dir, node, newRequest(actorpb.Kind_KIND_BATCH, first, msg))
	if err == nil {
		err = replyErr(rep)
	}
	switch {
	case errors.Is(err, ErrUnsupported):
		c.batchOneByOne(ctx, ops, idx, out)
		return
	case err != nil:
		fail(err)
		return
	case len(rep.GetResults()) != len(idx):
		fail(fmt.Errorf("%w: %d results from %s for %d operations", service.ErrUnavailable, len(rep.GetResults()), node, len(idx)))
		return
	}
	for k, i := range idx {
		out[i].WriteResult, out[i].Err = writeResult(rep.GetResults()[k], ops[i].Deduction != nil)
	}
}

// batchOneByOne makes one attempt at each op, as single writes: users in
// parallel, each user's ops in order, and after an op without an answer
// the user's later ops are skipped, as the leader's actor would.
func (c *Cluster) batchOneByOne(ctx context.Context, ops []actors.BatchOp, idx []int, out []actors.BatchResult) {
	actors.EachPart(idx, func(i int) string { return ops[i].User }, func(user string, mine []int) {
		skip := false
		for _, i := range mine {
			if skip {
				out[i].Err = actors.ErrSkipped
				continue
			}
			if op := ops[i]; op.Grant != nil {
				out[i].WriteResult, out[i].Err = c.Grant(ctx, user, *op.Grant)
			} else {
				out[i].WriteResult, out[i].Err = c.Deduct(ctx, user, *op.Deduction)
			}
			switch service.ClassOf(out[i].Err) {
			case service.ClassOK, service.ClassInvalid, service.ClassConflict, service.ClassInsufficient:
			default:
				skip = true
			}
		}
	})
}

func operation(op actors.BatchOp) *rationv1.Operation {
	if op.Grant != nil {
		return &rationv1.Operation{Op: &rationv1.Operation_Grant{Grant: grantMessage(op.User, *op.Grant)}}
	}
	return &rationv1.Operation{Op: &rationv1.Operation_Deduct{Deduct: deductMessage(op.User, *op.Deduction)}}
}

// serveBatch runs a KIND_BATCH envelope on this node's directory: only if
// every op is of one shard that this node leads (otherwise not-leader,
// with a hint), and not past its sender's deadline.
func (l *Lookup) serveBatch(req *actorpb.Request) *actorpb.Reply {
	var msg rationv1.BatchRequest
	if err := proto.Unmarshal(req.GetPayload(), &msg); err != nil || len(msg.GetOperations()) == 0 {
		return codeReply(actorpb.Code_CODE_UNSUPPORTED, "%s payload: %v (%d operations)", req.GetKind(), err, len(msg.GetOperations()))
	}
	ops := make([]actors.BatchOp, len(msg.GetOperations()))
	for k, o := range msg.GetOperations() {
		switch op := o.GetOp().(type) {
		case *rationv1.Operation_Grant:
			g := grantOf(op.Grant)
			ops[k] = actors.BatchOp{User: op.Grant.GetUser(), Grant: &g}
		case *rationv1.Operation_Deduct:
			d := deductionOf(op.Deduct)
			ops[k] = actors.BatchOp{User: op.Deduct.GetUser(), Deduction: &d}
		default:
			return codeReply(actorpb.Code_CODE_UNSUPPORTED, "%s payload: operation %d is neither a grant nor a deduction", req.GetKind(), k)
		}
	}
	shard := l.loc.ShardOf(ops[0].User)
	for _, op := range ops[1:] {
		if s := l.loc.ShardOf(op.User); s != shard {
			return codeReply(actorpb.Code_CODE_UNAVAILABLE, "a batch of shards %d and %d: send each shard's part alone", shard, s)
		}
	}
	if !l.loc.LocalLeader(shard) {
		return notLeaderReply(l.loc, shard)
	}
	ctx, cancel, late := startContext(req, l.expired)
	defer cancel()
	if late != nil {
		return late
	}
	res := l.dir.Batch(ctx, ops)
	rep := &actorpb.Reply{Results: make([]*actorpb.Reply, len(res))}
	for k, r := range res {
		rep.Results[k] = writeReply(r.WriteResult, r.Err, ops[k].Deduction != nil)
	}
	return rep
}
