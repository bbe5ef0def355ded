package main

import (
	"net"
	"net/http"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// pprofEnv names the environment variable that, when set to host:port,
// makes `dbpilot-agent run` serve Go profiles there (off by default: they
// expose internals; bind it to loopback):
//
//	/debug/pprof/profile?seconds=N  CPU profile over N seconds (default 30, at most 600)
//	/debug/pprof/{heap,allocs,goroutine,...}  the runtime/pprof profile of that name
//
// Read them with `go tool pprof`. runtime/pprof is used directly rather
// than net/http/pprof, whose init registers its handlers on
// http.DefaultServeMux in every process.
const pprofEnv = "DBPILOT_AGENT_PPROF"

// startPprof serves the profiles on addr until the process exits. A
// listen failure is logged and the agent runs on without it.
func startPprof(addr string, log *zap.Logger) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Error("pprof listener not started; set "+pprofEnv+" to a free host:port", zap.String("address", addr), zap.Error(err))
		return
	}
	srv := &http.Server{Handler: http.HandlerFunc(servePprof), ReadHeaderTimeout: 5 * time.Second}
	log.Warn("serving Go profiles ("+pprofEnv+"); for diagnosis only", zap.String("address", ln.Addr().String()))
	go func() { _ = srv.Serve(ln) }()
}

func servePprof(w http.ResponseWriter, r *http.Request) {
	name, ok := strings.CutPrefix(r.URL.Path, "/debug/pprof/")
	if !ok || name == "" {
		http.Error(w, "GET /debug/pprof/profile?seconds=N or /debug/pprof/{heap,allocs,goroutine,threadcreate,block,mutex}", http.StatusNotFound)
		return
	}
	if name != "profile" {
		p := pprof.Lookup(name)
		if p == nil {
			http.Error(w, "unknown profile "+strconv.Quote(name), http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		_ = p.WriteTo(w, 0)
		return
	}
	secs, err := strconv.Atoi(r.URL.Query().Get("seconds"))
	if err != nil || secs <= 0 {
		secs = 30
	}
	secs = min(secs, 600)
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := pprof.StartCPUProfile(w); err != nil {
		http.Error(w, "cpu profile: "+err.Error(), http.StatusConflict)
		return
	}
	select {
	case <-time.After(time.Duration(secs) * time.Second):
	case <-r.Context().Done():
	}
	pprof.StopCPUProfile()
}
