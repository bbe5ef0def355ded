package pgmetrics

import "github.com/prometheus/client_golang/prometheus"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(name, help, labels, nil)
}

// Scrape and availability (postgres_exporter names).
var (
	descUp                 = desc("pg_up", "1 when the local PostgreSQL answered this scrape's connection, else 0.")
	descScrapes            = desc("pg_exporter_scrapes_total", "Scrapes of the PostgreSQL metrics since the agent started.")
	descLastScrapeError    = desc("pg_exporter_last_scrape_error", "1 when any part of the last scrape failed (connection, a query group, a filesystem), else 0.")
	descLastScrapeDuration = desc("pg_exporter_last_scrape_duration_seconds", "Wall-clock duration of the last scrape, in seconds.")
	descCollectorSuccess   = desc("pg_scrape_collector_success", "1 when the query group succeeded in this scrape, else 0 (its metrics are then absent).", "collector")
	descCollectorDuration  = desc("pg_scrape_collector_duration_seconds", "Duration of the query group in this scrape, in seconds.", "collector")
)

// pg_stat_database (postgres_exporter names and labels).
var (
	dbLabels          = []string{"datid", "datname"}
	descDBNumbackends = desc("pg_stat_database_numbackends", "Backends currently connected to the database.", dbLabels...)
	descDBCounters    = []struct {
		col string
		d   *prometheus.Desc
	}{
		{"xact_commit", desc("pg_stat_database_xact_commit", "Transactions committed in the database.", dbLabels...)},
		{"xact_rollback", desc("pg_stat_database_xact_rollback", "Transactions rolled back in the database.", dbLabels...)},
		{"blks_read", desc("pg_stat_database_blks_read", "Disk blocks read in the database.", dbLabels...)},
		{"blks_hit", desc("pg_stat_database_blks_hit", "Disk blocks found in the buffer cache.", dbLabels...)},
		{"tup_returned", desc("pg_stat_database_tup_returned", "Rows returned by queries in the database.", dbLabels...)},
		{"tup_fetched", desc("pg_stat_database_tup_fetched", "Rows fetched by queries in the database.", dbLabels...)},
		{"tup_inserted", desc("pg_stat_database_tup_inserted", "Rows inserted in the database.", dbLabels...)},
		{"tup_updated", desc("pg_stat_database_tup_updated", "Rows updated in the database.", dbLabels...)},
		{"tup_deleted", desc("pg_stat_database_tup_deleted", "Rows deleted in the database.", dbLabels...)},
		{"conflicts", desc("pg_stat_database_conflicts", "Queries cancelled by recovery conflicts (replicas only).", dbLabels...)},
		{"temp_files", desc("pg_stat_database_temp_files", "Temporary files created by queries.", dbLabels...)},
		{"temp_bytes", desc("pg_stat_database_temp_bytes", "Data written to temporary files by queries, in bytes.", dbLabels...)},
		{"deadlocks", desc("pg_stat_database_deadlocks", "Deadlocks detected in the database.", dbLabels...)},
		{"blk_read_time", desc("pg_stat_database_blk_read_time", "Time spent reading data file blocks, in milliseconds (0 unless track_io_timing).", dbLabels...)},
		{"blk_write_time", desc("pg_stat_database_blk_write_time", "Time spent writing data file blocks, in milliseconds (0 unless track_io_timing).", dbLabels...)},
	}
	descDBSize = desc("pg_database_size_bytes", "Disk space used by the database, in bytes.", "datname")
)

// pg_stat_activity and pg_locks.
var (
	descActivityCount  = desc("pg_stat_activity_count", "Backends by database and state.", "datname", "state")
	descActivityMaxTx  = desc("pg_stat_activity_max_tx_duration", "Age of the longest running transaction by database and state, in seconds.", "datname", "state")
	descOldestXminAge  = desc("pg_stat_activity_oldest_xmin_age_xids", "Age of the oldest backend xmin (what holds back vacuum), in transactions; 0 if none.")
	descOldestXminSecs = desc("pg_stat_activity_oldest_xmin_age_seconds", "Age of the transaction of the backend holding the oldest xmin, in seconds; 0 if none.")
	descLocksCount     = desc("pg_locks_count", "Locks held or awaited, by database and mode.", "datname", "mode")
	descLocksWaiting   = desc("pg_locks_waiting_count", "Locks awaited (not granted) on the server.")
)

