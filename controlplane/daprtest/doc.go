// Package daprtest holds the Dapr integration test (build tag dapr, run by
// `make test-dapr`): agents publish through their own daprd sidecar with
// agent/report's DaprTransport, the server receives through its own daprd
// with the go-sdk subscriber, over Redis Streams, while redis-server is
// killed and restarted mid-stream; operations requested through the API
// reach the workflow engine over the control plane's own topic through the
// same sidecar, and malformed control-plane events are dropped. It has no
// non-test code.
package daprtest
