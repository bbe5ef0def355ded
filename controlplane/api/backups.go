package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/dbpilot/dbpilot/controlplane"
	"github.com/dbpilot/dbpilot/controlplane/store"
	"github.com/dbpilot/dbpilot/infra"
	"github.com/dbpilot/dbpilot/proto"
)

func backupJSON(c store.Cluster, b store.Backup) proto.Backup {
	return proto.Backup{ID: b.ID, Cluster: c.Name, Node: b.Node, Job: b.Job, Method: b.Method, State: b.Status, RequestID: b.RequestID,
		StartedAt: ts(b.StartedAt), FinishedAt: ts(b.FinishedAt), SizeBytes: b.SizeBytes, Checksum: b.Checksum, StartLSN: b.StartLSN,
		StopLSN: b.StopLSN, Timeline: b.Timeline, Repository: b.Repository, RepositoryPath: b.Path, Error: b.Error,
		VerifiedAt: ts(b.VerifiedAt), VerifyError: b.VerifyError}
}

func (a *API) listBackups(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleViewer)
	if err != nil {
		return err
	}
	pg, err := pageOf(r)
	if err != nil {
		return err
	}
	bs, err := a.d.Store.ListBackups(r.Context(), c.ID, pg)
	if err != nil {
		return err
	}
	writePage(w, pg, bs, func(b store.Backup) proto.Backup { return backupJSON(c, b) }, func(b store.Backup) string { return b.ID })
	return nil
}

// runBackup starts a backup operation: the agents take the request
// through etcd (docs/keyspace.md).
func (a *API) runBackup(w http.ResponseWriter, r *http.Request, p *principal) error {
	c, err := a.cluster(r, p, RoleOperator)
	if err != nil {
		return err
	}
	var req proto.BackupRunRequest
	if r.ContentLength != 0 {
		if err := decode(r, &req); err != nil {
			return err
		}
	}
	tpl, ok := a.template(r.Context(), c.Namespace, c.Template)
	if !ok || tpl.Backup == nil || len(tpl.Backup.Jobs) == 0 {
		return &proto.APIError{Status: 409, Code: "failed_precondition",
			Message: "cluster " + c.Name + ": its template " + c.Template + " has no backup policy (backup.jobs)"}
	}
	if req.Job != "" {
		found := false
		for _, j := range tpl.Backup.Jobs {
			found = found || (j.Name == req.Job && j.Method != "verify")
		}
		if !found {
			return badRequest("job", "template %s has no backup job %q", tpl.Name, req.Job)
		}
	}
	return a.startOperation(w, r, c, controlplane.KindBackup, "", controlplane.OpParams{Job: req.Job})
}

// restore creates a new cluster (same template, plan, replicas and
// project as the source) whose first primary bootstraps from one of the
// source's backups, replaying its archived WAL to target_time when given.
func (a *API) restore(w http.ResponseWriter, r *http.Request, p *principal) error {
	src, req, err := clusterRequest[proto.RestoreRequest](a, r, p, RoleOperator)
	if err != nil {
		return err
	}
	if err := checkName("target", req.Target); err != nil {
		return err
	}
	if req.TargetTime != nil && req.TargetTime.After(time.Now().Add(time.Second)) {
		return badRequest("target_time", "must not be in the future (got %s)", req.TargetTime.UTC().Format(time.RFC3339))
	}
	var chosen store.Backup
	if req.BackupID != "" {
		b, err := a.d.Store.GetBackup(r.Context(), src.ID, req.BackupID)
		if err != nil || b.Status != store.BackupSucceeded || b.Method != "physical" {
			return badRequest("backup_id", "cluster %s has no completed physical backup %q", src.Name, req.BackupID)
		}
		if req.TargetTime != nil && req.TargetTime.Before(b.FinishedAt) {
			return badRequest("target_time", "must be after the end of backup %s (%s)", b.ID, b.FinishedAt.Format(time.RFC3339))
		}
		chosen = b
	} else {
		pg := store.Page{Limit: 1000}
		for chosen.ID == "" {
			bs, err := a.d.Store.ListBackups(r.Context(), src.ID, pg)
			if err != nil {
				return err
			}
			for _, b := range bs {
				if b.Status == store.BackupSucceeded && b.Method == "physical" && (req.TargetTime == nil || !b.FinishedAt.After(*req.TargetTime)) {
					chosen = b
					break
				}
			}
			if len(bs) < pg.Limit {
				break
			}
			pg.After = bs[len(bs)-1].ID
		}
		if chosen.ID == "" {
			msg := "cluster " + src.Name + " has no completed physical backup"
			if req.TargetTime != nil {
				msg += " finished before " + req.TargetTime.UTC().Format(time.RFC3339)
			}
			return &proto.APIError{Status: 409, Code: "failed_precondition", Message: msg + "; run `dbpilot backup run " + src.Name + "` first"}
		}
	}
	now := time.Now().UTC()
	c := store.Cluster{ID: newID("c"), Namespace: src.Namespace, Project: src.Project, Name: req.Target, Engine: src.Engine, Version: src.Version,
		Template: src.Template, Plan: src.Plan, Provider: src.Provider, Replicas: src.Replicas, SynchronousMode: src.SynchronousMode,
		Phase: store.PhasePending, IngestKeyHash: "hmac", CreatedAt: now, UpdatedAt: now}
	params := controlplane.OpParams{Restore: &infra.RestoreSource{ClusterID: src.ID, Cluster: src.Namespace + "/" + src.Project + "/" + src.Name,
		BackupID: chosen.ID, TargetTime: req.TargetTime}}
	op := store.Operation{ID: newID("op"), Namespace: src.Namespace, ClusterID: c.ID, Kind: controlplane.KindRestore, State: store.OpPending,
		Params: mustParams(params), CreatedAt: now, UpdatedAt: now}
	if err := a.d.Store.CreateCluster(r.Context(), c, op); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return &proto.APIError{Status: 409, Code: "already_exists", Field: "target",
				Message: "target: cluster " + src.Project + "/" + req.Target + " already exists; restore into a new name, or delete it first"}
		}
		return err
	}
	a.publishOperation(r.Context(), op)
	w.Header().Set("Location", "/v1/namespaces/"+src.Namespace+"/operations/"+op.ID)
	writeJSON(w, 202, operationJSON(op))
	return nil
}
