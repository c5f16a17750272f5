// Command rationctl is the command-line client of a Ration cluster.
//
//	rationctl [--addr host:port,...] [--output table|json] [--timeout D] [--no-routing] COMMAND
//
//	grant USER --id ID --amount N [--at T] [--expires T] [--priority N]
//	deduct USER --id ID --amount N [--at T]        prints the grants that paid
//	balance USER [--at T] [--stale]                balance and its grants
//	events USER [--from T] [--to T] [--limit N]    the whole history, paged
//	status                                         nodes and shards
//	import FILE|- [--format csv|jsonl] [--batch-size N] [--concurrency N]
//	bench [--clients N] [--users N] [--duration D | --ops N] [--mix ...]
//	      [--protocol grpc|http --http-addr A] [--rate N]
//
// --addr defaults to $RATION_ADDR, then 127.0.0.1:9090. Calls go straight
// to the leader of their user's shard (the client's routing); --no-routing
// sends them to --addr, which forwards them. Times T are Unix
// milliseconds, RFC 3339, "now" or a signed offset such as -2h or +30m.
// Exit codes: 0 success, 1 failure, 2 usage error. See `rationctl --help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/ration/ration/cmd/rationctl/internal/app"
)

func main() {
	// Interrupting stops bench and import cleanly, with their reports.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := app.Execute(ctx)
	stop()
	os.Exit(code)
}
