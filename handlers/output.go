package handlers

import (
	"bytes"
	"sync"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Limits on what one run's output may put into the log. The handler's output
// beyond them is still read (so the handler never blocks on a full pipe) but
// discarded.
const (
	// maxLineBytes caps one logged line; the rest of the line is discarded
	// and the event carries truncated=true.
	maxLineBytes = 4 << 10
	// maxStreamLines caps the lines logged per stream per run.
	maxStreamLines = 1000
	// maxStreamBytes caps the bytes logged per stream per run.
	maxStreamBytes = 256 << 10
)

// outputLine is one captured line held back for later logging.
type outputLine struct {
	stream    string
	line      string
	truncated bool
}

// outputSink receives the lines of one run's stdout and stderr and logs them,
// either at once (INFO) or, when buffered, after the run at a level chosen by
// its outcome.
type outputSink struct {
	log      *zap.Logger
	phase    Phase
	buffered bool

	mu      sync.Mutex
	pending []outputLine
}

// emit logs or buffers one line.
func (s *outputSink) emit(l outputLine) {
	if !s.buffered {
		s.write(zapcore.InfoLevel, l)
		return
	}
	s.mu.Lock()
	s.pending = append(s.pending, l)
	s.mu.Unlock()
}

// release logs the buffered lines, if any, at lvl.
func (s *outputSink) release(lvl zapcore.Level) {
	s.mu.Lock()
	pending := s.pending
	s.pending = nil
	s.mu.Unlock()
	for _, l := range pending {
		s.write(lvl, l)
	}
}

// write logs one line at lvl.
func (s *outputSink) write(lvl zapcore.Level, l outputLine) {
	ce := s.log.Check(lvl, "handler output")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("handler", string(s.phase)),
		zap.String("stream", l.stream),
		zap.String("line", l.line),
	}
	if l.truncated {
		fields = append(fields, zap.Bool("truncated", true))
	}
	ce.Write(fields...)
}

// lineWriter is the io.Writer given to exec.Cmd for one stream. It splits the
// stream into lines, caps their length and their total, and hands each line to
// the sink. Write never fails, so the handler is never blocked or killed by
// SIGPIPE on our account.
type lineWriter struct {
	sink   *outputSink
	stream string

	mu        sync.Mutex
	buf       []byte
	skipping  bool  // discarding the rest of an over-long line
	full      bool  // a stream limit was reached; discard everything
	lines     int   // lines emitted
	bytes     int   // bytes emitted
	discarded int64 // bytes read but not emitted
}

// newLineWriter returns the writer for stream ("stdout" or "stderr").
func (s *outputSink) newLineWriter(stream string) *lineWriter {
	return &lineWriter{sink: s, stream: stream}
}

// Write splits p into lines; it always returns len(p), nil.
func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		if w.full {
			w.discarded += int64(len(p))
			break
		}
		chunk, rest, eol := bytes.Cut(p, []byte{'\n'})
		p = rest
		if w.skipping {
			w.discarded += int64(len(chunk))
		} else if room := maxLineBytes - len(w.buf); len(chunk) > room {
			w.buf = append(w.buf, chunk[:room]...)
			w.discarded += int64(len(chunk) - room)
			w.emit(true)
			w.skipping = true
		} else {
			w.buf = append(w.buf, chunk...)
		}
		if eol {
			if !w.skipping {
				w.emit(false)
			}
			w.skipping = false
		}
	}
	return n, nil
}

// flush emits a final line that had no trailing newline. Call it once the
// writer receives no more writes (after exec.Cmd.Wait returns).
func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 && !w.skipping && !w.full {
		w.emit(false)
	}
	w.buf, w.skipping = nil, false
}

// discardedBytes returns how many bytes of output were read but not logged.
func (w *lineWriter) discardedBytes() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.discarded
}

// emit hands the buffered line to the sink and applies the stream limits.
// w.mu must be held.
func (w *lineWriter) emit(truncated bool) {
	line := string(bytes.TrimSuffix(w.buf, []byte{'\r'}))
	w.buf = w.buf[:0]
	w.lines++
	w.bytes += len(line)
	w.sink.emit(outputLine{stream: w.stream, line: line, truncated: truncated})
	if w.lines >= maxStreamLines || w.bytes >= maxStreamBytes {
		w.full = true
	}
}
