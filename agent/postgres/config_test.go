package postgres

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// validConfig returns a valid Config whose BinDir holds a placeholder
// postgres file, so validation tests run without PostgreSQL installed.
func validConfig(t *testing.T) Config {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "postgres"), nil, 0o755); err != nil {
		t.Fatal(err)
	}
	return Config{
		NodeName:      "n1",
		BinDir:        bin,
		DataDir:       "/var/lib/dbpilot/data",
		ListenAddress: "127.0.0.1",
		Port:          5432,
		OSUser:        "postgres",
		Superuser:     Credentials{"dbpilot", "s3cret"},
		Replication:   Credentials{"replicator", "r3pl"},
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; "" means valid
	}{
		{"valid", func(*Config) {}, ""},
		{"node name empty", func(c *Config) { c.NodeName = "" }, "NodeName"},
		{"node name quote", func(c *Config) { c.NodeName = `n"1` }, "NodeName"},
		{"node name too long", func(c *Config) { c.NodeName = strings.Repeat("n", 64) }, "NodeName"},
		{"relative data dir", func(c *Config) { c.DataDir = "data" }, "DataDir"},
		{"root data dir", func(c *Config) { c.DataDir = "/" }, "DataDir"},
		{"bad bin dir", func(c *Config) { c.BinDir = "/nonexistent" }, "BinDir"},
		{"port", func(c *Config) { c.Port = 0 }, "Port"},
		{"listen quote", func(c *Config) { c.ListenAddress = "'*'" }, "ListenAddress"},
		{"no superuser password", func(c *Config) { c.Superuser.Password = "" }, "Superuser.Password"},
		{"newline in password", func(c *Config) { c.Replication.Password = "a\nb" }, "Replication.Password"},
		{"same user other password", func(c *Config) { c.Replication = Credentials{"dbpilot", "x"} }, "Replication"},
		{"same user same password", func(c *Config) { c.Replication = c.Superuser }, ""},
		{"managed parameter", func(c *Config) { c.Parameters = map[string]string{"Port": "1"} }, "managed"},
		{"include", func(c *Config) { c.Parameters = map[string]string{"include": "x"} }, "managed"},
		{"bad parameter name", func(c *Config) { c.Parameters = map[string]string{"a b": "1"} }, "not a valid"},
		{"minimal wal", func(c *Config) { c.Parameters = map[string]string{"wal_level": "minimal"} }, "wal_level"},
		{"extension parameter", func(c *Config) { c.Parameters = map[string]string{"pg_stat_statements.max": "100"} }, ""},
		{"relative log file", func(c *Config) { c.LogFile = "pg.log" }, "LogFile"},
		{"hba newline", func(c *Config) { c.HBA = []string{"host all all 10.0.0.0/8 scram-sha-256\nlocal all all trust"} }, "HBA[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig(t)
			tt.mutate(&c)
			err := c.validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigValidateJoinsErrors(t *testing.T) {
	err := Config{}.validate()
	if err == nil {
		t.Fatal("validate(Config{}) = nil")
	}
	for _, field := range []string{"NodeName", "BinDir", "DataDir", "ListenAddress", "Port", "Superuser.Username", "Replication.Password"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error %q does not mention %s", err, field)
		}
	}
}

func TestQuoting(t *testing.T) {
	tests := []struct{ fn, in, want string }{
		{"conf", "plain", `'plain'`},
		{"conf", `it's`, `'it''s'`},
		{"conf", `a\b`, `'a\\b'`},
		{"conf", "", `''`},
		{"conninfo", `p'w\x y`, `'p\'w\\x y'`},
		{"literal", `it's \n`, `E'it''s \\n'`},
	}
	for _, tt := range tests {
		var got string
		switch tt.fn {
		case "conf":
			got = quoteConf(tt.in)
		case "conninfo":
			got = quoteConninfo(tt.in)
		case "literal":
			got = quoteLiteral(tt.in)
		}
		if got != tt.want {
			t.Errorf("quote %s(%q) = %s, want %s", tt.fn, tt.in, got, tt.want)
		}
	}
	if got := passfileLine(`u:1`, `p\:w`); got != `*:*:*:u\:1:p\\\:w`+"\n" {
		t.Errorf("passfileLine = %q", got)
	}
}

func TestSynchronousStandbyNames(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{}, ""},
		{[]string{"n2"}, `ANY 1 ("n2")`},
		{[]string{"n2", "Node-3"}, `ANY 1 ("n2","Node-3")`},
		{[]string{`we"ird`}, `ANY 1 ("we""ird")`},
	}
	for _, tt := range tests {
		if got := SynchronousStandbyNames(tt.in); got != tt.want {
			t.Errorf("SynchronousStandbyNames(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRenderPostgresqlConf(t *testing.T) {
	c := validConfig(t)
	c.Parameters = map[string]string{"shared_buffers": "64MB", "work_mem": "4MB"}
	c.Replication.Password = `r'p\w`
	c = c.withDefaults()

	conninfo := c.primaryConninfo(Upstream{Host: "10.0.0.2", Port: 5433, Name: "n2"})
	replica := renderPostgresqlConf(c, RoleReplica, conninfo, []string{"n3"}, nil)
	for _, want := range []string{
		"listen_addresses = '127.0.0.1'\n",
		"port = '5432'\n",
		"cluster_name = 'n1'\n",
		"hot_standby = 'on'\n",
		"unix_socket_directories = ''\n",
		"wal_level = 'replica'\n",
		"shared_buffers = '64MB'\n", // overridden
		"max_connections = '50'\n",  // default
		"work_mem = '4MB'\n",        // extra
		`primary_conninfo = 'host=''10.0.0.2'' port=5433 user=''replicator'' password=''r\\''p\\\\w'' application_name=''n1'''` + "\n",
		"recovery_target_timeline = 'latest'\n",
		`synchronous_standby_names = 'ANY 1 ("n3")'` + "\n", // ready for promotion
	} {
		if !strings.Contains(replica, want) {
			t.Errorf("replica conf lacks %q:\n%s", want, replica)
		}
	}
	if noUp := renderPostgresqlConf(c, RoleReplica, "", nil, nil); strings.Contains(noUp, "primary_conninfo") ||
		!strings.Contains(noUp, "synchronous_standby_names = ''\n") {
		t.Errorf("replica conf without upstream:\n%s", noUp)
	}
	if strings.Count(replica, "shared_buffers") != 1 {
		t.Errorf("shared_buffers rendered more than once:\n%s", replica)
	}

	primary := renderPostgresqlConf(c, RolePrimary, conninfo, []string{"n2", "n3"}, nil)
	if !strings.Contains(primary, `synchronous_standby_names = 'ANY 1 ("n2","n3")'`+"\n") {
		t.Errorf("primary conf lacks synchronous_standby_names:\n%s", primary)
	}
	if strings.Contains(primary, "primary_conninfo") {
		t.Errorf("primary conf sets primary_conninfo:\n%s", primary)
	}
}

func TestRenderHBA(t *testing.T) {
	c := validConfig(t)
	c.HBA = []string{"host all all 10.1.0.0/16 reject"}
	hba := renderHBA(c)
	loop := strings.Index(hba, "127.0.0.1/32")
	extra := strings.Index(hba, "10.1.0.0/16 reject")
	catch := strings.Index(hba, "0.0.0.0/0")
	if loop < 0 || extra < 0 || catch < 0 || !(loop < extra && extra < catch) {
		t.Errorf("want loopback < Config.HBA < catch-all, got:\n%s", hba)
	}
	if strings.Contains(hba, "trust") {
		t.Errorf("pg_hba.conf must not trust anyone:\n%s", hba)
	}
}

func TestParseControlData(t *testing.T) {
	const out = `pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7710718597291464777
Database cluster state:               shut down in recovery
pg_control last modified:             Sat Nov 21 20:06:14 2026
Latest checkpoint location:           0/5000098
Latest checkpoint's REDO location:    0/5000060
Latest checkpoint's REDO WAL file:    000000020000000000000005
Latest checkpoint's TimeLineID:       2
Latest checkpoint's PrevTimeLineID:   2
Latest checkpoint's oldestCommitTsXid:0
Minimum recovery ending location:     0/50001A0
Min recovery ending loc's timeline:   2
Data page checksum version:           1
`
	cd, err := ParseControlData(out)
	if err != nil {
		t.Fatal(err)
	}
	want := ControlData{
		SystemIdentifier:       "7710718597291464777",
		ClusterState:           "shut down in recovery",
		Timeline:               2,
		CheckpointLSN:          0x5000098,
		RedoLSN:                0x5000060,
		MinRecoveryEndLSN:      0x50001A0,
		MinRecoveryEndTimeline: 2,
	}
	got := cd
	got.Fields = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseControlData = %+v, want %+v", got, want)
	}
	if v := cd.Fields["pg_control last modified"]; v != "Sat Nov 21 20:06:14 2026" {
		t.Errorf("Fields[pg_control last modified] = %q", v)
	}
	if v := cd.Fields["Latest checkpoint's oldestCommitTsXid"]; v != "0" {
		t.Errorf("Fields[oldestCommitTsXid] = %q", v)
	}

	if _, err := ParseControlData("Database system identifier: 1\n"); err == nil {
		t.Error("ParseControlData of truncated output: want error")
	}
	bad := strings.Replace(out, "0/5000098", "zz", 1)
	if _, err := ParseControlData(bad); err == nil || !strings.Contains(err.Error(), "Latest checkpoint location") {
		t.Errorf("ParseControlData with bad LSN: got %v", err)
	}
}

func TestCheckParameters(t *testing.T) {
	got := CheckParameters(map[string]string{
		"shared_buffers": "1GB", "Cluster_Name": "x", "work_mem": "4MB\n", "a-b": "1",
		"max_replication_slots": "0", "Work_Mem": "8MB", "pg_stat_statements.max": "100",
	})
	want := []ParameterProblem{
		{Name: "Cluster_Name", Managed: true, Msg: "is managed by the agent and cannot be set"},
		{Name: "a-b", Msg: "not a valid parameter name"},
		{Name: "max_replication_slots", Msg: "must be at least 1"},
		{Name: "work_mem", Msg: "value contains control characters"},
		{Name: "work_mem", Msg: `duplicates "Work_Mem"`},
	}
	if len(got) != len(want) {
		t.Fatalf("CheckParameters = %+v, want %d problems", got, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.Name || g.Managed != w.Managed || !strings.Contains(g.Msg, w.Msg) {
			t.Errorf("problem %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestRenderPreloadLibraries(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params map[string]string
		libs   []string
		want   string
	}{
		{"none configured", nil, []string{"pg_stat_statements"}, "shared_preload_libraries = 'pg_stat_statements'\n"},
		{"user libraries kept first", map[string]string{"shared_preload_libraries": "auto_explain, pg_cron"}, []string{"pg_stat_statements"},
			"shared_preload_libraries = 'auto_explain,pg_cron,pg_stat_statements'\n"},
		{"already listed", map[string]string{"shared_preload_libraries": "pg_stat_statements,auto_explain"}, []string{"pg_stat_statements"},
			"shared_preload_libraries = 'pg_stat_statements,auto_explain'\n"},
		{"other letter case of the name", map[string]string{"Shared_Preload_Libraries": "auto_explain"}, []string{"pg_stat_statements"},
			"shared_preload_libraries = 'auto_explain,pg_stat_statements'\n"},
		{"nothing to add", map[string]string{"shared_preload_libraries": "auto_explain"}, nil, "shared_preload_libraries = 'auto_explain'\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig(t)
			c.Parameters, c.PreloadLibraries = tc.params, tc.libs
			conf := renderPostgresqlConf(c.withDefaults(), RolePrimary, "", nil, nil)
			if !strings.Contains(conf, tc.want) || strings.Count(strings.ToLower(conf), "shared_preload_libraries") != 1 {
				t.Errorf("want one line %q in:\n%s", tc.want, conf)
			}
		})
	}
	if !LibraryInstalled("/usr/lib/postgresql/15/bin", "pg_stat_statements") {
		t.Errorf("LibraryInstalled: pg_stat_statements not found next to /usr/lib/postgresql/15/bin (postgresql-contrib is part of the test environment)")
	}
	if LibraryInstalled("/usr/lib/postgresql/15/bin", "no_such_library") {
		t.Errorf("LibraryInstalled reports a library that does not exist")
	}
}
