// Package postgres runs a PostgreSQL server (Debian's postgresql) for the
// benchmark, as a non-root user in a fresh cluster directory on a
// loopback port, with durable commits (fsync=on, synchronous_commit=on),
// and drives it as a plain ledger: an events table and a balances table,
// and one transaction per deduction that checks the balance, decrements
// it and records the event.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ration/ration/bench/load"
	"github.com/ration/ration/bench/procs"
)

// Port is the server's port on 127.0.0.1.
const Port = 23432

// ErrNotFound is returned when no PostgreSQL installation is found.
var ErrNotFound = errors.New("postgres: no /usr/lib/postgresql/<version>/bin/postgres")

// ErrRefused is a deduction the balance does not cover. Prepare grants
// enough that a run never sees it.
var ErrRefused = errors.New("postgres: insufficient balance")

// Config describes the server.
type Config struct {
	// BinDir holds initdb and postgres.
	BinDir string
	// MaxConns is the client pool's size; the server allows a few more.
	MaxConns int
}

// FindBinDir returns the bin directory of the newest installed major
// version under root (/usr/lib/postgresql on Debian).
func FindBinDir(root string) (string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	var versions []int
	for _, e := range entries {
		if v, err := strconv.Atoi(e.Name()); err == nil {
			if _, err := os.Stat(filepath.Join(root, e.Name(), "bin", "postgres")); err == nil {
				versions = append(versions, v)
			}
		}
	}
	if len(versions) == 0 {
		return "", ErrNotFound
	}
	return filepath.Join(root, strconv.Itoa(slices.Max(versions)), "bin"), nil
}

// Version is the output of `postgres --version`.
func Version(ctx context.Context, binDir string) string {
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "postgres"), "--version").Output()
	if err != nil {
		return "postgres (version unknown)"
	}
	return strings.TrimSpace(string(out))
}

