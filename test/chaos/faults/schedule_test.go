package faults

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestScheduleIsAPureFunction(t *testing.T) {
	a := Schedule(7, 5, All, 10*time.Minute)
	b := Schedule(7, 5, All, 10*time.Minute)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same arguments, different schedules")
	}
	for _, other := range [][]Step{
		Schedule(8, 5, All, 10*time.Minute),
		Schedule(7, 3, All, 10*time.Minute),
		Schedule(7, 5, All[:5], 10*time.Minute),
	} {
		if reflect.DeepEqual(a, other) {
			t.Fatal("different arguments, same schedule")
		}
	}
	// The duration only cuts the tail: a shorter run is the start of the
	// longer one, but for its final step.
	short := Schedule(7, 5, All, 2*time.Minute)
	if !short[len(short)-1].Final || !reflect.DeepEqual(short[:len(short)-1], a[:len(short)-1]) {
		t.Fatal("a shorter run is not the start of the longer one")
	}
}

func TestScheduleSpacingHoldsAndQuiet(t *testing.T) {
	for seed := int64(1); seed <= 20; seed++ {
		for _, nodes := range []int{3, 5} {
			kinds, _, err := ParseKinds("all", nodes)
			if err != nil {
				t.Fatal(err)
			}
			dur := 5 * time.Minute
			steps := Schedule(seed, nodes, kinds, dur)
			if len(steps) < int(dur/MaxGap) {
				t.Fatalf("seed %d: only %d steps in %v", seed, len(steps), dur)
			}
			if steps[0].Kind != Quiet || steps[0].At != 0 {
				t.Fatalf("seed %d: first step %v, want quiet at 0", seed, steps[0])
			}
			quiet := 0
			for i, st := range steps {
				if st.Final && (i != len(steps)-1 || st.Kind == Quiet) {
					t.Fatalf("seed %d step %d of %d: final %v", seed, i, len(steps), st)
				}
				if st.Final {
					if st.At+st.Gap != dur || st.Hold != st.Gap || st.Gap < MinFinal || st.Gap > MaxGap {
						t.Fatalf("seed %d: final step %v, gap %v, run %v", seed, st, st.Gap, dur)
					}
					continue
				}
				if st.Gap < MinGap || st.Gap > MaxGap {
					t.Fatalf("seed %d step %d: gap %v", seed, i, st.Gap)
				}
				if i > 0 && st.At != steps[i-1].At+steps[i-1].Gap {
					t.Fatalf("seed %d step %d: starts at %v, previous ends at %v", seed, i, st.At, steps[i-1].At+steps[i-1].Gap)
				}
				if st.At+st.Gap > dur {
					t.Fatalf("seed %d step %d ends after the run", seed, i)
				}
				if st.Kind == Quiet {
					quiet++
					continue
				}
				// Healed before the next fault, with time to settle.
				if st.Hold <= 0 || st.Hold > st.Gap-Settle {
					t.Fatalf("seed %d step %d (%s): hold %v in gap %v", seed, i, st.Kind, st.Hold, st.Gap)
				}
				if st.Node < 0 || st.Node >= nodes {
					t.Fatalf("seed %d step %d: node %d of %d", seed, i, st.Node, nodes)
				}
				switch st.Kind {
				case PauseLeader:
					if st.Hold < 2*time.Second {
						t.Fatalf("pause of %v", st.Hold)
					}
				case PartitionMajority:
					if len(st.Minority) != nodes/2 {
						t.Fatalf("minority %v of %d nodes", st.Minority, nodes)
					}
				case PartitionRing:
					if nodes < RingMinNodes {
						t.Fatalf("ring partition with %d nodes", nodes)
					}
				case ClockJump:
					if st.Offset != time.Hour && st.Offset != -time.Hour {
						t.Fatalf("clock jump of %v", st.Offset)
					}
				case Loss:
					if st.Loss < 0.1 || st.Loss > 0.4 {
						t.Fatalf("loss %v", st.Loss)
					}
				}
			}
			// The rest of the run holds a final fault when it is long
			// enough for one.
			if last := steps[len(steps)-1]; !last.Final && dur-(last.At+last.Gap) >= MinFinal {
				t.Fatalf("seed %d: no final fault in the %v left", seed, dur-(last.At+last.Gap))
			}
			if quiet < 2 {
				t.Fatalf("seed %d: %d quiet slots in %v", seed, quiet, dur)
			}
		}
	}
}

