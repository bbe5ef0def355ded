package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// ControlData is the part of pg_controldata's output the HA loop uses; see
// https://www.postgresql.org/docs/15/app-pgcontroldata.html.
type ControlData struct {
	// SystemIdentifier ("Database system identifier") is equal on a
	// primary and all its replicas.
	SystemIdentifier string
	// ClusterState ("Database cluster state"): "starting up", "shut down",
	// "shut down in recovery", "shutting down", "in crash recovery",
	// "in archive recovery" or "in production".
	ClusterState string
	// Timeline is "Latest checkpoint's TimeLineID".
	Timeline uint32
	// CheckpointLSN is "Latest checkpoint location".
	CheckpointLSN LSN
	// RedoLSN is "Latest checkpoint's REDO location".
	RedoLSN LSN
	// MinRecoveryEndLSN is "Minimum recovery ending location" (0/0 if none).
	MinRecoveryEndLSN LSN
	// MinRecoveryEndTimeline is "Min recovery ending loc's timeline".
	MinRecoveryEndTimeline uint32
	// Fields holds every "label: value" line of the output.
	Fields map[string]string
}

// ControlData runs pg_controldata on the data directory (as the OS user,
// C locale) and parses it with [ParseControlData]. It works whether or not
// the server is running.
func (p *Instance) ControlData(ctx context.Context) (ControlData, error) {
	out, err := p.runTool(ctx, "pg_controldata", []string{"-D", p.cfg.DataDir})
	if err != nil {
		return ControlData{}, fmt.Errorf("control data: %w", err)
	}
	cd, err := ParseControlData(out)
	if err != nil {
		return ControlData{}, fmt.Errorf("control data: %w", err)
	}
	return cd, nil
}

// ParseControlData parses pg_controldata output produced in the C locale.
// It returns an error if a field ControlData needs is missing or malformed.
func ParseControlData(out string) (ControlData, error) {
	cd := ControlData{Fields: map[string]string{}}
	for _, line := range strings.Split(out, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		cd.Fields[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	get := func(k string) (string, error) {
		v, ok := cd.Fields[k]
		if !ok {
			return "", fmt.Errorf("pg_controldata output has no %q", k)
		}
		return v, nil
	}
	lsn := func(k string, dst *LSN) error {
		v, err := get(k)
		if err != nil {
			return err
		}
		if *dst, err = ParseLSN(v); err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		return nil
	}
	tli := func(k string, dst *uint32) error {
		v, err := get(k)
		if err != nil {
			return err
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("%s: %w", k, err)
		}
		*dst = uint32(n)
		return nil
	}
	var err error
	if cd.SystemIdentifier, err = get("Database system identifier"); err != nil {
		return ControlData{}, err
	}
	if cd.ClusterState, err = get("Database cluster state"); err != nil {
		return ControlData{}, err
	}
	for _, e := range []error{
		tli("Latest checkpoint's TimeLineID", &cd.Timeline),
		lsn("Latest checkpoint location", &cd.CheckpointLSN),
		lsn("Latest checkpoint's REDO location", &cd.RedoLSN),
		lsn("Minimum recovery ending location", &cd.MinRecoveryEndLSN),
		tli("Min recovery ending loc's timeline", &cd.MinRecoveryEndTimeline),
	} {
		if e != nil {
			return ControlData{}, e
		}
	}
	return cd, nil
}
