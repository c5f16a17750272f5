// Package workload drives a Ration cluster with the chaos run's client
// traffic and records every call in a history.Recorder for the checkers.
//
// Each client is a goroutine with its own client.Client over every node
// and its own random stream, so the sequence of operations a client
// chooses is a function of the seed; what the cluster answers, and when,
// is not. The mix is chosen to exercise what failover can break: grants
// that expire during the run, deductions that are refused because the
// credits are short, back-dated writes that reorder a user's history,
// balance reads now, in the past and in the future, and writes re-sent
// with their id after an answer or a timeout.
package workload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ration/ration/test/chaos/history"
)

// Config describes the traffic.
type Config struct {
	Seed int64
	// Clients is the number of concurrent clients (8..16 in a chaos run).
	Clients int
	// Users is the number of users (50..200).
	Users int
	// HotUsers is the number of users that take HotShare of the traffic.
	HotUsers int
	// Endpoints are the gRPC host:port of every node; each client talks to
	// all of them.
	Endpoints []string
	// Resend is the fraction of answered writes sent again later with the
	// same id and fields (Op.Resend).
	Resend float64
	// UserPrefix starts every user id, e.g. "u-<seed>-": distinct per run,
	// so that runs against one cluster do not mix.
	UserPrefix string
	// Now is the harness clock; nil means time.Now.
	Now func() time.Time

	// HotShare is the share of operations on hot users; 0 means 0.4.
	HotShare float64
	// AttemptTimeout bounds each attempt of a call; 0 means 2 s.
	AttemptTimeout time.Duration
	// RetryBudget bounds the retries of a call, which keep its id; 0 means
	// 6 s.
	RetryBudget time.Duration
	// Logger receives the clients' retry records at debug level; nil
	// discards them.
	Logger *slog.Logger
}

// Defaults of the optional Config fields.
const (
	DefaultHotShare       = 0.4
	DefaultAttemptTimeout = 2 * time.Second
	DefaultRetryBudget    = 6 * time.Second
)

// ErrConfig wraps every configuration error of Run.
var ErrConfig = errors.New("workload: bad config")

func (cfg *Config) fill() error {
	switch {
	case cfg.Clients < 1:
		return fmt.Errorf("%w: Clients must be at least 1, got %d", ErrConfig, cfg.Clients)
	case cfg.Users < 1:
		return fmt.Errorf("%w: Users must be at least 1, got %d", ErrConfig, cfg.Users)
	case cfg.HotUsers < 0 || cfg.HotUsers > cfg.Users:
		return fmt.Errorf("%w: HotUsers must be in [0, Users], got %d", ErrConfig, cfg.HotUsers)
	case len(cfg.Endpoints) == 0:
		return fmt.Errorf("%w: no Endpoints", ErrConfig)
	case cfg.Resend < 0 || cfg.Resend > 1:
		return fmt.Errorf("%w: Resend must be in [0, 1], got %v", ErrConfig, cfg.Resend)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HotShare <= 0 {
		cfg.HotShare = DefaultHotShare
	}
	if cfg.AttemptTimeout <= 0 {
		cfg.AttemptTimeout = DefaultAttemptTimeout
	}
	if cfg.RetryBudget <= 0 {
		cfg.RetryBudget = DefaultRetryBudget
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// UserName is the id of user i of a run.
func UserName(prefix string, i int) string { return fmt.Sprintf("%s%03d", prefix, i) }

// Run drives the clients until ctx is done, recording every call (invoke
// and return in Unix ns of cfg.Now). Calls in flight when ctx ends are
// finished, within the client's retry budget, and recorded, so Run returns
// a few seconds after ctx at most. It fails only if the configuration is
// wrong or a client cannot be created.
func Run(ctx context.Context, cfg Config, rec *history.Recorder) error {
	if err := cfg.fill(); err != nil {
		return err
	}
	if rec == nil {
		return fmt.Errorf("%w: nil Recorder", ErrConfig)
	}
	users := make([]string, cfg.Users)
	for i := range users {
		users[i] = UserName(cfg.UserPrefix, i)
	}
	est := &estimates{bal: map[string]int64{}}
	workers := make([]*worker, cfg.Clients)
	for i := range workers {
		c, err := newClient(ctx, cfg)
		if err != nil {
			for _, w := range workers[:i] {
				w.c.Close()
			}
			return err
		}
		workers[i] = &worker{
			id: i, cfg: cfg, c: c, rec: rec, est: est, users: users,
			// A PCG stream per client: the seed picks the run, the
			// client index the stream.
			rng:     rand.New(rand.NewPCG(uint64(cfg.Seed), uint64(i)+1)),
			unknown: map[string][]history.Op{},
		}
	}
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			defer w.c.Close()
			w.run(ctx)
		})
	}
	wg.Wait()
	return nil
}

// estimates is every user's balance now as the clients last saw it, to
// size deductions so that a share of them is refused: enough to exercise
// refusals, few enough that most deductions change the state.
type estimates struct {
	mu  sync.Mutex
	bal map[string]int64
}

func (e *estimates) get(user string) int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.bal[user]
}

func (e *estimates) add(user string, d int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bal[user] += d
}

func (e *estimates) set(user string, v int64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.bal[user] = v
}