// Over a long run every kind shows up, for every seed.
func TestScheduleCoversEveryKind(t *testing.T) {
	for seed := int64(1); seed <= 50; seed++ {
		seen := map[Kind]int{}
		for _, st := range Schedule(seed, 5, All, 10*time.Minute) {
			seen[st.Kind]++
		}
		for _, k := range All {
			if seen[k] == 0 {
				t.Fatalf("seed %d: no %s in 10 minutes", seed, k)
			}
		}
	}
	// A 150 s run deals one round of the 3-node deck, nearly always in
	// full.
	full := 0
	for seed := int64(1); seed <= 50; seed++ {
		kinds, _, _ := ParseKinds("all", 3)
		seen := map[Kind]bool{}
		for _, st := range Schedule(seed, 3, kinds, 150*time.Second) {
			seen[st.Kind] = true
		}
		if len(seen) == len(kinds)+1 { // + quiet
			full++
		}
	}
	if full < 25 {
		t.Fatalf("only %d of 50 150s runs saw every kind", full)
	}
}

func TestScheduleOnlyDealsChosenKinds(t *testing.T) {
	kinds := []Kind{KillLeader, Loss}
	for _, st := range Schedule(3, 3, kinds, 3*time.Minute) {
		if st.Kind != Quiet && !slices.Contains(kinds, st.Kind) {
			t.Fatalf("step %v not of %v", st, kinds)
		}
	}
	for _, st := range Schedule(3, 3, nil, time.Minute) {
		if st.Kind != Quiet {
			t.Fatalf("fault %v with no kinds", st)
		}
	}
	if got := Schedule(3, 3, All, 4*time.Second); len(got) != 0 {
		t.Fatalf("a run shorter than a slot has steps: %v", got)
	}
}

func TestParseKinds(t *testing.T) {
	kinds, skipped, err := ParseKinds("all", 3)
	if err != nil || slices.Contains(kinds, PartitionRing) || len(skipped) != 1 || len(kinds) != len(All)-1 {
		t.Fatalf("all with 3 nodes: %v %v %v", kinds, skipped, err)
	}
	kinds, _, err = ParseKinds("all", 5)
	if err != nil || !slices.Equal(kinds, All) {
		t.Fatalf("all with 5 nodes: %v %v", kinds, err)
	}
	kinds, _, err = ParseKinds(" kill-leader, loss,kill-leader ", 3)
	if err != nil || !slices.Equal(kinds, []Kind{KillLeader, Loss}) {
		t.Fatalf("list: %v %v", kinds, err)
	}
	if _, _, err := ParseKinds("kill-leader,meteor", 3); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("unknown kind: %v", err)
	}
}

func TestRingEveryNodeSeesADifferentMajority(t *testing.T) {
	for _, n := range []int{5, 6, 7, 9} {
		conn := RingConnected(n)
		var views [][]int
		for a := range n {
			var view []int
			for b := range n {
				if conn(a, b) != conn(b, a) {
					t.Fatalf("n=%d: not symmetric for %d,%d", n, a, b)
				}
				if conn(a, b) {
					view = append(view, b)
				}
			}
			if !conn(a, a) || len(view) <= n/2 || len(view) == n {
				t.Fatalf("n=%d: node %d sees %v: want a majority, not everyone", n, a, view)
			}
			for _, v := range views {
				if slices.Equal(v, view) {
					t.Fatalf("n=%d: two nodes share the view %v", n, view)
				}
			}
			views = append(views, view)
		}
	}
	// With 5 nodes: exactly the two neighbours.
	conn := RingConnected(5)
	if !conn(0, 1) || !conn(0, 4) || conn(0, 2) || conn(0, 3) {
		t.Fatal("5-node ring is not neighbours-only")
	}
}
