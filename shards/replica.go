package shards

// IsVoter reports whether this node is a voter of shard's group in its
// latest configuration, as this node knows it: a replica that serves. A
// replica still being added (a nonvoter catching up, or a group no leader
// has contacted yet) or one being removed is not.
func (h *Host) IsVoter(shard uint32) bool {
	g, err := h.group(shard)
	return err == nil && g.isVoter()
}
