package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/ration/ration/bench/postgres"
	"github.com/ration/ration/bench/report"
)

// postgresRoot is where Debian installs PostgreSQL's versions.
const postgresRoot = "/usr/lib/postgresql"

// errMissing is returned when a system's software is absent and may not
// be installed.
var errMissing = errors.New("missing software")

// findBinaries locates etcd and PostgreSQL for the systems o runs, and
// installs Debian's etcd-server and postgresql with apt-get when they are
// missing and o allows it.
func findBinaries(ctx context.Context, o options, log io.Writer) (binaries, error) {
	// The nodes run in their data directories: the path must not be
	// relative to this one.
	node, err := filepath.Abs(o.nodeBinary)
	if err != nil {
		return binaries{}, fmt.Errorf("node binary: %w", err)
	}
	bins := binaries{node: node}
	var pkgs []string
	if slices.Contains(o.systems, report.Etcd) {
		if _, err := exec.LookPath("etcd"); err != nil {
			pkgs = append(pkgs, "etcd-server")
		}
	}
	if slices.Contains(o.systems, report.Postgres) && !o.quick {
		if _, err := postgres.FindBinDir(postgresRoot); err != nil {
			pkgs = append(pkgs, "postgresql")
		}
	}
	if len(pkgs) > 0 {
		if err := aptInstall(ctx, o, pkgs, log); err != nil {
			return bins, err
		}
	}
	if slices.Contains(o.systems, report.Etcd) {
		p, err := exec.LookPath("etcd")
		if err != nil {
			return bins, fmt.Errorf("%w: etcd: %v", errMissing, err)
		}
		bins.etcd = p
	}
	if slices.Contains(o.systems, report.Postgres) && !o.quick {
		d, err := postgres.FindBinDir(postgresRoot)
		if err != nil {
			return bins, fmt.Errorf("%w: %v", errMissing, err)
		}
		bins.postgresBin = d
	}
	return bins, nil
}

func aptInstall(ctx context.Context, o options, pkgs []string, log io.Writer) error {
	if !o.install {
		return fmt.Errorf("%w: %v (run without -install=false, or apt-get install them)", errMissing, pkgs)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: %v; installing them needs root: sudo apt-get install -y %v", errMissing, pkgs, pkgs)
	}
	fmt.Fprintf(log, "bench: installing %v with apt-get\n", pkgs)
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = log, log
		return cmd.Run()
	}
	if err := run("update", "-qq"); err != nil {
		return fmt.Errorf("apt-get update: %w", err)
	}
	if err := run(append([]string{"install", "-y", "-qq", "--no-install-recommends"}, pkgs...)...); err != nil {
		return fmt.Errorf("apt-get install %v: %w", pkgs, err)
	}
	return nil
}