// Replication, WAL and recovery.
var (
	replLabels             = []string{"application_name", "client_addr", "state", "sync_state"}
	descWALLSN             = desc("pg_wal_lsn_bytes", "WAL position as bytes since 0/0: pg_current_wal_lsn() on a primary, pg_last_wal_replay_lsn() on a replica.")
	descIsReplica          = desc("pg_replication_is_replica", "1 when the server is in recovery (a replica), else 0.")
	descReplicaLag         = desc("pg_replication_lag_seconds", "On a replica, seconds since the last replayed transaction when replay is behind what was received, else 0; 0 on a primary.")
	descReplicaReplayBytes = desc("pg_replication_replay_lag_bytes", "On a replica, WAL received but not yet replayed, in bytes; 0 on a primary.")
	descReplCurrentLSN     = desc("pg_stat_replication_pg_current_wal_lsn_bytes", "On a primary, its current WAL position as bytes since 0/0, per connected standby.", replLabels...)
	descReplLSNDiff        = desc("pg_stat_replication_pg_wal_lsn_diff", "On a primary, WAL not yet replayed by the standby, in bytes.", replLabels...)
	descReplLagBytes       = map[string]*prometheus.Desc{
		"write":  desc("pg_stat_replication_write_lag_bytes", "On a primary, WAL not yet written by the standby, in bytes.", replLabels...),
		"flush":  desc("pg_stat_replication_flush_lag_bytes", "On a primary, WAL not yet flushed by the standby, in bytes.", replLabels...),
		"replay": desc("pg_stat_replication_replay_lag_bytes", "On a primary, WAL not yet replayed by the standby, in bytes.", replLabels...),
	}
	descReplLagSeconds = map[string]*prometheus.Desc{
		"write":  desc("pg_stat_replication_write_lag_seconds", "On a primary, write_lag of pg_stat_replication in seconds (0 when the standby is caught up).", replLabels...),
		"flush":  desc("pg_stat_replication_flush_lag_seconds", "On a primary, flush_lag of pg_stat_replication in seconds (0 when the standby is caught up).", replLabels...),
		"replay": desc("pg_stat_replication_replay_lag_seconds", "On a primary, replay_lag of pg_stat_replication in seconds (0 when the standby is caught up).", replLabels...),
	}
	walrLabels          = []string{"upstream_host", "slot_name", "status"}
	descWALRStreaming   = desc("pg_stat_wal_receiver_streaming", "On a replica, 1 when its WAL receiver is streaming, else 0; 0 on a primary.")
	descWALRFlushedLSN  = desc("pg_stat_wal_receiver_flushed_lsn", "WAL received and flushed by the WAL receiver, as bytes since 0/0.", walrLabels...)
	descWALRLatestEnd   = desc("pg_stat_wal_receiver_latest_end_lsn", "Last WAL position reported back to the upstream, as bytes since 0/0.", walrLabels...)
	descWALRReceivedTLI = desc("pg_stat_wal_receiver_received_tli", "Timeline of the last WAL received and flushed.", walrLabels...)
	descWALRLastMsg     = desc("pg_stat_wal_receiver_last_msg_receipt_time", "Time the last message from the upstream was received, in Unix seconds.", walrLabels...)
)

