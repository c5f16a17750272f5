// Package rationv1 is the Go client and server code for Ration's public
// gRPC API, package ration.v1: the Ledger service (grants, deductions,
// balances, history, batches), the Admin service (cluster status) and the
// Routing service (which node leads which shard, for clients that route).
//
// Everything except this file and route.go is generated from api/ration/v1/ledger.proto
// by `make generate`; edit the .proto, not the .pb.go files. The
// .proto comments, reproduced on the generated types, are the API reference;
// api/DESIGN.md gives the versioning rules and the error model.
package rationv1
