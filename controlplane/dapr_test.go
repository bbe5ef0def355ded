package controlplane

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zaptest"
)

// TestDaprSubscriberMediaTypes: the subscription route takes what daprd
// delivers (application/cloudevents+json for one message, application/json
// for bulk) and refuses anything else with 415 before the handler runs.
func TestDaprSubscriberMediaTypes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := NewDaprSubscriber(addr, "pubsub", zaptest.NewLogger(t))
	var calls atomic.Int32
	if err := s.Subscribe(TopicAgentEvents, func(context.Context, []byte) error { calls.Add(1); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	body := `{"specversion":"1.0","id":"x","source":"s","type":"t","datacontenttype":"application/json","data":{}}`
	for ct, want := range map[string]int{
		"application/cloudevents+json":                http.StatusOK,
		"application/cloudevents+json; charset=utf-8": http.StatusOK,
		"text/plain":                        http.StatusUnsupportedMediaType,
		"application/x-www-form-urlencoded": http.StatusUnsupportedMediaType,
		"":                                  http.StatusUnsupportedMediaType,
	} {
		before := calls.Load()
		resp, err := http.Post("http://"+addr+"/events/"+TopicAgentEvents, ct, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Content-Type %q: %d, want %d", ct, resp.StatusCode, want)
		}
		if ran := calls.Load() > before; ran != (want == http.StatusOK) {
			t.Errorf("Content-Type %q: handler ran %t", ct, ran)
		}
	}
}
