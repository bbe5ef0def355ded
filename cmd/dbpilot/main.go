// Command dbpilot is the operator CLI of the dbpilot control plane:
// contexts and login, clusters (create, inspect, scale, switch over, fail
// over, restart, delete), nodes, backups, the live event stream, the
// Service Catalog, the fleet and API tokens (docs/cli.md).
//
// Exit codes: 0 success, 1 operation failed, 2 usage error, 3 not found,
// 4 unauthorised.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], osDeps())
	stop()
	os.Exit(code)
}
