// Command dbpilot-bench runs dbpilot's benchmarks against real local
// clusters (embedded etcd, real agents and PostgreSQL) and prints figures:
//
//	dbpilot-bench failover --runs 5   # RTO, switchover write gap, lost writes, split brain
//	dbpilot-bench agent --seconds 60  # RSS and CPU of one idle agent
//	dbpilot-bench controlplane        # events/s, API p99, server RSS for 1,000 simulated clusters
//	dbpilot-bench backup --scale 70   # full backup vs pg_basebackup, restore and PITR times
//	dbpilot-bench chaos --faults 50   # randomised fault campaign (make chaos)
//	dbpilot-bench alerts --faults 12  # alert detect/notify latency, false pages, scrape p99
//
// Results and the commands that produced them are kept in docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := &cobra.Command{Use: "dbpilot-bench", Short: "dbpilot benchmarks", SilenceUsage: true}
	root.AddCommand(newFailoverCmd(), newAgentCmd(), newControlPlaneCmd(), newBackupBenchCmd(), newChaosCmd(), newAlertsCmd())
	if err := root.ExecuteContext(ctx); err != nil {
		var code exitCode
		if errors.As(err, &code) {
			stop()
			os.Exit(int(code))
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
