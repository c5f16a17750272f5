// Command ration-node runs a Ration node. Configuration comes from flags,
// RATION_* environment variables and an optional YAML file (--config); run
// with --help for the list.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/ration/ration/config"
	"github.com/ration/ration/node"
)

func main() {
	cfg, err := config.Load(os.Args[1:], os.Environ())
	if errors.Is(err, config.ErrHelp) {
		fmt.Print(config.Usage())
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ration-node: configuration:\n%v\n", err)
		os.Exit(2)
	}
	opts := &slog.HandlerOptions{Level: cfg.SlogLevel()}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, opts)
	}
	logger := slog.New(h)
	logger.Info("configuration", "config", cfg)
	if cfg.MemoryLimit > 0 {
		// The runtime's limit is the process's: set here, not by node, which
		// tests run several of in one process.
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	n, err := node.Start(ctx, cfg, logger)
	if err != nil {
		logger.Error("start", "err", err)
		os.Exit(1)
	}
	<-ctx.Done()
	stop()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := n.Shutdown(sctx); err != nil {
		logger.Error("shutdown", "err", err)
		os.Exit(1)
	}
}
