// Package api holds the definition of Ration's public gRPC API, in
// ration/v1/*.proto, generated into the rationv1 package by `make generate`
// (buf, see buf.yaml at the repository root). See DESIGN.md.
package api
