// Package daprtest holds the Dapr integration test (build tag dapr, run by
// `make test-dapr`): agents publish through their own daprd sidecar with
// agent/report's DaprTransport, the server receives through its own daprd
// with the go-sdk subscriber, over Redis Streams, while redis-server is
// killed and restarted mid-stream. It has no non-test code.
package daprtest
