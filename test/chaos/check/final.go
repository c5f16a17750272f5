package check

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/ration/ration/api/ledgerjson"
	"github.com/ration/ration/client"
)

// Final is the cluster's state after healing, as the checker reads it.
type Final struct {
	// Events is every user's complete history read linearizably after
	// healing (client.AllEvents), keyed by user. Users the workload touched
	// but absent here are an anomaly; a user read with no events is present
	// with an empty list.
	Events map[string][]client.Event
}

// finalJSON is Final's file format (final.json): every user's events in
// the HTTP API's shape (api/ledgerjson), the kind as a word.
type finalJSON struct {
	Users map[string][]ledgerjson.Event `json:"users"`
}

// MarshalJSON writes {"users": {"<user>": [{"kind": "grant", ...}]}}.
func (f Final) MarshalJSON() ([]byte, error) {
	out := finalJSON{Users: make(map[string][]ledgerjson.Event, len(f.Events))}
	for user, evs := range f.Events {
		list := make([]ledgerjson.Event, len(evs))
		for i, e := range evs {
			j := ledgerjson.Event{Kind: e.Kind.String(), ID: e.ID, Timestamp: e.Timestamp, Amount: e.Amount,
				ExpiresAt: e.ExpiresAt, Priority: e.Priority, BalanceAfter: e.BalanceAfter}
			for _, a := range e.Allocations {
				j.Allocations = append(j.Allocations, ledgerjson.Allocation(a))
			}
			list[i] = j
		}
		out.Users[user] = list
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (f *Final) UnmarshalJSON(data []byte) error {
	var in finalJSON
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	f.Events = make(map[string][]client.Event, len(in.Users))
	for user, list := range in.Users {
		evs := make([]client.Event, len(list))
		for i, j := range list {
			e := client.Event{Kind: kindOf(j.Kind), ID: j.ID, Timestamp: j.Timestamp, Amount: j.Amount,
				ExpiresAt: j.ExpiresAt, Priority: j.Priority, BalanceAfter: j.BalanceAfter}
			if e.Kind == client.EventUnknown {
				return fmt.Errorf("check: final: user %s event %d: unknown kind %q", user, i, j.Kind)
			}
			for _, a := range j.Allocations {
				e.Allocations = append(e.Allocations, client.Allocation(a))
			}
			evs[i] = e
		}
		f.Events[user] = evs
	}
	return nil
}

func kindOf(s string) client.EventKind {
	for _, k := range []client.EventKind{client.EventGrant, client.EventDeduction, client.EventExpiration} {
		if k.String() == s {
			return k
		}
	}
	return client.EventUnknown
}

// WriteFile saves f as JSON (the run directory's final.json).
func (f Final) WriteFile(path string) error {
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("check: final: %w", err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("check: final: %w", err)
	}
	return nil
}

// ReadFinal loads a final.json.
func ReadFinal(path string) (Final, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Final{}, fmt.Errorf("check: final: %w", err)
	}
	var f Final
	if err := json.Unmarshal(b, &f); err != nil {
		return Final{}, fmt.Errorf("check: final %s: %w", path, err)
	}
	return f, nil
}

// FetchFinal reads every user's complete history, linearizably, page by
// page. Every user is in the result, with an empty list if it has no
// events. It stops at the first error: a partial final state would be
// reported as lost writes.
func FetchFinal(ctx context.Context, c *client.Client, users []string) (Final, error) {
	f := Final{Events: make(map[string][]client.Event, len(users))}
	for _, user := range users {
		evs := []client.Event{}
		for e, err := range c.AllEvents(ctx, user, client.EventsQuery{Limit: 1000}) {
			if err != nil {
				return f, fmt.Errorf("check: final events of %s: %w", user, err)
			}
			evs = append(evs, e)
		}
		f.Events[user] = evs
	}
	return f, nil
}