// runAs is the user the server runs as: PostgreSQL refuses root, so a
// root harness hands it to the postgres system user that Debian's
// package creates; any other harness user runs it as itself.
func runAs() (procs.Owner, error) {
	if os.Geteuid() != 0 {
		return procs.Owner{}, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return procs.Owner{}, fmt.Errorf("postgres: running as root needs the postgres user: %w", err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return procs.Owner{}, fmt.Errorf("postgres: uid of postgres: %w", err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return procs.Owner{}, fmt.Errorf("postgres: gid of postgres: %w", err)
	}
	return procs.Owner{Name: "postgres", UID: uint32(uid), GID: uint32(gid)}, nil
}

// serverArgs is the postgres command line: durable commits, enough
// connections for the pool, the socket kept in the data directory.
func serverArgs(dataDir string, maxConns int) []string {
	return []string{
		"-D", dataDir, "-h", "127.0.0.1", "-p", strconv.Itoa(Port), "-k", dataDir,
		"-c", "fsync=on", "-c", "synchronous_commit=on", "-c", "full_page_writes=on",
		"-c", "max_connections=" + strconv.Itoa(maxConns+10), "-c", "shared_buffers=256MB",
	}
}

// Server is a running server and a connection pool to it.
type Server struct {
	proc  *procs.Proc
	pool  *pgxpool.Pool
	users []string
}

// Start initializes a fresh cluster, starts the server and returns once
// it accepts connections.
func Start(ctx context.Context, g *procs.Group, cfg Config) (*Server, error) {
	if err := procs.CheckFree([]string{net.JoinHostPort("127.0.0.1", strconv.Itoa(Port))}, nil); err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	as, err := runAs()
	if err != nil {
		return nil, err
	}
	dir, err := g.TempDir("ration-bench-postgres-", as)
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb, err := g.Start(procs.Spec{
		Name: "initdb", Path: filepath.Join(cfg.BinDir, "initdb"), Dir: dir, As: as,
		Args: []string{"-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-instructions"},
		Log:  filepath.Join(dir, "initdb.log"),
	})
	if err != nil {
		return nil, err
	}
	if err := initdb.Wait(ctx); err != nil {
		return nil, fmt.Errorf("postgres: initdb: %w\n%s", err, procs.Tail(filepath.Join(dir, "initdb.log"), 20))
	}
	s := &Server{}
	s.proc, err = g.Start(procs.Spec{
		Name: "postgres", Path: filepath.Join(cfg.BinDir, "postgres"), Dir: dir, As: as,
		Args: serverArgs(data, cfg.MaxConns), Log: filepath.Join(dir, "postgres.log"),
	})
	if err != nil {
		return nil, err
	}
	if err := s.connect(ctx, cfg.MaxConns); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

func (s *Server) connect(ctx context.Context, maxConns int) error {
	pc, err := pgxpool.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", Port))
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	pc.MaxConns = int32(maxConns)
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err = procs.WaitFor(wctx, "postgres", func(ctx context.Context) error {
		pool, err := pgxpool.NewWithConfig(ctx, pc)
		if err != nil {
			return err
		}
		if err := pool.Ping(ctx); err != nil {
			pool.Close()
			return err
		}
		s.pool = pool
		return nil
	}, s.proc)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	return nil
}

// Stop closes the pool and stops the server (SIGINT is its fast
// shutdown).
func (s *Server) Stop() {
	if s.pool != nil {
		s.pool.Close()
	}
	s.proc.Stop(syscall.SIGINT, 10*time.Second)
}

// Exited reports a server that has died.
func (s *Server) Exited() error { return s.proc.Exited() }

// schema is the plain ledger: a balance per user, checked to stay
// non-negative, and an event per deduction keyed by its id, so a
// duplicate id fails the transaction instead of deducting twice.
const schema = `
CREATE TABLE balances (
	user_id text PRIMARY KEY,
	balance bigint NOT NULL CHECK (balance >= 0)
);
CREATE TABLE events (
	id      text PRIMARY KEY,
	user_id text NOT NULL REFERENCES balances (user_id),
	kind    text NOT NULL,
	amount  bigint NOT NULL,
	at      timestamptz NOT NULL DEFAULT now()
);`

// deduct checks and decrements the balance and records the event in one
// statement, so one transaction and one round trip: the decrement only
// matches a balance that covers the amount, and the event is inserted
// only if it did.
const deduct = `
WITH d AS (
	UPDATE balances SET balance = balance - $2
	WHERE user_id = $1 AND balance >= $2
	RETURNING user_id
)
INSERT INTO events (id, user_id, kind, amount)
SELECT $3, user_id, 'deduct', $2 FROM d`

// Prepare creates the schema and every user's initial balance.
func (s *Server) Prepare(ctx context.Context, users []string, initial int64) error {
	s.users = users
	if _, err := s.pool.Exec(ctx, schema); err != nil {
		return fmt.Errorf("postgres: schema: %w", err)
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO balances (user_id, balance) SELECT unnest($1::text[]), $2`, users, initial)
	if err != nil {
		return fmt.Errorf("postgres: balances: %w", err)
	}
	return nil
}

func (s *Server) user(w *load.Worker) string { return s.users[w.Rand.IntN(len(s.users))] }

// Deduct is one deduction per call, in its own transaction.
func (s *Server) Deduct(ctx context.Context, w *load.Worker) (int, error) {
	tag, err := s.pool.Exec(ctx, deduct, s.user(w), 1+w.Rand.Int64N(10), w.UniqueID())
	if err != nil {
		return 1, err
	}
	if tag.RowsAffected() != 1 {
		return 1, ErrRefused
	}
	return 1, nil
}

// Balance reads a user's balance.
func (s *Server) Balance(ctx context.Context, w *load.Worker) (int, error) {
	var b int64
	err := s.pool.QueryRow(ctx, `SELECT balance FROM balances WHERE user_id = $1`, s.user(w)).Scan(&b)
	return 1, err
}
