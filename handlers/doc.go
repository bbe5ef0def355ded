// Package handlers runs the autopilot's lifecycle hooks: external commands or
// shell scripts configured under "handlers:" in the agent's YAML.
//
// There are five hooks, one per [Phase]: preStart (before the database
// starts), health (periodic local health check), onChange (after every role
// or leader change the node observes), preStop and postStop (around stopping
// the database). Each is configured by a [Spec]; the five together form a
// [Set], which the config loader checks with [Set.Validate].
//
// A [Runner] executes hooks. Every run:
//
//   - runs as the unprivileged OS user [Set.User] (uid, gid, supplementary
//     groups, HOME/USER/LOGNAME), never as root: a run that would be root
//     fails to start with [ErrRunAsRoot];
//   - starts the command (argv, no shell) or the script (/bin/sh -c) in its
//     own process group and, where the host offers one, its own cgroup (a
//     transient systemd scope or a cgroup v2 directory; see [Isolation] and
//     [DetectIsolation]), with the agent's environment (minus its own
//     DBPILOT_* variables and DAPR_API_TOKEN) plus Spec.Env plus the
//     DBPILOT_* variables described at [Env];
//   - is bounded by Spec.Timeout (default 30s, health 5s) and by the caller's
//     context;
//   - leaves nothing behind: when the handler exits (with any status), times
//     out or is cancelled, its whole process group and its cgroup receive
//     SIGKILL, so background children and grandchildren die with the run (a
//     child that calls setsid escapes the group but not the cgroup); output
//     pipes still held open by an escaped process are abandoned after a short
//     wait delay (2s by default);
//   - logs stdout and stderr line by line (fields handler, stream, line; lines
//     are capped at 4 KiB and each stream at 1000 lines or 256 KiB per run,
//     the rest is read and discarded), then one "handler finished" event;
//   - returns a typed [Result] and never panics.
//
// Successful health runs are routine: their output and their "handler
// finished" event are logged at DEBUG. A failing health run logs its output at
// INFO and its result at WARN, like every other failed run. The environment
// and the command line are never logged, since they may carry secrets.
//
// On top of Run, the Runner offers [Runner.CheckHealth], which applies
// Spec.Threshold (consecutive failures before the node counts as unhealthy),
// and an onChange queue ([Runner.StartOnChange], [Runner.NotifyChange],
// [Runner.StopOnChange], [Runner.StopOnChangeWithin]) that runs onChange once
// per observed change, in order, one at a time, without ever blocking the HA
// loop, and whose stop can be bounded so a hanging onChange cannot hold the
// agent's exit.
//
// [Runner.Update] swaps the configuration (SIGHUP reload); runs already in
// progress finish with the spec they started with.
package handlers
