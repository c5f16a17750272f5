// Package e2e runs real ration-node processes: the HTTP contract replayed
// against a process, kill -9 and restarts under load, graceful shutdown.
// The binary is built once per test run, with -race when the tests are.
package e2e
