package backup

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of the host key in bytes (AES-256).
const KeySize = 32

// Sources of the host key, in the order LoadKey tries them.
const (
	// EnvKey holds the key as 64 hex digits or standard base64.
	EnvKey = "DBPILOT_BACKUP_KEY"
	// CredentialName is the systemd credential (LoadCredential=) holding the
	// key, read from $CREDENTIALS_DIRECTORY/dbpilot-backup-key.
	CredentialName = "dbpilot-backup-key"
)

// ErrKeyMismatch is returned by Open (a sealed secret) when the host key is
// not the one the secret was sealed with, or the secret was tampered with.
var ErrKeyMismatch = errors.New("secret cannot be decrypted with this host key")

// Sealer encrypts and decrypts secrets with AES-256-GCM under the host key.
// The key never leaves it; Sealer has no String method that could print it.
type Sealer struct{ aead cipher.AEAD }

// LoadKey returns the Sealer for the host key, taken from (first found):
// the environment variable EnvKey, the systemd credential CredentialName,
// or keyFile, which is created with 32 random bytes and mode 0600 on first
// use. An existing keyFile readable by group or others is refused.
// Errors name the source but never include key material.
func LoadKey(keyFile string) (*Sealer, error) {
	if v := os.Getenv(EnvKey); v != "" {
		k, err := decodeKey(v)
		if err != nil {
			return nil, fmt.Errorf("host key from %s: %w", EnvKey, err)
		}
		return newSealer(k)
	}
	if dir := os.Getenv("CREDENTIALS_DIRECTORY"); dir != "" {
		if b, err := os.ReadFile(filepath.Join(dir, CredentialName)); err == nil {
			k, err := decodeKey(strings.TrimSpace(string(b)))
			if err != nil && len(b) == KeySize {
				k, err = b, nil
			}
			if err != nil {
				return nil, fmt.Errorf("host key from systemd credential %s: %w", CredentialName, err)
			}
			return newSealer(k)
		}
	}
	if keyFile == "" {
		return nil, errors.New("host key: no key file configured")
	}
	b, err := os.ReadFile(keyFile)
	if errors.Is(err, os.ErrNotExist) {
		return createKeyFile(keyFile)
	}
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", keyFile, err)
	}
	st, err := os.Stat(keyFile)
	if err != nil {
		return nil, fmt.Errorf("host key %s: %w", keyFile, err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("host key %s has mode %04o; chmod 600 it", keyFile, st.Mode().Perm())
	}
	if len(b) != KeySize {
		return nil, fmt.Errorf("host key %s: want %d bytes, file has %d", keyFile, KeySize, len(b))
	}
	return newSealer(b)
}

func createKeyFile(path string) (*Sealer, error) {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("create host key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create host key %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return LoadKey(path) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("create host key %s: %w", path, err)
	}
	_, werr := f.Write(k)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("create host key %s: %w", path, err)
	}
	return newSealer(k)
}

func decodeKey(v string) ([]byte, error) {
	if b, err := hex.DecodeString(v); err == nil && len(b) == KeySize {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(v); err == nil && len(b) == KeySize {
		return b, nil
	}
	return nil, fmt.Errorf("want %d bytes as hex or base64", KeySize)
}

func newSealer(key []byte) (*Sealer, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// Seal encrypts plaintext; name is authenticated as additional data so a
// sealed value cannot be moved to another secret's name. The result is
// nonce || ciphertext || tag.
func (s *Sealer) Seal(name string, plaintext []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal %s: %w", name, err)
	}
	return s.aead.Seal(nonce, nonce, plaintext, []byte(name)), nil
}

// Open decrypts a value sealed under name. Errors: ErrKeyMismatch.
func (s *Sealer) Open(name string, sealed []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, fmt.Errorf("open secret %s: %w", name, ErrKeyMismatch)
	}
	pt, err := s.aead.Open(nil, sealed[:n], sealed[n:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("open secret %s: %w", name, ErrKeyMismatch)
	}
	return pt, nil
}
