//go:build !linux

package handlers

import "os/exec"

// hostIsolation is what the host offers; outside Linux only process groups.
type hostIsolation struct{}

// runBox is the per-run container; outside Linux it holds nothing.
type runBox struct{}

// detectHost returns the host's isolation.
func detectHost() hostIsolation { return hostIsolation{} }

// mode returns the isolation in use.
func (hostIsolation) mode() Isolation { return IsolationProcessGroup }

// reason says why this mode was chosen.
func (hostIsolation) why() string { return "cgroups need Linux" }

// prepare does nothing outside Linux.
func (hostIsolation) prepare(*exec.Cmd, Phase, *osUser) (*runBox, error) { return &runBox{}, nil }

// kill does nothing outside Linux.
func (*runBox) kill() error { return nil }

// release does nothing outside Linux.
func (*runBox) release() error { return nil }
