//go:build !unix

package handlers

import "os/exec"

// setProcessGroup does nothing: process groups and credentials are a Unix
// notion.
func setProcessGroup(*exec.Cmd, *osUser) {}

// killGroup does nothing outside Unix.
func killGroup(int) error { return nil }
