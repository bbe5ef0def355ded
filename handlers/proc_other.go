//go:build !unix

package handlers

import "os/exec"

// setProcessGroup keeps exec's default cancellation (kill the handler
// process only): process groups are a Unix notion.
func setProcessGroup(*exec.Cmd) {}
