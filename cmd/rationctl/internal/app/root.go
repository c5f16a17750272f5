// Package app is rationctl: the command-line client of a Ration cluster.
// main only wires it to the process (Execute); tests drive App directly.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/ration/ration/client"
)

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the command ran and failed, or reported failures
	exitUsage = 2 // bad flags or arguments
)

// DefaultAddr is the gRPC address used when neither --addr nor RATION_ADDR
// is set.
const DefaultAddr = "127.0.0.1:9090"

// App is rationctl with its process dependencies made explicit.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads the environment (RATION_ADDR).
	Getenv func(string) string
	// Now is the clock for "now" and relative times.
	Now func() time.Time
	// StderrIsTerminal selects a progress bar over periodic progress lines.
	StderrIsTerminal bool
	// ProgressInterval is the period of progress lines when stderr is not
	// a terminal. Default 2s; bench always reports once a second.
	ProgressInterval time.Duration

	g globals
}

// globals are the persistent flags.
type globals struct {
	addr        string
	output      string
	timeout     time.Duration
	retryBudget time.Duration
	tls         bool
	caFile      string
	certFile    string
	keyFile     string
	serverName  string
	verbose     bool
	noRouting   bool
	inflight    int
}

// Execute runs rationctl with the process's arguments and standard
// streams and returns the exit code.
func Execute(ctx context.Context) int {
	a := &App{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Getenv: os.Getenv, Now: time.Now,
		StderrIsTerminal: term.IsTerminal(int(os.Stderr.Fd())),
	}
	return a.Run(ctx, os.Args[1:])
}

// usageError marks errors in how the command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// exitError carries an exit code for a command that printed its own
// report (import with failures) and has nothing more to say.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// Run runs one command line and returns the exit code. Errors are printed
// on Stderr.
func (a *App) Run(ctx context.Context, args []string) int {
	root := a.Command()
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	fmt.Fprintln(a.Stderr, "rationctl:", message(err))
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(a.Stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		return exitUsage
	}
	return exitFail
}

// Command builds the root command. Each call builds a fresh tree, so tests
// can run several command lines on one App.
func (a *App) Command() *cobra.Command {
	if a.Getenv == nil {
		a.Getenv = os.Getenv
	}
	if a.Now == nil {
		a.Now = time.Now
	}
	if a.Stdin == nil {
		a.Stdin = strings.NewReader("")
	}
	a.g = globals{}
	root := &cobra.Command{
		Use:   "rationctl",
		Short: "Command-line client for a Ration credit ledger cluster",
		Long: `rationctl talks to a Ration cluster over gRPC: grant and deduct credits,
read balances and histories, import operations in bulk, check the cluster,
and benchmark it.

Times are accepted as Unix milliseconds, RFC 3339 (2026-01-02T15:04:05Z),
"now", or a signed offset from now such as -2h, +30m, -90s or -7d. Tables
print times as RFC 3339 in UTC; --output json prints Unix milliseconds.

Writes are safe to repeat: a grant or deduction sent again with the same
--id and fields is applied once, and the repeat reports "duplicate". Give
absolute times to repeat a command: "now" and offsets resolve anew.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if a.g.output != outTable && a.g.output != outJSON {
				return usageError{fmt.Errorf("--output must be %s or %s, got %q", outTable, outJSON, a.g.output)}
			}
			return nil
		},
	}
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })

	addr := DefaultAddr
	if env := a.Getenv("RATION_ADDR"); env != "" {
		addr = env
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.g.addr, "addr", addr, "comma-separated gRPC addresses (host:port) of cluster nodes; env RATION_ADDR")
	pf.StringVarP(&a.g.output, "output", "o", outTable, "output format: table or json")
	pf.DurationVar(&a.g.timeout, "timeout", client.DefaultTimeout, "timeout of each attempt of a call")
	pf.DurationVar(&a.g.retryBudget, "retry-budget", client.DefaultRetryBudget, "how long to retry transient failures (same ids); negative disables retries")
	pf.BoolVar(&a.g.tls, "tls", false, "use TLS (system roots unless --ca)")
	pf.StringVar(&a.g.caFile, "ca", "", "PEM file of CA certificates to trust (implies --tls)")
	pf.StringVar(&a.g.certFile, "cert", "", "client certificate (PEM) for nodes that require one; needs --key, implies --tls")
	pf.StringVar(&a.g.keyFile, "key", "", "private key (PEM) of --cert")
	pf.StringVar(&a.g.serverName, "server-name", "", "name the nodes' certificate must carry, when --addr names them otherwise (a port-forward); implies --tls")
	pf.BoolVarP(&a.g.verbose, "verbose", "v", false, "log retries on stderr")
	pf.IntVar(&a.g.inflight, "max-inflight", client.DefaultMaxInflight, "writes, and balance reads, in flight to one node; more wait and leave together in one Batch (or GetBalances) call (negative: send every call alone)")
	pf.BoolVar(&a.g.noRouting, "no-routing", false, "send every call to the --addr nodes, which forward it, instead of straight to the leader of its user's shard (routing needs the nodes' advertised gRPC addresses to be reachable)")

	root.AddCommand(
		a.grantCommand(),
		a.deductCommand(),
		a.balanceCommand(),
		a.eventsCommand(),
		a.statusCommand(),
		a.importCommand(),
		a.benchCommand(),
	)
	return root
}

// exactArgs is cobra.ExactArgs with a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{err}
		}
		return nil
	}
}

func (a *App) endpoints() []string {
	var eps []string
	for _, e := range strings.Split(a.g.addr, ",") {
		if e = strings.TrimSpace(e); e != "" {
			eps = append(eps, e)
		}
	}
	return eps
}

func (a *App) tlsConfig() (*tls.Config, error) {
	if !a.g.tls && a.g.caFile == "" && a.g.certFile == "" && a.g.keyFile == "" && a.g.serverName == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: a.g.serverName}
	if (a.g.certFile == "") != (a.g.keyFile == "") {
		return nil, usageError{errors.New("--cert and --key go together")}
	}
	if a.g.certFile != "" {
		cert, err := tls.LoadX509KeyPair(a.g.certFile, a.g.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert, --key: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if a.g.caFile != "" {
		pem, err := os.ReadFile(a.g.caFile)
		if err != nil {
			return nil, fmt.Errorf("read --ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca %s: no PEM certificates", a.g.caFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// dial returns a client for the global flags; the caller closes it.
func (a *App) dial(ctx context.Context) (*client.Client, error) {
	eps := a.endpoints()
	if len(eps) == 0 {
		return nil, usageError{errors.New("--addr is empty")}
	}
	tlsCfg, err := a.tlsConfig()
	if err != nil {
		return nil, err
	}
	opts := client.Options{
		Endpoints:      eps,
		TLS:            tlsCfg,
		Timeout:        a.g.timeout,
		RetryBudget:    a.g.retryBudget,
		DisableRouting: a.g.noRouting,
		MaxInflight:    a.g.inflight,
	}
	if a.g.verbose {
		opts.Logger = slog.New(slog.NewTextHandler(a.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return client.New(ctx, opts)
}

// withClient runs f with a client for the global flags.
func (a *App) withClient(ctx context.Context, f func(*client.Client) error) error {
	c, err := a.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return f(c)
}

// message is how rationctl prints an error: the client library's errors
// start with "ration: ", which rationctl's own prefix replaces.
func message(err error) string { return strings.TrimPrefix(err.Error(), "ration: ") }
