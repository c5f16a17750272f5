//go:build race

package actorcluster

// raceEnabled: see skipUnderRace.
const raceEnabled = true
