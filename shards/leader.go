package shards

// LeaderTerm is the shard's leader as this node knows it, with the raft
// term it leads in: its server id and raft address, empty if unknown, and
// term 0 if the shard is not hosted here. A shard has at most one leader
// per term, so of two reports the one with the higher term is the fresher
// (clients that route merge reports from several nodes this way).
//
// raft keeps the term and the leader apart; a term change clears the
// leader first and sets the new one after. Reading the term on both sides
// of the leader and retrying if it moved keeps a new term from being
// reported with the previous term's leader.
func (h *Host) LeaderTerm(shard uint32) (id, addr string, term uint64) {
	g, err := h.group(shard)
	if err != nil {
		return "", "", 0
	}
	for range 3 {
		t := g.raft.CurrentTerm()
		a, i := g.raft.LeaderWithID()
		if g.raft.CurrentTerm() == t {
			return string(i), string(a), t
		}
	}
	// Elections in quick succession: the term, without a leader.
	return "", "", g.raft.CurrentTerm()
}