// pg_stat_bgwriter (pg_stat_checkpointer from PostgreSQL 17) and
// pg_stat_archiver, postgres_exporter names.
var (
	bgwCols = []struct {
		key string
		d   *prometheus.Desc
	}{
		{"checkpoints_timed", desc("pg_stat_bgwriter_checkpoints_timed_total", "Scheduled checkpoints performed.")},
		{"checkpoints_req", desc("pg_stat_bgwriter_checkpoints_req_total", "Requested checkpoints performed.")},
		{"checkpoint_write_time", desc("pg_stat_bgwriter_checkpoint_write_time_total", "Time spent writing checkpoint files to disk, in milliseconds.")},
		{"checkpoint_sync_time", desc("pg_stat_bgwriter_checkpoint_sync_time_total", "Time spent syncing checkpoint files to disk, in milliseconds.")},
		{"buffers_checkpoint", desc("pg_stat_bgwriter_buffers_checkpoint_total", "Buffers written during checkpoints.")},
		{"buffers_clean", desc("pg_stat_bgwriter_buffers_clean_total", "Buffers written by the background writer.")},
		{"maxwritten_clean", desc("pg_stat_bgwriter_maxwritten_clean_total", "Times the background writer stopped a cleaning scan for writing too many buffers.")},
		{"buffers_backend", desc("pg_stat_bgwriter_buffers_backend_total", "Buffers written directly by a backend (absent from PostgreSQL 17).")},
		{"buffers_backend_fsync", desc("pg_stat_bgwriter_buffers_backend_fsync_total", "Times a backend had to fsync itself (absent from PostgreSQL 17).")},
		{"buffers_alloc", desc("pg_stat_bgwriter_buffers_alloc_total", "Buffers allocated.")},
	}
	descArchived       = desc("pg_stat_archiver_archived_count", "WAL files successfully archived.")
	descArchiveFailed  = desc("pg_stat_archiver_failed_count", "Failed attempts to archive WAL files.")
	descLastArchiveAge = desc("pg_stat_archiver_last_archive_age", "Seconds since the last WAL file was archived; absent if none ever was.")
)

// pg_stat_statements (postgres_exporter names and labels), the top
// [TopStatements] by total execution time.
var (
	stmtLabels            = []string{"user", "datname", "queryid"}
	descStatementsEnabled = desc("pg_stat_statements_enabled", "1 when pg_stat_statements is created in database postgres and readable, else 0.")
	descStmtCalls         = desc("pg_stat_statements_calls_total", "Times the statement was executed.", stmtLabels...)
	descStmtSeconds       = desc("pg_stat_statements_seconds_total", "Total execution time of the statement, in seconds.", stmtLabels...)
	descStmtRows          = desc("pg_stat_statements_rows_total", "Rows retrieved or affected by the statement.", stmtLabels...)
)

// Host: the filesystems of the data and WAL directories (dbpilot names).
var (
	fsLabels          = []string{"kind", "path"}
	descFSSize        = desc("dbpilot_filesystem_size_bytes", "Size of the filesystem holding the directory, in bytes (kind: data or wal).", fsLabels...)
	descFSAvail       = desc("dbpilot_filesystem_avail_bytes", "Space available to unprivileged users on the filesystem, in bytes.", fsLabels...)
	descFSUsed        = desc("dbpilot_filesystem_used_bytes", "Space used on the filesystem, in bytes.", fsLabels...)
	descFSUsedPercent = desc("dbpilot_filesystem_used_percent", "Used space as df shows it: used / (used + available), in percent.", fsLabels...)
)

func allDescs() []*prometheus.Desc {
	ds := []*prometheus.Desc{
		descUp, descScrapes, descLastScrapeError, descLastScrapeDuration, descCollectorSuccess, descCollectorDuration,
		descDBNumbackends, descDBSize,
		descActivityCount, descActivityMaxTx, descOldestXminAge, descOldestXminSecs, descLocksCount, descLocksWaiting,
		descWALLSN, descIsReplica, descReplicaLag, descReplicaReplayBytes, descReplCurrentLSN, descReplLSNDiff,
		descWALRStreaming, descWALRFlushedLSN, descWALRLatestEnd, descWALRReceivedTLI, descWALRLastMsg,
		descArchived, descArchiveFailed, descLastArchiveAge,
		descStatementsEnabled, descStmtCalls, descStmtSeconds, descStmtRows,
		descFSSize, descFSAvail, descFSUsed, descFSUsedPercent,
	}
	for _, c := range descDBCounters {
		ds = append(ds, c.d)
	}
	for _, k := range []string{"write", "flush", "replay"} {
		ds = append(ds, descReplLagBytes[k], descReplLagSeconds[k])
	}
	for _, c := range bgwCols {
		ds = append(ds, c.d)
	}
	return ds
}
