package app

import (
	"fmt"
	"iter"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ration/ration/api/ledgerjson"
	"github.com/ration/ration/client"
)

func (a *App) balanceCommand() *cobra.Command {
	var (
		at    timeFlag
		stale bool
	)
	cmd := &cobra.Command{
		Use:   "balance USER [--at TIME] [--stale]",
		Short: "Show a user's balance and the grants it is made of",
		Long: `Balance prints USER's balance at --at (default: the server's now) and the
grants with credits left, in the order the next deduction would draw from
them. --stale lets any replica answer: cheaper, and it works while the
user's shard has no leader, but it may miss recent writes.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			user := args[0]
			var opts []client.ReadOption
			if stale {
				opts = append(opts, client.Stale())
			}
			return a.withClient(cmd.Context(), func(c *client.Client) error {
				b, err := c.Balance(cmd.Context(), user, at.value(a.Now()), opts...)
				if err != nil {
					return err
				}
				if a.g.output == outJSON {
					return writeJSON(a.Stdout, balanceJSON(b))
				}
				fmt.Fprintf(a.Stdout, "user %s at %s: balance %d\n", b.User, formatTime(b.At), b.Balance)
				if len(b.Grants) == 0 {
					return nil
				}
				tw := newTable(a.Stdout)
				row(tw, "ID", "REMAINING", "EXPIRES")
				for _, g := range b.Grants {
					row(tw, g.ID, g.Remaining, formatExpiry(g.ExpiresAt))
				}
				return tw.Flush()
			})
		},
	}
	cmd.Flags().Var(&at, "at", "the instant to read the balance at (default the server's now)")
	cmd.Flags().BoolVar(&stale, "stale", false, "allow a possibly stale answer from any replica")
	return cmd
}

func (a *App) eventsCommand() *cobra.Command {
	var (
		from, to timeFlag
		limit    int32
		stale    bool
	)
	cmd := &cobra.Command{
		Use:   "events USER [--from TIME] [--to TIME] [--limit N]",
		Short: "List a user's history",
		Long: `Events lists USER's history from --from (inclusive) to --to (exclusive), in
history order, paging through all of it: --limit is the page size, not a
cap on the output. Scheduled expirations within the range are listed too.

With --output json it prints one JSON object per line, as events arrive.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 0 || limit > 1000 {
				return usageError{fmt.Errorf("--limit must be in [0, 1000], got %d", limit)}
			}
			user := args[0]
			now := a.Now()
			q := client.EventsQuery{From: from.value(now), To: to.value(now), Limit: limit}
			var opts []client.ReadOption
			if stale {
				opts = append(opts, client.Stale())
			}
			return a.withClient(cmd.Context(), func(c *client.Client) error {
				return a.printEvents(c.AllEvents(cmd.Context(), user, q, opts...))
			})
		},
	}
	f := cmd.Flags()
	f.Var(&from, "from", "first instant, inclusive (default the beginning)")
	f.Var(&to, "to", "last instant, exclusive (default no end, which includes every scheduled expiration)")
	f.Int32Var(&limit, "limit", 0, "events fetched per page, up to 1000 (default the server's, 100)")
	f.BoolVar(&stale, "stale", false, "allow possibly stale pages from any replica")
	return cmd
}

func (a *App) printEvents(events iter.Seq2[client.Event, error]) error {
	if a.g.output == outJSON {
		for e, err := range events {
			if err != nil {
				return err
			}
			if err := writeJSONLine(a.Stdout, eventJSON(e)); err != nil {
				return err
			}
		}
		return nil
	}
	tw := newTable(a.Stdout)
	row(tw, "TIME", "KIND", "ID", "AMOUNT", "BALANCE", "DETAILS")
	n := 0
	for e, err := range events {
		if err != nil {
			// Show what was fetched before the failure.
			tw.Flush()
			return err
		}
		row(tw, formatTime(e.Timestamp), e.Kind, e.ID, e.Amount, e.BalanceAfter, eventDetails(e))
		// Flush now and then so a long history streams rather than
		// appearing all at the end (column widths may then shift).
		if n++; n%1000 == 0 {
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	return tw.Flush()
}

func eventDetails(e client.Event) string {
	switch e.Kind {
	case client.EventGrant:
		s := "expires " + formatExpiry(e.ExpiresAt)
		if e.Priority != 0 {
			s += fmt.Sprintf(", priority %d", e.Priority)
		}
		return s
	case client.EventDeduction:
		parts := make([]string, len(e.Allocations))
		for i, al := range e.Allocations {
			parts[i] = fmt.Sprintf("%s:%d", al.GrantID, al.Amount)
		}
		return "from " + strings.Join(parts, " ")
	case client.EventExpiration:
		return "forfeited"
	}
	return ""
}

// balanceJSON is b in the HTTP API's shape.
func balanceJSON(b client.BalanceResult) ledgerjson.Balance {
	out := ledgerjson.Balance{User: b.User, At: b.At, Balance: b.Balance, Grants: make([]ledgerjson.GrantBalance, len(b.Grants))}
	for i, g := range b.Grants {
		out.Grants[i] = ledgerjson.GrantBalance(g)
	}
	return out
}

// eventJSON is e in the HTTP API's shape.
func eventJSON(e client.Event) ledgerjson.Event {
	out := ledgerjson.Event{Kind: e.Kind.String(), ID: e.ID, Timestamp: e.Timestamp, Amount: e.Amount,
		ExpiresAt: e.ExpiresAt, Priority: e.Priority, BalanceAfter: e.BalanceAfter}
	for _, al := range e.Allocations {
		out.Allocations = append(out.Allocations, ledgerjson.Allocation(al))
	}
	return out
}
