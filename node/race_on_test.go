//go:build race

package node_test

// raceEnabled: see skipUnderRace.
const raceEnabled = true
