package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ration/ration/test/chaos/nodes"
)

// actorNote tells how often the nodes activated and passivated user
// actors, from their metrics at the end of the run (counted since each
// node's last start): evidence that actors came and went during the
// faults, which -idle-passivation makes happen to every user that pauses.
// Correctness must never rest on an actor staying put (actors/DESIGN.md).
func actorNote(ctx context.Context, c *nodes.Cluster) string {
	var act, pass float64
	read := 0
	for i := range c.Size() {
		m, err := scrape(ctx, c.HTTPBase(i)+"/metrics", "ration_actor_activations_total", "ration_actor_passivations_total")
		if err != nil {
			continue
		}
		read++
		act += m["ration_actor_activations_total"]
		pass += m["ration_actor_passivations_total"]
	}
	return fmt.Sprintf("user actors, counted by %d of %d nodes since their last start: %.0f activations, %.0f passivations after being idle",
		read, c.Size(), act, pass)
}

// scrape reads the named unlabelled samples of a Prometheus text page.
func scrape(ctx context.Context, url string, names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		for _, n := range names {
			if ok && name == n {
				if v, err := strconv.ParseFloat(value, 64); err == nil {
					out[n] = v
				}
			}
		}
	}
	return out, sc.Err()
}
