package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/dbpilot/dbpilot/cmd/dbpilot/internal/client"
)

// Exit codes.
const (
	exitOK           = 0
	exitFailed       = 1
	exitUsage        = 2
	exitNotFound     = 3
	exitUnauthorised = 4
)

// exitError carries an exit code chosen by the command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// failed is an operation that did not succeed (exit 1).
func failed(format string, args ...any) error {
	return &exitError{code: exitFailed, err: fmt.Errorf(format, args...)}
}

// usageError is a mistake in how the command was called (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// classified reports whether err already has an exit code.
func classified(err error) bool {
	var ee *exitError
	var ue *usageError
	var ae *client.Error
	return errors.As(err, &ee) || errors.As(err, &ue) || errors.As(err, &ae)
}

// exitCode maps an error to the process exit code. Errors that were not
// produced by a command's RunE (cobra's flag and argument checks, unknown
// commands) are usage errors.
func exitCode(err error) int {
	var ee *exitError
	var ue *usageError
	var ae *client.Error
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ae):
		switch {
		case ae.UnknownEndpoint():
			return exitFailed
		case ae.Status == http.StatusUnauthorized || ae.Status == http.StatusForbidden:
			return exitUnauthorised
		case ae.Status == http.StatusNotFound:
			return exitNotFound
		case ae.Status == http.StatusBadRequest || ae.Status == http.StatusUnsupportedMediaType:
			return exitUsage
		}
		return exitFailed
	}
	return exitUsage
}

// printError writes err for a human: the server's message, the field, and
// a hint for authentication problems.
func printError(w io.Writer, err error) {
	var ae *client.Error
	if errors.As(err, &ae) {
		fmt.Fprintln(w, "error:", escapeMessage(ae.Error()))
		if ae.Field != "" {
			fmt.Fprintln(w, "  field:", escapeControl(ae.Field))
		}
		switch ae.Status {
		case http.StatusUnauthorized:
			fmt.Fprintln(w, "  hint: the server refused the token; run `dbpilot login`, or check DBPILOT_TOKEN / --token")
		case http.StatusForbidden:
			fmt.Fprintln(w, "  hint: the token lacks the role for this action; ask an admin for a token with it")
		}
		return
	}
	if errors.Is(err, context.DeadlineExceeded) {
		fmt.Fprintln(w, "error:", escapeMessage(err.Error()), "(raise --timeout)")
		return
	}
	fmt.Fprintln(w, "error:", escapeMessage(err.Error()))
}

// unsupported turns "the server has no such endpoint" into a clear
// operation failure, leaving other errors as they are.
func unsupported(what string, err error) error {
	var ae *client.Error
	if errors.As(err, &ae) && ae.UnknownEndpoint() {
		return failed("%s: not supported by this server (404: no %s %s endpoint); upgrade the control plane", what, ae.Method, ae.Path)
	}
	return err
}
