// Package raftlog is a node's shared raft log store: the logs and stable
// stores of every raft group on the node live in one Pebble engine, so
// that one WAL fsync makes the appends of every group durable at once.
// See DESIGN.md.
package raftlog

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Options configures a Store.
type Options struct {
	// Dir is the engine's directory; it is created if missing.
	Dir    string
	Logger *slog.Logger
}

// ErrClosed is returned by every call on a closed Store, and on its groups.
var ErrClosed = errors.New("raftlog: closed")

// Store is the node's engine and the table of the groups open on it.
type Store struct {
	db  *pebble.DB
	log *slog.Logger
	ev  *events

	// closeMu is held shared by every read and write, and exclusively by
	// Close: Pebble panics on a closed DB, and a straggling raft
	// goroutine must get ErrClosed instead.
	closeMu sync.RWMutex
	closed  bool

	mu     sync.Mutex
	groups map[uint32]*Group
}

// Open opens (creating if need be) the engine in opts.Dir. A second
// process on the same directory fails at once on Pebble's file lock.
func Open(opts Options) (*Store, error) {
	if opts.Dir == "" {
		return nil, errors.New("raftlog: Dir is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	log := opts.Logger.With("component", "raftlog")
	ev := &events{log: log}
	po, release := engineOptions(log, ev)
	defer release()
	db, err := pebble.Open(opts.Dir, po)
	if err != nil {
		return nil, fmt.Errorf("raftlog: open %s: %w", opts.Dir, err)
	}
	return &Store{db: db, log: log, ev: ev, groups: map[uint32]*Group{}}, nil
}

// Group opens the view of one raft group's log and stable store, reading
// its first and last index once. A group has at most one open view: two
// rafts on one log would corrupt it.
func (s *Store) Group(id uint32) (*Group, error) {
	if err := s.enter(); err != nil {
		return nil, err
	}
	defer s.leave()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, open := s.groups[id]; open {
		return nil, fmt.Errorf("raftlog: group %d is already open", id)
	}
	g := &Group{s: s, id: id}
	first, last, err := g.bounds(0, ^uint64(0))
	if err != nil {
		return nil, err
	}
	g.first.Store(first)
	g.last.Store(last)
	s.groups[id] = g
	return g, nil
}

// DropGroup deletes every key of a group (its log and stable store),
// durably, as removing a replica from this node needs. The group must not
// be open. A raft heartbeat handler still running after the group's raft
// shut down may write a key back (see Group.Close); that leaves a term or
// entries from the group's real leader, which raft handles like any
// stale replica's state if the group is ever hosted here again.
func (s *Store) DropGroup(id uint32) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.leave()
	s.mu.Lock()
	_, open := s.groups[id]
	s.mu.Unlock()
	if open {
		return fmt.Errorf("raftlog: group %d is open; close it before dropping it", id)
	}
	if err := s.db.DeleteRange(groupPrefix(id), groupEnd(id), pebble.Sync); err != nil {
		return fmt.Errorf("raftlog: drop group %d: %w", id, err)
	}
	return nil
}

// Close closes the engine once in-flight calls are done. Groups still
// open get ErrClosed from then on.
func (s *Store) Close() error {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("raftlog: close: %w", err)
	}
	return nil
}

func (s *Store) enter() error {
	s.closeMu.RLock()
	if s.closed {
		s.closeMu.RUnlock()
		return ErrClosed
	}
	return nil
}

func (s *Store) leave() { s.closeMu.RUnlock() }
