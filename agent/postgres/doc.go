// Package postgres is dbpilot's adapter for the local PostgreSQL instance.
//
// An [Instance] manages exactly one data directory: it initialises it
// (initdb), clones it from a primary (pg_basebackup), rewinds it after a
// failover (pg_rewind), starts and stops the postmaster, promotes it, points
// it at a new primary and reports its replication state. It does not decide
// anything: the HA loop in package agent decides, this package converges the
// local database to what was decided.
//
// # Configuration is owned by the agent
//
// postgresql.conf and pg_hba.conf are rendered in full from [Config] before
// every start and whenever [Instance.Follow] or
// [Instance.SetSynchronousStandbys] changes them; manual edits are
// overwritten. postgresql.auto.conf is reset to empty on every render, so
// ALTER SYSTEM is not supported: a setting made with it lasts at most until
// the next render. Put extra settings in [Config.Parameters] instead.
//
// # Process model and fencing
//
// [Instance.Start] runs `postgres -D <data dir>` directly as a child of the
// agent (not via pg_ctl, which daemonizes). The child stays in the agent's
// process group and is started with the Linux parent-death signal set to
// SIGKILL (prctl PR_SET_PDEATHSIG), so PostgreSQL cannot outlive the agent:
// if the agent dies, is OOM-killed or its process group is SIGKILLed, the
// postmaster is killed too and its backends exit when they notice the
// postmaster is gone. This is the fencing guarantee the HA loop relies on:
// a primary never keeps accepting writes after the agent that holds (or held)
// the leader lease is gone.
//
// # Replication slots
//
// A replica streams through a physical replication slot named after its
// node ([SlotName]; primary_slot_name), which it creates on its upstream
// before it clones, starts or is re-pointed. The primary's agent keeps the
// slots of all members with [Instance.ReplicationSlots] and
// [Instance.ApplySlots]; max_slot_wal_keep_size (1GB by default) bounds
// the WAL they retain. Only slots named with [SlotPrefix] are touched.
//
// # Running as root
//
// PostgreSQL refuses to run as root. When the agent's effective uid is 0,
// every PostgreSQL program (initdb, postgres, pg_basebackup, pg_rewind,
// pg_controldata) is executed as [Config.OSUser], and every file the agent
// creates for PostgreSQL is owned by that user. When the agent is not root,
// the programs run as the agent's own user.
//
// # Secrets
//
// Passwords never appear in argv or in logs. They are handed to PostgreSQL
// programs through temporary 0600 files owned by the OS user (initdb
// --pwfile, PGPASSFILE), removed afterwards. The replication password is
// part of primary_conninfo in postgresql.conf, which is mode 0600.
package postgres
