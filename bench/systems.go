package main

import (
	"context"
	"fmt"

	"github.com/ration/ration/bench/etcd"
	"github.com/ration/ration/bench/load"
	"github.com/ration/ration/bench/postgres"
	"github.com/ration/ration/bench/procs"
	"github.com/ration/ration/bench/ration"
	"github.com/ration/ration/bench/report"
)

// server is a started system under test.
type server interface {
	// Prepare gives every user an opening balance no run exhausts.
	Prepare(ctx context.Context, users []string, initial int64) error
	// Exited reports a process of the system that died.
	Exited() error
	Stop()
}

// op is how a server carries out one load.
type op struct {
	name    string // what a call does, for the table
	call    load.Call
	perCall int
}

// binaries are the executables the systems run.
type binaries struct {
	node, etcd, postgresBin string
}

// start starts c's system and returns it with its loads.
func start(ctx context.Context, g *procs.Group, o options, bins binaries, c config) (server, map[string]op, error) {
	switch c.system {
	case report.Ration:
		layout := c.layout
		if layout == layoutDefault {
			layout = ""
		}
		s, err := ration.Start(ctx, g, ration.Config{Binary: bins.node, Nodes: c.nodes, Layout: layout, BatchSize: o.batch})
		if err != nil {
			return nil, nil, err
		}
		return s, map[string]op{
			report.LoadWrite: {"Deduct", s.Deduct, 1},
			report.LoadAlone: {"Deduct, each call alone", s.DeductAlone, 1},
			report.LoadOpen:  {"Deduct", s.Deduct, 1},
			report.LoadBatch: {fmt.Sprintf("Batch of %d Deducts", o.batch), s.Batch, o.batch},
			report.LoadRead:  {"Balance", s.Balance, 1},
			report.LoadStale: {"Balance (stale)", s.StaleBalance, 1},
		}, nil
	case report.Etcd:
		s, err := etcd.Start(ctx, g, etcd.Config{Binary: bins.etcd, Members: c.nodes})
		if err != nil {
			return nil, nil, err
		}
		return s, map[string]op{
			report.LoadWrite: {"Put", s.Put, 1},
			report.LoadOpen:  {"Put", s.Put, 1},
			report.LoadCAS:   {"Get + Txn (CAS)", s.CASDeduct, 1},
			report.LoadRead:  {"Get", s.Get, 1},
		}, nil
	case report.Postgres:
		maxConns := max(o.clients, o.sweep[len(o.sweep)-1])
		s, err := postgres.Start(ctx, g, postgres.Config{BinDir: bins.postgresBin, MaxConns: maxConns})
		if err != nil {
			return nil, nil, err
		}
		return s, map[string]op{
			report.LoadWrite: {"deduct transaction", s.Deduct, 1},
			report.LoadOpen:  {"deduct transaction", s.Deduct, 1},
			report.LoadRead:  {"SELECT balance", s.Balance, 1},
		}, nil
	}
	return nil, nil, fmt.Errorf("unknown system %q", c.system)
}
