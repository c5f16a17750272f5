package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/ration/ration/client"
)

func Example() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Options{
		Endpoints: []string{"10.0.0.1:9090", "10.0.0.2:9090", "10.0.0.3:9090"},
		Timeout:   2 * time.Second,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Make the id once per logical operation: retries, the client's own
	// and yours, must reuse it.
	id := client.NewID()
	now := client.Millis(time.Now())
	res, err := c.Deduct(ctx, "job-owner-42", client.Deduction{ID: id, Amount: 8, Timestamp: now})
	var short *client.InsufficientCreditsError
	switch {
	case errors.As(err, &short):
		fmt.Printf("refused: %d credits short\n", short.Shortfall)
	case errors.Is(err, client.ErrOutcomeUnknown), errors.Is(err, client.ErrUnavailable):
		// Nothing is lost: try again later with the same id.
		fmt.Println("retry later with id", id)
	case err != nil:
		log.Fatal(err)
	default:
		for _, a := range res.Allocations {
			fmt.Printf("%s paid %d\n", a.GrantID, a.Amount)
		}
	}

	for e, err := range c.AllEvents(ctx, "job-owner-42", client.EventsQuery{From: client.Int64(now - 3_600_000)}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(e.Kind, e.ID, e.Amount, e.BalanceAfter)
	}
}
