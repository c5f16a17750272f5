package app

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/ration/ration/api/ledgerjson"
	"github.com/ration/ration/client"
)

func (a *App) grantCommand() *cobra.Command {
	var (
		id       string
		amount   int64
		at       timeFlag
		expires  timeFlag
		priority int32
	)
	cmd := &cobra.Command{
		Use:   "grant USER --id ID --amount N [--at TIME] [--expires TIME] [--priority N]",
		Short: "Grant credits to a user",
		Long: `Grant adds credits to USER, usable from --at (default now) until --expires
(default never). Deductions draw from lower --priority values first.

Re-running the command with the same --id and the same absolute times
(Unix ms or RFC 3339) is safe: the grant is applied once and the repeat
reports a duplicate. "now" and relative times resolve anew on each run, so
a repeat of such a command conflicts; the output shows the resolved time
to repeat with.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "id", "amount"); err != nil {
				return err
			}
			user := args[0]
			now := a.Now()
			g := client.Grant{ID: id, Amount: amount, Timestamp: now.UnixMilli(), ExpiresAt: expires.value(now), Priority: priority}
			if t := at.value(now); t != nil {
				g.Timestamp = *t
			}
			return a.withClient(cmd.Context(), func(c *client.Client) error {
				res, err := c.Grant(cmd.Context(), user, g)
				if err != nil {
					return writeErr(err, at.relative() || (expires.set && expires.relative()))
				}
				if a.g.output == outJSON {
					return writeJSON(a.Stdout, jsonGrantResult{User: user, ID: id, Timestamp: g.Timestamp, ExpiresAt: g.ExpiresAt, Duplicate: res.Duplicate, Version: res.Version})
				}
				printWrite(a.Stdout, "grant", id, user, g.Timestamp, res.Duplicate, res.Version)
				return nil
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "grant id, the idempotency key (required)")
	f.Int64Var(&amount, "amount", 0, "credits to grant (required)")
	f.Var(&at, "at", "when the credits become usable (default now)")
	f.Var(&expires, "expires", "when the credits expire, exclusive (default never); relative times are from now")
	f.Int32Var(&priority, "priority", 0, "draw priority: lower is drawn first")
	return cmd
}

func (a *App) deductCommand() *cobra.Command {
	var (
		id     string
		amount int64
		at     timeFlag
	)
	cmd := &cobra.Command{
		Use:   "deduct USER --id ID --amount N [--at TIME]",
		Short: "Deduct credits from a user and show which grants paid",
		Long: `Deduct consumes credits of USER at --at (default now), all or nothing, and
prints the grants that paid. A deduction that cannot be met fails and says
which deduction of the history would be short, and by how much.

Re-running the command with the same --id and the same absolute --at is
safe: the deduction is applied once. The output shows the resolved time.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireFlags(cmd, "id", "amount"); err != nil {
				return err
			}
			user := args[0]
			now := a.Now()
			d := client.Deduction{ID: id, Amount: amount, Timestamp: now.UnixMilli()}
			if t := at.value(now); t != nil {
				d.Timestamp = *t
			}
			return a.withClient(cmd.Context(), func(c *client.Client) error {
				res, err := c.Deduct(cmd.Context(), user, d)
				if err != nil {
					return writeErr(err, at.relative())
				}
				if a.g.output == outJSON {
					out := jsonDeductResult{User: user, ID: id, Timestamp: d.Timestamp, Duplicate: res.Duplicate, Version: res.Version, Allocations: []ledgerjson.Allocation{}}
					for _, al := range res.Allocations {
						out.Allocations = append(out.Allocations, ledgerjson.Allocation(al))
					}
					return writeJSON(a.Stdout, out)
				}
				printWrite(a.Stdout, "deduction", id, user, d.Timestamp, res.Duplicate, res.Version)
				tw := newTable(a.Stdout)
				row(tw, "GRANT", "AMOUNT")
				for _, al := range res.Allocations {
					row(tw, al.GrantID, al.Amount)
				}
				return tw.Flush()
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "deduction id, the idempotency key (required)")
	f.Int64Var(&amount, "amount", 0, "credits to deduct (required)")
	f.Var(&at, "at", "when the credits are consumed (default now)")
	return cmd
}

// requireFlags fails with a usage error unless the flags were given.
// (cobra's MarkFlagRequired reports a plain error, which would exit 1.)
func requireFlags(cmd *cobra.Command, names ...string) error {
	var missing []string
	for _, n := range names {
		if !cmd.Flags().Changed(n) {
			missing = append(missing, "--"+n)
		}
	}
	if len(missing) > 0 {
		return usageError{fmt.Errorf("required flag(s) %s not set", strings.Join(missing, ", "))}
	}
	return nil
}

func printWrite(w io.Writer, kind, id, user string, ts int64, duplicate bool, version uint64) {
	if duplicate {
		fmt.Fprintf(w, "%s %q for %s at %s (%d) was already applied (duplicate); ledger version %d\n",
			kind, id, user, formatTime(ts), ts, version)
		return
	}
	fmt.Fprintf(w, "applied %s %q for %s at %s (%d); ledger version %d\n", kind, id, user, formatTime(ts), ts, version)
}

// writeErr adds advice to the errors of a write where the client library's
// message leaves the next step implicit. relative says whether a time of
// the command was "now" or an offset, the likely cause of a conflict on a
// repeated command.
func writeErr(err error, relative bool) error {
	var ins *client.InsufficientCreditsError
	if errors.As(err, &ins) {
		return fmt.Errorf("insufficient credits: deduction %q at %s would be short by %d",
			ins.DeductionID, formatTime(ins.At), ins.Shortfall)
	}
	if errors.Is(err, client.ErrConflict) && relative {
		return fmt.Errorf("%w (\"now\" and relative times differ on each run: to repeat a write, give the times it was sent with, in Unix ms)", err)
	}
	if errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrOutcomeUnknown) {
		return fmt.Errorf("%w (re-sending with the same --id and times is safe)", err)
	}
	return err
}
