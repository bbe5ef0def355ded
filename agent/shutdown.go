package agent

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/dbpilot/dbpilot/agent/ha"
	"github.com/dbpilot/dbpilot/agent/postgres"
	"github.com/dbpilot/dbpilot/handlers"
)

// onChangeStopBound is how long shutdown waits, once PostgreSQL is stopped,
// for an onChange run in progress before killing it.
const onChangeStopBound = 2 * time.Second

// shutdown is the SIGTERM path: preStop → hand over leadership if a replica
// can take it → stop PostgreSQL → stop the onChange queue (a run still in
// progress after onChangeStopBound is killed) → postStop → close the
// session. If
// PostgreSQL will not stop, the leader key is kept until the lease runs out
// rather than released under a database that may still accept writes.
func (a *Agent) shutdown(ctx context.Context) error {
	a.log.Info("shutting down")
	ctx, cancel := context.WithTimeout(ctx, 2*a.cfg.TTL+30*time.Second)
	defer cancel()
	// The HA loop has stopped, and with it the only renewal of the HA
	// lease: keep renewing (bounded while we hold the key) so that preStop
	// and the hand-over finish under a proven lease, as a switchover,
	// rather than letting the key lapse into a failover.
	stopRenewing := a.keepLeaseAlive(ctx, "shutdown")
	defer stopRenewing()
	if res := a.hooks.Run(ctx, handlers.PreStop, a.env("preStop", "agent stopping")); !res.OK() {
		a.handlerResult(res)
	}
	a.pgMu.Lock()
	defer a.pgMu.Unlock()
	if a.isLeader.Load() && !a.fenced.Load() {
		obs := a.observe(ctx)
		v := a.view(obs)
		v.ShuttingDown = true
		if act := ha.Decide(v); act.Kind == ha.Handover {
			if err := a.handover(ctx, act.Target, obs); err != nil {
				a.log.Error("graceful hand-over failed", zap.Error(err))
			}
		} else {
			a.log.Info("no replica to hand over to", zap.String("reason", act.Reason))
		}
	}
	stopErr := a.pg.Stop(ctx, postgres.StopFast)
	stopRenewing() // the database is stopped (or will not stop): nothing left to prove
	if stopErr != nil {
		a.log.Error("PostgreSQL did not stop; leader key not released", zap.Error(stopErr))
	}
	// No onChange run may hold the exit once the database is down.
	a.hooks.StopOnChangeWithin(onChangeStopBound)
	if res := a.hooks.Run(ctx, handlers.PostStop, a.env("postStop", "database stopped")); !res.OK() {
		a.handlerResult(res)
	}
	if stopErr == nil {
		a.publishStoppedSummary(ctx)
	}
	fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
	_ = a.rep.Flush(fctx)
	fcancel()
	if stopErr != nil && a.isLeader.Load() {
		return stopErr
	}
	if err := a.dcs.Close(ctx); err != nil {
		a.log.Warn("closing the etcd session", zap.Error(err))
	}
	a.log.Info("stopped")
	return stopErr
}
