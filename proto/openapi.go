package proto

import _ "embed"

// OpenAPI is the OpenAPI 3 document of the control plane's REST API
// (served at /v1/openapi.json).
//
//go:embed openapi.json
var OpenAPI []byte
