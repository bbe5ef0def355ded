package controlplane

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
)

// newID returns prefix-<16 random hex digits>.
func newID(prefix string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// strictJSON decodes exactly one JSON value with no unknown fields.
func strictJSON(b []byte, out any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

// IngestKey derives the key a cluster's agents present when posting
// events: HMAC-SHA256(secret, cluster id). Nothing per cluster is stored,
// and a restarted server recomputes the same key.
func IngestKey(secret []byte, clusterID string) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(clusterID))
	return hex.EncodeToString(m.Sum(nil))
}

// HashSecret is the SHA-256 (hex) under which tokens are stored.
func HashSecret(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// NewSecret returns prefix + 32 random bytes in hex.
func NewSecret(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
