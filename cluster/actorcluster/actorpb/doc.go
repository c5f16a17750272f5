// Package actorpb holds the two messages nodes send each other's actors,
// Request and Reply (envelope.proto), and the code generated from it. What
// they mean and how they are served belongs to package actorcluster; see
// its DESIGN.md.
//
// Regenerate with `make generate` (buf, see buf.yaml at the repository
// root); `make proto` checks that the committed code is current and that no
// change breaks the encoding the other release speaks in a rolling upgrade.
package actorpb
